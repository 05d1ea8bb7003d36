// MXNet's record payload (mx.recordio.pack/unpack): a 24-byte IRHeader `<IfQQ` (flag, label, id, id2),
// then `flag` float32 labels when flag > 0 (the scalar label is then 0), then the image bytes.
import { ArcfaceError } from '../errors.ts';

export const IRHEADER_SIZE = 24;

export interface IRHeader {
  /** Number of float32 labels that follow the header (0: the scalar label is used). */
  flag: number;
  /** The scalar label, or the label array when flag > 0. */
  label: number | Float32Array;
  id: number;
  id2: number;
}

export interface UnpackedRecord extends IRHeader {
  /** Image bytes (a view into the payload). */
  image: Uint8Array;
}

/** Splits a record payload. `where` names the record for the error message. */
export function unpackRecord(payload: Uint8Array, where: string): UnpackedRecord {
  if (payload.length < IRHEADER_SIZE) throw new ArcfaceError(`${where}: record of ${payload.length} bytes is shorter than the 24-byte IRHeader`);
  const v = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const flag = v.getUint32(0, true);
  const scalar = v.getFloat32(4, true);
  const id = Number(v.getBigUint64(8, true));
  const id2 = Number(v.getBigUint64(16, true));
  if (flag === 0) return { flag, label: scalar, id, id2, image: payload.subarray(IRHEADER_SIZE) };
  const end = IRHEADER_SIZE + 4 * flag;
  if (end > payload.length) throw new ArcfaceError(`${where}: IRHeader says ${flag} labels but the record has only ${payload.length} bytes`);
  const label = new Float32Array(flag);
  for (let i = 0; i < flag; i++) label[i] = v.getFloat32(IRHEADER_SIZE + 4 * i, true);
  return { flag, label, id, id2, image: payload.subarray(end) };
}

/** The class id of a record: the scalar label, or the first value of the label array (as insightface does). */
export function classOf(h: IRHeader): number {
  return typeof h.label === 'number' ? h.label : h.label[0];
}

/** Builds a record payload; an array label sets flag = its length and stores 0 in the scalar field. */
export function packRecord(h: { label: number | ArrayLike<number>; id?: number; id2?: number }, image?: Uint8Array): Uint8Array {
  const labels = typeof h.label === 'number' ? null : Array.from(h.label);
  const flag = labels ? labels.length : 0;
  const imgLen = image ? image.length : 0;
  const out = new Uint8Array(IRHEADER_SIZE + 4 * flag + imgLen);
  const v = new DataView(out.buffer);
  v.setUint32(0, flag, true);
  v.setFloat32(4, labels ? 0 : (h.label as number), true);
  v.setBigUint64(8, BigInt(h.id ?? 0), true);
  v.setBigUint64(16, BigInt(h.id2 ?? 0), true);
  if (labels) labels.forEach((x, i) => v.setFloat32(IRHEADER_SIZE + 4 * i, x, true));
  if (image) out.set(image, IRHEADER_SIZE + 4 * flag);
  return out;
}
