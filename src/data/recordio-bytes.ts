// dmlc RecordIO (MXNet `.rec`) from and to bytes in memory, for browsers and small files; the same chunk
// format RecordIOReader/RecordIOWriter (recordio.ts) read and write positioned in files: chunks of
// [magic, lrec = cflag << 29 | length, payload, zero padding to 4], a payload split where the magic word
// sits at an aligned offset inside it (cflag 1 start, 2 middle, 3 end) with those 4 bytes dropped.
import { ArcfaceError } from '../errors.ts';

const MAGIC = 0xced7230a;
const MAX_LENGTH = (1 << 29) - 1;
const align4 = (n: number): number => (n + 3) & ~3;

export interface RecordAt {
  /** Byte offset of the record's first chunk (the value a `.idx` file lists). */
  offset: number;
  payload: Uint8Array;
}

/** Every logical record of a `.rec` held in memory; `file` names it in errors (with the byte offset). */
export function parseRecordIO(bytes: Uint8Array, file = '<recordio bytes>'): RecordAt[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: RecordAt[] = [];
  let pos = 0;
  while (pos < bytes.length) {
    const offset = pos;
    const parts: Uint8Array[] = [];
    for (let part = 0; ; part++) {
      const fail = (problem: string) => new ArcfaceError(`byte offset ${pos}: ${problem}`, file);
      if (pos + 8 > bytes.length) throw fail(`truncated record: ${bytes.length - pos} bytes left where an 8-byte chunk header was expected`);
      const magic = view.getUint32(pos, true);
      if (magic !== MAGIC) throw fail(`wrong magic 0x${magic.toString(16).padStart(8, '0')} (expected 0xced7230a)`);
      const lrec = view.getUint32(pos + 4, true);
      const cflag = lrec >>> 29;
      const len = lrec & MAX_LENGTH;
      if (pos + 8 + len > bytes.length) throw fail(`truncated record: the chunk needs ${len} payload bytes, ${bytes.length - pos - 8} are left`);
      if ((part === 0 && cflag !== 0 && cflag !== 1) || (part > 0 && cflag !== 2 && cflag !== 3)) throw fail(`chunk flag ${cflag} out of sequence`);
      if (part > 0) parts.push(new Uint8Array([0x0a, 0x23, 0xd7, 0xce]));
      parts.push(bytes.subarray(pos + 8, pos + 8 + len));
      pos += 8 + align4(len);
      if (cflag === 0 || cflag === 3) break;
    }
    out.push({ offset, payload: parts.length === 1 ? parts[0]! : concat(parts) });
  }
  return out;
}

/** A `.rec` holding `payloads` in order, and each record's byte offset (for a `.idx`). */
export function encodeRecordIO(payloads: Iterable<Uint8Array>): { bytes: Uint8Array; offsets: number[] } {
  const chunks: Uint8Array[] = [];
  const offsets: number[] = [];
  let size = 0;
  const chunk = (cflag: number, data: Uint8Array) => {
    const c = new Uint8Array(8 + align4(data.length));
    const v = new DataView(c.buffer);
    v.setUint32(0, MAGIC, true);
    v.setUint32(4, ((cflag << 29) | data.length) >>> 0, true);
    c.set(data, 8);
    chunks.push(c);
    size += c.length;
  };
  for (const p of payloads) {
    if (p.length > MAX_LENGTH) throw new ArcfaceError(`record of ${p.length} bytes exceeds the RecordIO limit of ${MAX_LENGTH}`);
    offsets.push(size);
    let from = 0;
    for (let i = 0; i + 4 <= (p.length & ~3); i += 4) {
      if (p[i] === 0x0a && p[i + 1] === 0x23 && p[i + 2] === 0xd7 && p[i + 3] === 0xce) {
        chunk(from === 0 ? 1 : 2, p.subarray(from, i));
        from = i + 4;
      }
    }
    chunk(from !== 0 ? 3 : 0, p.subarray(from));
  }
  return { bytes: concat(chunks, size), offsets };
}

function concat(parts: Uint8Array[], size = parts.reduce((a, p) => a + p.length, 0)): Uint8Array {
  const out = new Uint8Array(size);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
