// torch.save's zip format (PyTorch >= 1.6): `<archive>/data.pkl` (a pickle whose tensors point at
// storages through persistent ids) plus one raw little-endian file per storage, `<archive>/data/<key>`.
// Reads float16/bfloat16/float32/float64 and integer storages; writes float32 state dicts that
// `torch.load` + `load_state_dict(strict=True)` accept.
import { unzipSync, zipSync, type Zippable } from 'fflate';
import { ArcfaceError } from '../errors.ts';
import { PickleGlobal, PyPersistentId, PyReduce, PyTuple, pickle, unpickle } from './pickle.ts';
import { halfToFloat } from '../util/half.ts';
import { nodeFs } from '../node-builtins.ts';

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

export class TorchFormatError extends ArcfaceError {
  constructor(file: string, message: string) {
    super(message, file);
    this.name = 'TorchFormatError';
  }
}

class StorageRef {
  constructor(
    readonly key: string,
    readonly dtype: TorchDType,
    readonly itemSize: number,
  ) {}
}

const isDims = (v: unknown): v is number[] => Array.isArray(v) && v.every((d) => Number.isSafeInteger(d) && d >= 0);

/** `_rebuild_tensor_v2(storage, offset, shape, stride, ...)` with its arguments checked (a damaged pickle can hold anything there). */
function rebuildTensor(file: string, storage: unknown, offset: unknown, shape: unknown, stride: unknown): LazyTensor {
  if (!(storage instanceof StorageRef)) throw new TorchFormatError(file, 'a tensor in data.pkl has no storage (damaged pickle)');
  if (!isDims(shape) || !isDims(stride) || shape.length !== stride.length || !Number.isSafeInteger(offset) || (offset as number) < 0) {
    throw new TorchFormatError(file, `a tensor of storage ${storage.key} has a malformed offset/shape/stride (${String(offset)}, ${JSON.stringify(shape)}, ${JSON.stringify(stride)}): damaged pickle`);
  }
  return new LazyTensor(storage, offset as number, shape, stride);
}

