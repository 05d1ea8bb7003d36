// NumPy .npy reader/writer (format versions 1.0, 2.0 and 3.0 headers), little-endian only.
// Supported dtypes: f4, f8, i4, i8 (read as BigInt64Array), u1, b1 (read as Uint8Array).
import { readFileSync, writeFileSync } from 'node:fs';
import { ArcfaceError } from '../errors.ts';

export type NpyDtype = 'f4' | 'f8' | 'i4' | 'i8' | 'u1' | 'b1';
export type NpyData = Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array;

export interface NpyArray {
  shape: number[];
  dtype: NpyDtype;
  data: NpyData;
}

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY
const ITEM_SIZE: Record<NpyDtype, number> = { f4: 4, f8: 8, i4: 4, i8: 8, u1: 1, b1: 1 };

/**
 * Reads a .npy file (path) or its bytes. `name` is used in error messages when bytes are given.
 * Data is copied into an aligned typed array of the file's dtype; C order only.
 */
export function readNpy(pathOrBytes: string | Uint8Array, name?: string): NpyArray {
  const file = typeof pathOrBytes === 'string' ? pathOrBytes : (name ?? '<npy bytes>');
  let bytes: Uint8Array;
  if (typeof pathOrBytes === 'string') {
    try {
      bytes = readFileSync(pathOrBytes);
    } catch (e) {
      throw new ArcfaceError(`cannot read .npy file: ${(e as Error).message}`, file);
    }
  } else {
    bytes = pathOrBytes;
  }
  const fail = (msg: string): never => {
    throw new ArcfaceError(`not a supported .npy file: ${msg}`, file);
  };
  if (bytes.length < 10 || MAGIC.some((b, i) => bytes[i] !== b)) fail('missing \\x93NUMPY magic');
  const major = bytes[6];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let headerLen: number;
  let headerStart: number;
  if (major === 1) {
    headerLen = view.getUint16(8, true);
    headerStart = 10;
  } else if (major === 2 || major === 3) {
    if (bytes.length < 12) fail('truncated header');
    headerLen = view.getUint32(8, true);
    headerStart = 12;
  } else {
    return fail(`unknown format version ${major}.${bytes[7]}`);
  }
  const dataStart = headerStart + headerLen;
  if (dataStart > bytes.length) fail('truncated header');
  const header = new TextDecoder(major === 3 ? 'utf-8' : 'latin1').decode(bytes.subarray(headerStart, dataStart));

  const descr = /'descr'\s*:\s*'([^']*)'/.exec(header)?.[1];
  const fortran = /'fortran_order'\s*:\s*(True|False)/.exec(header)?.[1];
  const shapeText = /'shape'\s*:\s*\(([^)]*)\)/.exec(header)?.[1];
  if (descr === undefined || fortran === undefined || shapeText === undefined) {
    return fail(`cannot parse header ${JSON.stringify(header.trim())}`);
  }
  if (fortran === 'True') fail('Fortran-order arrays are not supported');
  const m = /^([<>|=])([fiub])(\d+)$/.exec(descr);
  if (!m) return fail(`unsupported dtype '${descr}'`);
  const [, order, kind, size] = m;
  const dtype = `${kind}${size}` as NpyDtype;
  if (!(dtype in ITEM_SIZE)) fail(`unsupported dtype '${descr}' (supported: f4 f8 i4 i8 u1 b1)`);
  if (order === '>' && ITEM_SIZE[dtype] > 1) fail(`big-endian dtype '${descr}' is not supported`);
  const shape = shapeText
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
    .map((s) => {
      const n = Number(s.replace(/L$/, ''));
      if (!Number.isInteger(n) || n < 0) fail(`bad shape (${shapeText})`);
      return n;
    });
  const count = shape.reduce((a, b) => a * b, 1);
  const nbytes = count * ITEM_SIZE[dtype];
  if (bytes.length - dataStart < nbytes) {
    fail(`data is truncated: shape (${shape.join(', ')}) needs ${nbytes} bytes, file has ${bytes.length - dataStart}`);
  }
  // Copy so the typed array is aligned regardless of the header length (Buffer.slice would share memory).
  const copy = new Uint8Array(nbytes);
  copy.set(bytes.subarray(dataStart, dataStart + nbytes));
  const raw = copy.buffer;
  let data: NpyData;
  switch (dtype) {
    case 'f4': data = new Float32Array(raw); break;
    case 'f8': data = new Float64Array(raw); break;
    case 'i4': data = new Int32Array(raw); break;
    case 'i8': data = new BigInt64Array(raw); break;
    default: data = new Uint8Array(raw);
  }
  return { shape, dtype, data };
}

function dtypeOf(data: NpyData): NpyDtype {
  if (data instanceof Float32Array) return 'f4';
  if (data instanceof Float64Array) return 'f8';
  if (data instanceof Int32Array) return 'i4';
  if (data instanceof BigInt64Array) return 'i8';
  return 'u1';
}

/** Encodes an array as .npy (format 1.0, or 2.0 when the header is too long). `dtype` may be 'b1' for a Uint8Array. */
export function encodeNpy(arr: { shape: number[]; data: NpyData; dtype?: NpyDtype }): Uint8Array {
  const dtype = arr.dtype ?? dtypeOf(arr.data);
  const count = arr.shape.reduce((a, b) => a * b, 1);
  if (count !== arr.data.length) {
    throw new ArcfaceError(`npy: shape (${arr.shape.join(', ')}) holds ${count} values but data has ${arr.data.length}`);
  }
  if (dtype !== dtypeOf(arr.data) && !(dtype === 'b1' && arr.data instanceof Uint8Array)) {
    throw new ArcfaceError(`npy: dtype ${dtype} does not match the data's typed array`);
  }
  const descr = ITEM_SIZE[dtype] === 1 ? `|${dtype}` : `<${dtype}`;
  const shapeText = arr.shape.length === 1 ? `(${arr.shape[0]},)` : `(${arr.shape.join(', ')})`;
  let dict = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shapeText}, }`;
  let version = 1;
  let prefix = 10;
  if (dict.length + 1 + prefix > 65535) {
    version = 2;
    prefix = 12;
  }
  // Pad with spaces so the data starts on a 64-byte boundary; the header ends with '\n'.
  const total = Math.ceil((prefix + dict.length + 1) / 64) * 64;
  dict = dict.padEnd(total - prefix - 1, ' ') + '\n';
  const body = new Uint8Array(arr.data.buffer, arr.data.byteOffset, arr.data.byteLength);
  const out = new Uint8Array(total + body.length);
  out.set(MAGIC, 0);
  out[6] = version;
  out[7] = 0;
  const view = new DataView(out.buffer);
  if (version === 1) view.setUint16(8, dict.length, true);
  else view.setUint32(8, dict.length, true);
  for (let i = 0; i < dict.length; i++) out[prefix + i] = dict.charCodeAt(i);
  out.set(body, total);
  return out;
}

/** Writes an array as a .npy file (see `encodeNpy`). */
export function writeNpy(path: string, arr: { shape: number[]; data: NpyData; dtype?: NpyDtype }): void {
  const bytes = encodeNpy(arr);
  try {
    writeFileSync(path, bytes);
  } catch (e) {
    throw new ArcfaceError(`cannot write .npy file: ${(e as Error).message}`, path);
  }
}
