// Writing torch.save files (Node only): the bytes from torch.ts, written crash-safely.
import { writeFileAtomic } from '../util/atomic.ts';
import { serialiseTorchObject, serialiseTorchStateDict, torchArchiveName, type TorchTensorOut } from './torch.ts';

/**
 * Writes a state dict as torch.save would (zip, archive folder named after the file), atomically.
 * Float32Array -> FloatStorage, BigInt64Array -> LongStorage.
 */
export function writeTorchStateDict(file: string, tensors: Map<string, TorchTensorOut>): void {
  writeFileAtomic(file, serialiseTorchStateDict(tensors, torchArchiveName(file)));
}

/** Writes any value as torch.save would (see serialiseTorchObject), atomically. */
export function writeTorchObject(file: string, value: unknown): void {
  writeFileAtomic(file, serialiseTorchObject(value, torchArchiveName(file)));
}