class LazyTensor {
  constructor(
    readonly storage: StorageRef,
    readonly offset: number,
    readonly shape: number[],
    readonly stride: number[],
  ) {}
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
    buf = nodeFs(file).readFileSync(file);
  } catch (e) {
    throw new TorchFormatError(file, `cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  return parseTorchStateDict(buf, file);
}

/** Reads every tensor of the bytes of a torch.save file; `file` names it in error messages. */
/** An opened torch.save zip: data.pkl unpickled (tensors as `onTensor` makes them) and its storages, decoded once each. */
interface Archive {
  root: unknown;
  storageOf(ref: StorageRef, label: string): TorchTensor['data'];
}

function openArchive(buf: Uint8Array, file: string, onTensor: (t: LazyTensor, a: Pick<Archive, 'storageOf'>) => unknown = (t) => t): Archive {
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
  const storages = new Map<string, TorchTensor['data']>();
  const storageOf = (ref: StorageRef, label: string): TorchTensor['data'] => {
    let storage = storages.get(ref.key);
    if (!storage) {
      const bytes = entries[`${prefix}data/${ref.key}`];
      if (!bytes) throw new TorchFormatError(file, `storage ${ref.key} of ${label} is missing from the archive`);
      storage = decodeStorage(bytes, ref, file);
      storages.set(ref.key, storage);
    }
    return storage;
  };
  const findClass = (module: string, name: string) => {
    if (module === 'torch._utils' && (name === '_rebuild_tensor_v2' || name === '_rebuild_tensor')) {
      return (storage: unknown, offset: unknown, shape: unknown, stride: unknown) => onTensor(rebuildTensor(file, storage, offset, shape, stride), { storageOf });
    }
    if (module === 'torch._utils' && name === '_rebuild_parameter') return (data: unknown) => data;
    return undefined;
  };
  const persistentLoad = (pid: unknown): StorageRef => {
    if (!Array.isArray(pid) || pid.length < 3) throw new TorchFormatError(file, 'malformed persistent id in data.pkl (expected a storage tuple)');
    const [kind, type, key] = pid as [unknown, unknown, unknown];
    if (kind !== 'storage') throw new TorchFormatError(file, `unknown persistent id kind "${String(kind)}"`);
    const dt = type instanceof PickleGlobal && Object.hasOwn(STORAGE_DTYPES, type.name) ? STORAGE_DTYPES[type.name] : undefined;
    if (!dt) throw new TorchFormatError(file, `unsupported storage type ${type instanceof PickleGlobal ? type.qualname : typeof type}`);
    if (typeof key !== 'string' && typeof key !== 'number') throw new TorchFormatError(file, 'malformed persistent id in data.pkl (storage key)');
    return new StorageRef(String(key), dt[0], dt[1]);
  };
  try {
    return { root: unpickle(entries[pklName]!, { findClass, persistentLoad }), storageOf };
  } catch (e) {
    if (e instanceof TorchFormatError) throw e;
    throw new TorchFormatError(file, `cannot parse data.pkl: ${(e as Error).message}`);
  }
}

/** A tensor's values out of its storage, dense, after checking it lies inside the storage. */
function denseTensor(t: LazyTensor, storage: TorchTensor['data'], file: string, label: string): TorchTensor {
  const numel = t.shape.reduce((a, b) => a * b, 1);
  const maxIndex = t.offset + t.shape.reduce((a, s, d) => a + (s - 1) * t.stride[d]!, 0);
  if (numel > 0 && maxIndex >= storage.length) {
    throw new TorchFormatError(file, `tensor ${label} [${t.shape}] reaches past its storage (${storage.length} elements): truncated file?`);
  }
  // torch.save writes no expanded (stride 0) views of parameters: more elements than the storage is damage,
  // and would allocate without bound.
  if (numel > storage.length) {
    throw new TorchFormatError(file, `tensor ${label} [${t.shape}] has more elements than its storage (${storage.length}): damaged file?`);
  }
  const data = isContiguous(t.shape, t.stride) ? (storage.subarray(t.offset, t.offset + numel) as TorchTensor['data']) : materialise(t, storage);
  return { dtype: t.storage.dtype, shape: [...t.shape], data };
}

export function parseTorchStateDict(buf: Uint8Array, file = '<torch bytes>'): Map<string, TorchTensor> {
  const archive = openArchive(buf, file);
  const lazy = findStateDict(archive.root, file);
  const out = new Map<string, TorchTensor>();
  for (const [rawName, t] of lazy) {
    if (!(t instanceof LazyTensor)) continue;
    if (typeof rawName !== 'string') throw new TorchFormatError(file, `state dict key ${String(rawName)} is not a string`);
    const name = rawName.startsWith('module.') ? rawName.slice(7) : rawName;
    out.set(name, denseTensor(t, archive.storageOf(t.storage, `"${name}"`), file, `"${name}"`));
  }
  return out;
}

export interface TorchTensorOut {
  shape: number[];
  data: Float32Array | BigInt64Array;
}

/** torch.save's archive folder name for a file: its name without extension, as a Python identifier. */
export function torchArchiveName(file: string): string {
  return file.split(/[\\/]/).pop()!.replace(/\.[^.]*$/, '').replace(/[^A-Za-z0-9_]/g, '_') || 'archive';
}

/** The bytes of a torch.save zip of `tensors` (what writeTorchStateDict writes), archive folder `archive`. */
export function serialiseTorchStateDict(tensors: Map<string, TorchTensorOut>, archive = 'archive'): Uint8Array {
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
  return zipSync({
    [`${archive}/data.pkl`]: [pkl, { level: 0 }],
    [`${archive}/byteorder`]: [new TextEncoder().encode('little'), { level: 0 }],
    ...files,
    [`${archive}/version`]: [new TextEncoder().encode('3\n'), { level: 0 }],
  });
}

// ---------------------------------------------------------------------------------------------------------
// Whole torch.save objects (training checkpoints: nested dicts, lists, numbers and tensors).

/** A dict written as `collections.OrderedDict` (what torch's `state_dict()` returns). */
export class TorchOrderedDict extends Map<string, unknown> {}

function isTensorOut(v: unknown): v is TorchTensorOut {
  return (
    typeof v === 'object' && v !== null && !(v instanceof Map) && !Array.isArray(v) &&
    ((v as TorchTensorOut).data instanceof Float32Array || (v as TorchTensorOut).data instanceof BigInt64Array) &&
    Array.isArray((v as TorchTensorOut).shape)
  );
}

/**
 * Reads any torch.save zip file: dicts -> Map, lists/tuples -> arrays, numbers, strings, booleans, null,
 * and every tensor as a dense TorchTensor (wherever it sits). Unknown classes stay PickleObjects.
 */
export function readTorchObject(file: string): unknown {
  let buf: Uint8Array;
  try {
    buf = nodeFs(file).readFileSync(file);
  } catch (e) {
    throw new TorchFormatError(file, `cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  return openArchive(buf, file, (t, a) => denseTensor(t, a.storageOf(t.storage, `storage ${t.storage.key}`), file, `of storage ${t.storage.key}`)).root;
}

/**
 * The bytes torch.save writes for any value: Map -> dict, TorchOrderedDict -> OrderedDict, arrays ->
 * lists, PyTuple -> tuple, PyFloat -> float, numbers/strings/booleans/null as themselves, and
 * {shape, data} (Float32Array -> FloatStorage, BigInt64Array -> LongStorage) -> tensors.
 */
export function serialiseTorchObject(value: unknown, archive = 'archive'): Uint8Array {
  const files: Zippable = {};
  let key = 0;
  const rebuild = new PickleGlobal('torch._utils', '_rebuild_tensor_v2');
  const orderedDict = new PickleGlobal('collections', 'OrderedDict');
  const convert = (v: unknown, where: string): unknown => {
    if (isTensorOut(v)) {
      const isLong = v.data instanceof BigInt64Array;
      const numel = v.shape.reduce((a, b) => a * b, 1);
      if (numel !== v.data.length) throw new Error(`${where}: shape [${v.shape}] does not match ${v.data.length} values`);
      const stride = v.shape.map((_, d) => v.shape.slice(d + 1).reduce((a, b) => a * b, 1));
      const storageKey = String(key++);
      const pid = new PyPersistentId(
        new PyTuple(['storage', new PickleGlobal('torch', isLong ? 'LongStorage' : 'FloatStorage'), storageKey, 'cpu', numel]),
      );
      files[`${archive}/data/${storageKey}`] = [new Uint8Array(v.data.buffer, v.data.byteOffset, v.data.byteLength), { level: 0 }];
      return new PyReduce(rebuild, [pid, 0, new PyTuple(v.shape), new PyTuple(stride), false, new PyReduce(orderedDict, [])]);
    }
    if (v instanceof TorchOrderedDict) {
      const items = new Map<unknown, unknown>();
      for (const [k, x] of v) items.set(k, convert(x, `${where}.${k}`));
      return new PyReduce(orderedDict, [], undefined, items);
    }
    if (v instanceof Map) {
      const out = new Map<unknown, unknown>();
      for (const [k, x] of v) out.set(k, convert(x, `${where}.${String(k)}`));
      return out;
    }
    if (Array.isArray(v)) return v.map((x, i) => convert(x, `${where}[${i}]`));
    if (v instanceof PyTuple) return new PyTuple(v.items.map((x, i) => convert(x, `${where}[${i}]`)));
    return v;
  };
  const pkl = pickle(convert(value, 'root'), { protocol: 2 });
  const zipped = zipSync({
    [`${archive}/data.pkl`]: [pkl, { level: 0 }],
    [`${archive}/byteorder`]: [new TextEncoder().encode('little'), { level: 0 }],
    ...files,
    [`${archive}/version`]: [new TextEncoder().encode('3\n'), { level: 0 }],
  });
  return zipped;
}
