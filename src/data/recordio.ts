// dmlc RecordIO, the container of MXNet `.rec` files: chunks of [magic, lrec, payload, zero padding to 4].
// lrec = cflag << 29 | length. A writer splits a payload wherever the magic word sits at a 4-byte-aligned
// position inside it (cflag 1 start, 2 middle, 3 end) and drops those 4 bytes; a reader puts them back.
import fs from 'node:fs';
import path from 'node:path';
import { ArcfaceError } from '../errors.ts';

export const RECORDIO_MAGIC = 0xced7230a;
export const MAX_CHUNK_LENGTH = (1 << 29) - 1;
const MAGIC_BYTES = new Uint8Array([0x0a, 0x23, 0xd7, 0xce]);
/** First positioned read: covers a typical 112x112 JPEG record in one system call. */
const FIRST_READ = 16384;

const align4 = (n: number): number => (n + 3) & ~3;

/** Error about one record: names the file, the key when known, and the byte offset. */
export class RecordIOError extends ArcfaceError {
  constructor(file: string, offset: number, problem: string, key?: number | string) {
    super(`${key !== undefined ? `key ${key}, ` : ''}byte offset ${offset}: ${problem}`, file);
    this.name = 'RecordIOError';
  }
}

/** Reads logical records at byte offsets (random access) with positioned reads: the file is never loaded whole. */
export class RecordIOReader {
  readonly fd: number;
  readonly size: number;
  private buf = new Uint8Array(FIRST_READ);
  private view = new DataView(this.buf.buffer);

  constructor(readonly file: string) {
    try {
      this.fd = fs.openSync(file, 'r');
    } catch (e) {
      throw new ArcfaceError(`cannot open: ${(e as Error).message}`, file);
    }
    this.size = fs.fstatSync(this.fd).size;
  }

  /** The logical record (parts joined) that starts at `offset`, and the offset just past it. */
  readAt(offset: number, key?: number | string): { payload: Uint8Array; next: number } {
    if (!Number.isSafeInteger(offset) || offset < 0 || offset >= this.size) {
      throw new RecordIOError(this.file, offset, `offset is past the end of the file (size ${this.size} bytes); is the .idx from another .rec?`, key);
    }
    let pos = offset;
    const parts: Uint8Array[] = [];
    for (let part = 0; ; part++) {
      const got = this.fill(pos, FIRST_READ);
      if (got < 8) throw new RecordIOError(this.file, pos, `truncated record: ${got} bytes left where an 8-byte chunk header was expected`, key);
      const magic = this.view.getUint32(0, true);
      if (magic !== RECORDIO_MAGIC) {
        throw new RecordIOError(this.file, pos, `wrong magic 0x${magic.toString(16).padStart(8, '0')} (expected 0xced7230a): not the start of a RecordIO record`, key);
      }
      const lrec = this.view.getUint32(4, true);
      const cflag = lrec >>> 29;
      const len = lrec & MAX_CHUNK_LENGTH;
      if (pos + 8 + len > this.size) {
        throw new RecordIOError(this.file, pos, `truncated record: the chunk needs ${len} payload bytes but the file ends ${this.size - pos - 8} bytes later`, key);
      }
      if ((part === 0 && cflag !== 0 && cflag !== 1) || (part > 0 && cflag !== 2 && cflag !== 3)) {
        throw new RecordIOError(this.file, pos, `unexpected chunk flag ${cflag} (${part === 0 ? 'a record starts with 0 or 1' : 'a continuation is 2 or 3'})`, key);
      }
      let data: Uint8Array;
      if (8 + len <= got) {
        data = this.buf.slice(8, 8 + len);
      } else {
        data = new Uint8Array(len);
        data.set(this.buf.subarray(8, got));
        const rest = fs.readSync(this.fd, data, got - 8, len - (got - 8), pos + got);
        if (rest !== len - (got - 8)) throw new RecordIOError(this.file, pos, 'short read', key);
      }
      pos += 8 + align4(len);
      if (cflag === 0) return { payload: data, next: pos };
      parts.push(data);
      if (cflag === 3) return { payload: joinParts(parts), next: pos };
      if (pos >= this.size) throw new RecordIOError(this.file, pos, 'truncated record: the file ends inside a multi-part record', key);
    }
  }

  /** Reads the first `n` bytes of the record at `offset` when they sit in its first chunk (cheap header peek). */
  peekAt(offset: number, n: number, key?: number | string): Uint8Array {
    if (offset >= 0 && offset + 8 + n <= this.size) {
      const got = this.fill(offset, 8 + n);
      if (got === 8 + n && this.view.getUint32(0, true) === RECORDIO_MAGIC) {
        const lrec = this.view.getUint32(4, true);
        if ((lrec & MAX_CHUNK_LENGTH) >= n && lrec >>> 29 <= 1) return this.buf.slice(8, 8 + n);
      }
    }
    return this.readAt(offset, key).payload.subarray(0, n);
  }

