// torch.save's zip format (PyTorch >= 1.6): `<archive>/data.pkl` (a pickle whose tensors point at
// storages through persistent ids) plus one raw little-endian file per storage, `<archive>/data/<key>`.
// Reads float16/bfloat16/float32/float64 and integer storages; writes float32 state dicts that
// `torch.load` + `load_state_dict(strict=True)` accept.
import fs from 'node:fs';
import path from 'node:path';
import { unzipSync, zipSync, type Zippable } from 'fflate';
import { writeFileAtomic } from '../util/atomic.ts';
import { PickleGlobal, PyPersistentId, PyReduce, PyTuple, pickle, unpickle } from './pickle.ts';

export type TorchDType = 'float32' | 'float16' | 'bfloat16' | 'float64' | 'int64' | 'int32' | 'int16' | 'int8' | 'uint8' | 'bool';

export interface TorchTensor {
  dtype: TorchDType;
  shape: number[];
  /** Floats are widened/narrowed to Float32Array; int64 stays BigInt64Array. */
  data: Float32Array | BigInt64Array | Int32Array | Uint8Array;
}

const STORAGE_DTYPES: Record<string, [TorchDType, number]> = {
  FloatStorage: ['float32', 4],
  HalfStorage: ['float16', 2],
  BFloat16Storage: ['bfloat16', 2],
  DoubleStorage: ['float64', 8],
  LongStorage: ['int64', 8],
  IntStorage: ['int32', 4],
  ShortStorage: ['int16', 2],
  CharStorage: ['int8', 1],
  ByteStorage: ['uint8', 1],
  BoolStorage: ['bool', 1],
};

export class TorchFormatError extends Error {
  constructor(readonly file: string, message: string) {
    super(`${file}: ${message}`);
    this.name = 'TorchFormatError';
  }
}

interface StorageRef {
  key: string;
  dtype: TorchDType;
  itemSize: number;
}

class LazyTensor {
  constructor(
    readonly storage: StorageRef,
    readonly offset: number,
    readonly shape: number[],
    readonly stride: number[],
  ) {}
}

function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}

function decodeStorage(bytes: Uint8Array, ref: StorageRef, file: string): TorchTensor['data'] {
  const n = Math.floor(bytes.length / ref.itemSize);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (ref.dtype) {
    case 'float32': {
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = view.getFloat32(i * 4, true);
      return out;
    }
    case 'float16': {
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = halfToFloat(view.getUint16(i * 2, true));
      return out;
    }
    case 'bfloat16': {
      const out = new Float32Array(n);
      const u = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) u[i] = view.getUint16(i * 2, true) << 16;
      return out;
    }
    case 'float64': {
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = view.getFloat64(i * 8, true);
      return out;
    }
    case 'int64': {
      const out = new BigInt64Array(n);
      for (let i = 0; i < n; i++) out[i] = view.getBigInt64(i * 8, true);
      return out;
    }
    case 'int32': {
      const out = new Int32Array(n);
      for (let i = 0; i < n; i++) out[i] = view.getInt32(i * 4, true);
      return out;
    }
    case 'int16': {
      const out = new Int32Array(n);
      for (let i = 0; i < n; i++) out[i] = view.getInt16(i * 2, true);
      return out;
    }
    case 'int8': {
      const out = new Int32Array(n);
      for (let i = 0; i < n; i++) out[i] = view.getInt8(i);
      return out;
    }
    case 'uint8':
    case 'bool':
      return bytes.slice();
    default:
      throw new TorchFormatError(file, `unsupported storage type ${ref.dtype as string}`);
  }
}

