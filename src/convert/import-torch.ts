// insightface `.pth` -> tfjs backbone: read the torch file, work out (or take) the network, build it,
// fill its weights. Every failure names the file.
import type * as tf from '@tensorflow/tfjs';
import { parseTorchStateDict, readTorchStateDict, TorchFormatError } from '../formats/torch.ts';
import { buildBackbone, resolveSpec, type BackboneSpec } from '../models/factory.ts';
import { ArcfaceError } from '../errors.ts';
import { inferSpec } from './infer-spec.ts';
import { loadStateDict } from './torch-mapping.ts';

export interface ImportTorchOptions {
  /** Network name; inferred from the checkpoint when omitted. */
  network?: string;
  embeddingSize?: number;
  inputSize?: number;
  /** Names bytes in error messages. */
  label?: string;
}

/** A backbone from a torch.save file (path) or its bytes (names `opts.label` in errors). */
export function importTorch(fileOrBytes: string | Uint8Array, opts: ImportTorchOptions = {}): { model: tf.LayersModel; spec: BackboneSpec } {
  const file = typeof fileOrBytes === 'string' ? fileOrBytes : (opts.label ?? '<torch bytes>');
  let sd;
  try {
    sd = typeof fileOrBytes === 'string' ? readTorchStateDict(fileOrBytes) : parseTorchStateDict(fileOrBytes, file);
  } catch (e) {
    if (e instanceof TorchFormatError) throw new ArcfaceError(e.message);
    throw e;
  }
  let spec: BackboneSpec;
  try {
    const inferred = opts.network ? undefined : inferSpec(sd);
    spec = resolveSpec(
      inferred ?? {
        network: opts.network!,
        // An explicit network still takes its head sizes from the file unless told otherwise.
        embeddingSize: opts.embeddingSize ?? sd.get('fc.weight')?.shape[0] ?? sd.get('features.layers.2.weight')?.shape[0],
        inputSize: opts.inputSize,
      },
    );
    if (inferred && opts.embeddingSize !== undefined && opts.embeddingSize !== spec.embeddingSize) {
      throw new Error(`the \`embeddingSize\` option (${opts.embeddingSize}) does not match the checkpoint's ${spec.embeddingSize}`);
    }
  } catch (e) {
    throw new ArcfaceError((e as Error).message, file);
  }
  let model: tf.LayersModel;
  try {
    model = buildBackbone(spec);
  } catch (e) {
    throw new ArcfaceError(`cannot build ${spec.network} from it: ${(e as Error).message}`, file);
  }
  try {
    loadStateDict(model, sd);
  } catch (e) {
    model.dispose();
    let hint = '';
    if (opts.network) {
      try {
        const found = inferSpec(sd);
        const layout = found.layers ? ` with layers [${found.layers}]` : found.blocks ? ` with blocks [${found.blocks}]` : '';
        hint = ` (the \`network\` option says ${opts.network}, but the file holds network "${found.network}"${layout}; leave the \`network\` option out to detect it)`;
      } catch {
        hint = ` (is it really a ${opts.network}?)`;
      }
    }
    throw new ArcfaceError(`${(e as Error).message}${hint}`, file);
  }
  return { model, spec };
}