  close(): void {
    fs.closeSync(this.fd);
  }

  private fill(pos: number, want: number): number {
    if (this.buf.length < want) {
      this.buf = new Uint8Array(want);
      this.view = new DataView(this.buf.buffer);
    }
    return fs.readSync(this.fd, this.buf, 0, Math.min(want, this.size - pos), pos);
  }
}

function joinParts(parts: Uint8Array[]): Uint8Array {
  const total = parts.reduce((n, p) => n + p.length, 0) + 4 * (parts.length - 1);
  const out = new Uint8Array(total);
  let o = 0;
  parts.forEach((p, i) => {
    if (i > 0) {
      out.set(MAGIC_BYTES, o);
      o += 4;
    }
    out.set(p, o);
    o += p.length;
  });
  return out;
}

/** Offsets of every record in file order, found by walking the chunk headers (for a .rec without .idx). */
export function scanRecordOffsets(file: string): number[] {
  const reader = new RecordIOReader(file);
  try {
    const offsets: number[] = [];
    const head = new Uint8Array(8);
    const view = new DataView(head.buffer);
    let pos = 0;
    let inRecord = false;
    while (pos < reader.size) {
      if (fs.readSync(reader.fd, head, 0, 8, pos) < 8) throw new RecordIOError(file, pos, 'truncated chunk header at the end of the file');
      if (view.getUint32(0, true) !== RECORDIO_MAGIC) throw new RecordIOError(file, pos, `wrong magic 0x${view.getUint32(0, true).toString(16)} (expected 0xced7230a)`);
      const lrec = view.getUint32(4, true);
      const cflag = lrec >>> 29;
      const len = lrec & MAX_CHUNK_LENGTH;
      if (pos + 8 + len > reader.size) throw new RecordIOError(file, pos, `truncated record: chunk of ${len} bytes runs past the end of the file`);
      if (!inRecord) {
        if (cflag !== 0 && cflag !== 1) throw new RecordIOError(file, pos, `chunk flag ${cflag} where a record should start`);
        offsets.push(pos);
        inRecord = cflag === 1;
      } else {
        if (cflag !== 2 && cflag !== 3) throw new RecordIOError(file, pos, `chunk flag ${cflag} inside a multi-part record`);
        inRecord = cflag === 2;
      }
      pos += 8 + align4(len);
    }
    if (inRecord) throw new RecordIOError(file, pos, 'truncated record: the file ends inside a multi-part record');
    return offsets;
  } finally {
    reader.close();
  }
}

/** Streams every record of a .rec in file order, no .idx needed: one positioned read per record. */
export function* iterateRecords(file: string): Generator<{ offset: number; payload: Uint8Array }> {
  const reader = new RecordIOReader(file);
  try {
    for (let pos = 0; pos < reader.size; ) {
      const { payload, next } = reader.readAt(pos);
      yield { offset: pos, payload };
      pos = next;
    }
  } finally {
    reader.close();
  }
}

/** Appends records, splitting payloads the way dmlc's RecordIOWriter does. Buffered; call close(). */
export class RecordIOWriter {
  private fd: number;
  private pending: Uint8Array[] = [];
  private pendingBytes = 0;
  private pos = 0;
  /** How many payloads had to be split because they contain the magic word at an aligned offset. */
  splitRecords = 0;

  constructor(readonly file: string) {
    try {
      this.fd = fs.openSync(file, 'w');
    } catch (e) {
      throw new ArcfaceError(`cannot create: ${(e as Error).message}`, file);
    }
  }

  /** Byte offset the next record will start at (what MXNet's `tell()` returns, the .idx value). */
  get position(): number {
    return this.pos;
  }

  /** Writes one logical record; returns its byte offset. */
  write(payload: Uint8Array): number {
    if (payload.length > MAX_CHUNK_LENGTH) throw new ArcfaceError(`record of ${payload.length} bytes exceeds the RecordIO limit of ${MAX_CHUNK_LENGTH}`, this.file);
    const start = this.pos;
    const lowerAlign = payload.length & ~3;
    let from = 0;
    for (let i = 0; i < lowerAlign; i += 4) {
      if (payload[i] === 0x0a && payload[i + 1] === 0x23 && payload[i + 2] === 0xd7 && payload[i + 3] === 0xce) {
        this.chunk(from === 0 ? 1 : 2, payload.subarray(from, i));
        from = i + 4;
      }
    }
    if (from !== 0) this.splitRecords++;
    this.chunk(from !== 0 ? 3 : 0, payload.subarray(from));
    return start;
  }

  close(): void {
    this.flush();
    fs.fsyncSync(this.fd);
    fs.closeSync(this.fd);
  }

  /** Closes and deletes the file (for an aborted write). */
  abort(): void {
    try {
      fs.closeSync(this.fd);
    } catch {
      // already closed
    }
    fs.rmSync(this.file, { force: true });
  }