/** Copies a (possibly strided) view out of its storage into a dense C-order array. */
function materialise(t: LazyTensor, storage: TorchTensor['data']): TorchTensor['data'] {
  const numel = t.shape.reduce((a, b) => a * b, 1);
  const Ctor = storage.constructor as new (n: number) => TorchTensor['data'];
  const out = new Ctor(numel);
  const rank = t.shape.length;
  const idx = new Array<number>(rank).fill(0);
  for (let i = 0; i < numel; i++) {
    let src = t.offset;
    for (let d = 0; d < rank; d++) src += idx[d]! * t.stride[d]!;
    (out as unknown as number[])[i] = (storage as unknown as number[])[src]!;
    for (let d = rank - 1; d >= 0; d--) {
      if (++idx[d]! < t.shape[d]!) break;
      idx[d] = 0;
    }
  }
  return out;
}

function isContiguous(shape: number[], stride: number[]): boolean {
  let expected = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    if (shape[d]! !== 1 && stride[d] !== expected) return false;
    expected *= shape[d]!;
  }
  return true;
}

/** Picks the backbone state dict out of what a torch file holds (a bare state dict or a checkpoint dict). */
function findStateDict(root: unknown, file: string): Map<string, LazyTensor> {
  if (!(root instanceof Map)) throw new TorchFormatError(file, 'holds no state dict (its pickle is not a dict of tensors)');
  const isStateDict = (m: Map<unknown, unknown>) => m.size > 0 && [...m.values()].some((v) => v instanceof LazyTensor);
  if (isStateDict(root)) return root as Map<string, LazyTensor>;
  for (const key of ['state_dict_backbone', 'state_dict', 'model', 'backbone']) {
    const v = root.get(key);
    if (v instanceof Map && isStateDict(v)) return v as Map<string, LazyTensor>;
  }
  throw new TorchFormatError(file, `holds no state dict of tensors (top-level keys: ${[...root.keys()].slice(0, 8).join(', ')})`);
}

/** Reads every tensor of a torch.save zip file (a state dict, or the backbone dict inside a checkpoint). */
export function readTorchStateDict(file: string): Map<string, TorchTensor> {
  let buf: Uint8Array;
  try {
    buf = fs.readFileSync(file);
  } catch (e) {
    throw new TorchFormatError(file, `cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  if (buf.length < 4 || buf[0] !== 0x50 || buf[1] !== 0x4b) {
    const legacy = buf[0] === 0x80 ? ' (this looks like the legacy pre-1.6 torch.save format: re-save it with a current PyTorch)' : '';
    throw new TorchFormatError(file, `not a PyTorch zip checkpoint${legacy}`);
  }
  let entries: Record<string, Uint8Array>;
  try {
    entries = unzipSync(buf);
  } catch (e) {
    throw new TorchFormatError(file, `corrupt or truncated zip archive (${(e as Error).message})`);
  }
  const pklName = Object.keys(entries).find((k) => k.endsWith('/data.pkl') || k === 'data.pkl');
  if (!pklName) throw new TorchFormatError(file, 'zip archive has no data.pkl: not a torch.save file');
  const prefix = pklName.slice(0, pklName.length - 'data.pkl'.length);

  const findClass = (module: string, name: string) => {
    if (module === 'torch._utils' && (name === '_rebuild_tensor_v2' || name === '_rebuild_tensor')) {
      return (storage: unknown, offset: unknown, shape: unknown, stride: unknown) =>
        new LazyTensor(storage as StorageRef, offset as number, shape as number[], stride as number[]);
    }
    if (module === 'torch._utils' && name === '_rebuild_parameter') return (data: unknown) => data;
    return undefined;
  };
  const persistentLoad = (pid: unknown): StorageRef => {
    const [kind, type, key] = pid as [string, unknown, string];
    if (kind !== 'storage') throw new TorchFormatError(file, `unknown persistent id kind "${kind}"`);
    const dt = type instanceof PickleGlobal ? STORAGE_DTYPES[type.name] : undefined;
    if (!dt) throw new TorchFormatError(file, `unsupported storage type ${(type as PickleGlobal)?.qualname ?? String(type)}`);
    return { key: String(key), dtype: dt[0], itemSize: dt[1] };
  };

  let root: unknown;
  try {
    root = unpickle(entries[pklName]!, { findClass, persistentLoad });
  } catch (e) {
    if (e instanceof TorchFormatError) throw e;
    throw new TorchFormatError(file, `cannot parse data.pkl: ${(e as Error).message}`);
  }
  const lazy = findStateDict(root, file);
  const storages = new Map<string, TorchTensor['data']>();
  const out = new Map<string, TorchTensor>();
  for (const [rawName, t] of lazy) {
    if (!(t instanceof LazyTensor)) continue;
    const name = rawName.startsWith('module.') ? rawName.slice(7) : rawName;
    let storage = storages.get(t.storage.key);
    if (!storage) {
      const bytes = entries[`${prefix}data/${t.storage.key}`];
      if (!bytes) throw new TorchFormatError(file, `storage ${t.storage.key} of "${name}" is missing from the archive`);
      storage = decodeStorage(bytes, t.storage, file);
      storages.set(t.storage.key, storage);
    }
    const numel = t.shape.reduce((a, b) => a * b, 1);
    const maxIndex = t.offset + t.shape.reduce((a, s, d) => a + (s - 1) * t.stride[d]!, 0);
    if (numel > 0 && maxIndex >= storage.length) {
      throw new TorchFormatError(file, `tensor "${name}" [${t.shape}] reaches past its storage (${storage.length} elements): truncated file?`);
    }
    const data = isContiguous(t.shape, t.stride)
      ? (storage.subarray(t.offset, t.offset + numel) as TorchTensor['data'])
      : materialise(t, storage);
    out.set(name, { dtype: t.storage.dtype, shape: [...t.shape], data });
  }
  return out;
}

export interface TorchTensorOut {
  shape: number[];
  data: Float32Array | BigInt64Array;
}

/**
 * Writes a state dict as torch.save would (zip, archive folder named after the file), atomically.
 * Float32Array -> FloatStorage, BigInt64Array -> LongStorage.
 */
export function writeTorchStateDict(file: string, tensors: Map<string, TorchTensorOut>): void {
  const archive = path.basename(file).replace(/\.[^.]*$/, '').replace(/[^A-Za-z0-9_]/g, '_') || 'archive';
  const items = new Map<unknown, unknown>();
  const files: Zippable = {};
  let key = 0;
  const rebuild = new PickleGlobal('torch._utils', '_rebuild_tensor_v2');
  const orderedDict = new PickleGlobal('collections', 'OrderedDict');
  for (const [name, t] of tensors) {
    const isLong = t.data instanceof BigInt64Array;
    const numel = t.shape.reduce((a, b) => a * b, 1);
    if (numel !== t.data.length) throw new Error(`${name}: shape [${t.shape}] does not match ${t.data.length} values`);
    const stride = t.shape.map((_, d) => t.shape.slice(d + 1).reduce((a, b) => a * b, 1));
    const storageKey = String(key++);
    const pid = new PyPersistentId(
      new PyTuple(['storage', new PickleGlobal('torch', isLong ? 'LongStorage' : 'FloatStorage'), storageKey, 'cpu', numel]),
    );
    items.set(name, new PyReduce(rebuild, [pid, 0, new PyTuple(t.shape), new PyTuple(stride), false, new PyReduce(orderedDict, [])]));
    // Little-endian hosts only (Node's typed arrays use host order; every platform Node ships on is LE).
    files[`${archive}/data/${storageKey}`] = [new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength).slice(), { level: 0 }];
  }
  const pkl = pickle(new PyReduce(orderedDict, [], undefined, items), { protocol: 2 });
  const zipped = zipSync({
    [`${archive}/data.pkl`]: [pkl, { level: 0 }],
    [`${archive}/byteorder`]: [new TextEncoder().encode('little'), { level: 0 }],
    ...files,
    [`${archive}/version`]: [new TextEncoder().encode('3\n'), { level: 0 }],
  });
  writeFileAtomic(file, zipped);
}