  private chunk(cflag: number, data: Uint8Array): void {
    const head = new Uint8Array(8);
    const v = new DataView(head.buffer);
    v.setUint32(0, RECORDIO_MAGIC, true);
    v.setUint32(4, ((cflag << 29) | data.length) >>> 0, true);
    this.push(head);
    if (data.length) this.push(data.slice());
    const pad = align4(data.length) - data.length;
    if (pad) this.push(new Uint8Array(pad));
  }

  private push(b: Uint8Array): void {
    this.pending.push(b);
    this.pendingBytes += b.length;
    this.pos += b.length;
    if (this.pendingBytes >= 1 << 22) this.flush();
  }

  private flush(): void {
    if (!this.pending.length) return;
    const all = Buffer.concat(this.pending);
    let off = 0;
    while (off < all.length) off += fs.writeSync(this.fd, all, off, all.length - off);
    this.pending = [];
    this.pendingBytes = 0;
  }
}

/** A parsed `.idx`: keys and offsets in line order, as typed arrays (17 M lines stay cheap). */
export interface IdxTable {
  keys: Float64Array;
  offsets: Float64Array;
}

/** Parses a `.idx` (`key<TAB>offset` per line, any order). Errors name the file and line. */
export function readIdxTable(file: string): IdxTable {
  let buf: Uint8Array;
  try {
    buf = fs.readFileSync(file);
  } catch (e) {
    throw new ArcfaceError(`cannot read: ${(e as Error).message}`, file);
  }
  let lines = 0;
  for (let i = 0; i < buf.length; i++) if (buf[i] === 10) lines++;
  const keys = new Float64Array(lines + 1);
  const offsets = new Float64Array(lines + 1);
  let n = 0;
  let line = 0;
  let i = 0;
  // Takes position and line as arguments: a closure over the loop variables would slow the loop down.
  const bad = (why: string, at: number, ln: number): never => {
    const start = buf.lastIndexOf(10, Math.max(0, at - 1)) + 1;
    const end = buf.indexOf(10, start);
    const text = Buffer.from(buf.subarray(start, end < 0 ? buf.length : end)).toString('utf8').slice(0, 60);
    throw new ArcfaceError(`line ${ln}: ${why}, got ${JSON.stringify(text)}`, file);
  };
  while (i < buf.length) {
    line++;
    while (i < buf.length && (buf[i] === 32 || buf[i] === 13)) i++; // leading blanks
    if (i < buf.length && buf[i] === 10) {
      i++;
      continue; // empty line
    }
    if (i >= buf.length) break;
    let key = 0;
    for (let f = 0; f < 2; f++) {
      while (i < buf.length && (buf[i] === 9 || buf[i] === 32)) i++;
      let neg = false;
      if (buf[i] === 45 && f === 0) {
        neg = true;
        i++;
      }
      let v = 0;
      let digits = 0;
      while (i < buf.length && buf[i] >= 48 && buf[i] <= 57) {
        v = v * 10 + (buf[i++] - 48);
        digits++;
      }
      if (!digits || digits > 15) bad('expected "key<TAB>offset"', i, line);
      if (f === 0) key = neg ? -v : v;
      else offsets[n] = v;
    }
    while (i < buf.length && (buf[i] === 32 || buf[i] === 9 || buf[i] === 13)) i++;
    if (i < buf.length && buf[i] !== 10) bad('expected "key<TAB>offset"', i, line);
    i++;
    keys[n] = key;
    n++;
  }
  return { keys: keys.subarray(0, n), offsets: offsets.subarray(0, n) };
}

/** One `.idx` line: key and byte offset, in the order the lines appear. */
export interface IdxEntry {
  key: number;
  offset: number;
}

/** `readIdxTable` as objects, with duplicate keys refused (for small files and tools). */
export function readIdx(file: string): IdxEntry[] {
  const t = readIdxTable(file);
  const seen = new Set<number>();
  const out: IdxEntry[] = [];
  for (let i = 0; i < t.keys.length; i++) {
    if (seen.has(t.keys[i])) throw new ArcfaceError(`key ${t.keys[i]} appears twice`, file);
    seen.add(t.keys[i]);
    out.push({ key: t.keys[i], offset: t.offsets[i] });
  }
  return out;
}

/** Writes a `.idx` file (to `file` directly; callers that need atomicity pass a temporary name). */
export function writeIdx(file: string, entries: readonly IdxEntry[]): void {
  fs.writeFileSync(file, entries.map((e) => `${e.key}\t${e.offset}\n`).join(''));
}

/** The `.idx` next to a `.rec` (same stem). */
export function idxPathFor(recFile: string): string {
  const dir = path.dirname(recFile);
  return path.join(dir, path.basename(recFile, path.extname(recFile)) + '.idx');
}
