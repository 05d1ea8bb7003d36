// Seeded mutations for the fuzz suite: generic byte mutations plus structure-aware ones for the
// containers the project reads (pickle opcodes, zip entries, protobuf varints, text lines).
import { unzipSync, zipSync, type Zippable } from 'fflate';

/** Small fast PRNG (mulberry32): the same seed gives the same mutations on every machine. */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  next(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
}

/** Mixes strings and numbers into a 32-bit seed (FNV-1a). */
export function seedOf(...parts: (string | number)[]): number {
  let h = 0x811c9dc5;
  for (const ch of parts.join('\u0000')) {
    h ^= ch.charCodeAt(0);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

export type Mutation = (b: Uint8Array, r: Rng) => Uint8Array;

/** Values that break size and count fields: zero, one, sign bits, all ones, huge, NaN/Inf floats. */
const EXTREME_U32 = [0, 1, 0x7f, 0xff, 0xffff, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff, 0x20000000, 0x1fffffff];
const EXTREME_F32 = [Infinity, -Infinity, NaN, -1, 1e30, -0, 3.4e38, 2 ** 31, 0.5];

/** A position, biased to the first bytes (where headers are) half of the time. */
function position(b: Uint8Array, r: Rng): number {
  if (b.length === 0) return 0;
  return r.chance(0.5) ? r.int(Math.min(b.length, 256)) : r.int(b.length);
}

export const bitFlip: Mutation = (b, r) => {
  const out = b.slice();
  const n = 1 + r.int(8);
  for (let i = 0; i < n && out.length; i++) out[position(out, r)] ^= 1 << r.int(8);
  return out;
};

export const byteOverwrite: Mutation = (b, r) => {
  const out = b.slice();
  const n = 1 + r.int(16);
  const at = position(out, r);
  const fill = r.pick([0x00, 0xff, 0x7f, 0x80, -1]);
  for (let i = 0; i < n && at + i < out.length; i++) out[at + i] = fill < 0 ? r.int(256) : fill;
  return out;
};

export const truncate: Mutation = (b, r) => {
  const cut = r.chance(0.3) ? r.int(Math.min(b.length, 64)) : r.int(b.length);
  return b.slice(0, cut);
};

function chunk(b: Uint8Array, r: Rng): [number, number] {
  const start = position(b, r);
  const len = 1 + r.int(Math.max(1, Math.min(b.length - start, r.chance(0.5) ? 64 : 4096)));
  return [start, Math.min(b.length, start + len)];
}

export const chunkDuplicate: Mutation = (b, r) => {
  const [s, e] = chunk(b, r);
  const at = r.int(b.length + 1);
  const out = new Uint8Array(b.length + (e - s));
  out.set(b.subarray(0, at));
  out.set(b.subarray(s, e), at);
  out.set(b.subarray(at), at + (e - s));
  return out;
};

export const chunkDelete: Mutation = (b, r) => {
  const [s, e] = chunk(b, r);
  const out = new Uint8Array(b.length - (e - s));
  out.set(b.subarray(0, s));
  out.set(b.subarray(e), s);
  return out;
};

/** Writes an extreme 32-bit integer or float at an aligned position (header fields, lengths). */
export function extremeAt(b: Uint8Array, at: number, r: Rng, kinds: ('u32' | 'f32' | 'u64')[] = ['u32', 'f32', 'u64']): Uint8Array {
  const out = b.slice();
  const v = new DataView(out.buffer);
  const kind = r.pick(kinds);
  if (kind === 'u64' && at + 8 <= out.length) v.setBigUint64(at, r.pick([0n, 2n ** 63n - 1n, 2n ** 64n - 1n, 2n ** 53n, 2n ** 32n]), true);
  else if (kind === 'f32' && at + 4 <= out.length) v.setFloat32(at, r.pick(EXTREME_F32), true);
  else if (at + 4 <= out.length) v.setUint32(at, r.pick(EXTREME_U32), true);
  return out;
}

export const extremeField: Mutation = (b, r) => extremeAt(b, position(b, r) & ~3, r);

export const GENERIC: Mutation[] = [bitFlip, byteOverwrite, truncate, chunkDuplicate, chunkDelete, extremeField];

// ---- text --------------------------------------------------------------------------------------

const TEXT_TOKENS = ['0', '-1', '1e309', 'NaN', '', ' ', '\t', '\n', '\r\n', '#', '99999999999999999999', '4294967296', '1.5', 'x', '\u0000', '\ufffd', '"', '{', '}', '[', ']', ',', ':', 'null', 'true', '__proto__', 'constructor', 'toString'];

/** Line-level edits: drop, duplicate, swap lines; replace a token by an edge value. */
export const textEdit: Mutation = (b, r) => {
  const text = new TextDecoder().decode(b);
  const lines = text.split('\n');
  const i = r.int(lines.length);
  switch (r.int(4)) {
    case 0:
      lines.splice(i, 1);
      break;
    case 1:
      lines.splice(i, 0, lines[i] ?? '');
      break;
    case 2: {
      const j = r.int(lines.length);
      [lines[i], lines[j]] = [lines[j]!, lines[i]!];
      break;
    }
    default: {
      const words = (lines[i] ?? '').split(/(\s+|,)/);
      words[r.int(words.length)] = r.pick(TEXT_TOKENS);
      lines[i] = words.join('');
    }
  }
  return new TextEncoder().encode(lines.join('\n'));
};

// ---- pickle ------------------------------------------------------------------------------------

// Opcodes of protocols 0-5 (the ones that take arguments get random ones after them).
const PICKLE_OPS = [0x28, 0x2e, 0x30, 0x31, 0x32, 0x46, 0x49, 0x4a, 0x4b, 0x4d, 0x4c, 0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x58, 0x61, 0x62, 0x63, 0x64, 0x7d, 0x65, 0x67, 0x68, 0x69, 0x6a, 0x6c, 0x5d, 0x6f, 0x70, 0x71, 0x72, 0x73, 0x74, 0x29, 0x75, 0x47, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x8b, 0x42, 0x43, 0x8c, 0x8d, 0x8e, 0x8f, 0x90, 0x91, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98];
// Opcodes followed by a 4-byte (or 8-byte) length: BINSTRING, BINUNICODE, BINBYTES, LONG4, BINBYTES8, BINUNICODE8, FRAME, BYTEARRAY8.
const PICKLE_LEN4 = new Set([0x54, 0x58, 0x42, 0x8b]);
const PICKLE_LEN8 = new Set([0x8e, 0x8d, 0x95, 0x96]);

/** Replaces or inserts an opcode (with random argument bytes), or sets a length argument to an extreme. */
export const pickleOpcode: Mutation = (b, r) => {
  const choice = r.int(3);
  if (choice === 0) {
    // Length fields: find an opcode that carries one and break it.
    const starts: number[] = [];
    for (let i = 0; i < b.length - 9 && starts.length < 4096; i++) if (PICKLE_LEN4.has(b[i]!) || PICKLE_LEN8.has(b[i]!)) starts.push(i);
    if (starts.length) {
      const at = r.pick(starts);
      return extremeAt(b, at + 1, r, PICKLE_LEN8.has(b[at]!) ? ['u64', 'u32'] : ['u32']);
    }
  }
  const at = r.int(b.length + 1);
  const op = Uint8Array.from([r.pick(PICKLE_OPS), ...Array.from({ length: r.int(5) }, () => r.int(256))]);
  // choice 1 replaces the bytes there, otherwise the opcode is inserted.
  const tail = b.subarray(choice === 1 ? Math.min(b.length, at + op.length) : at);
  const out = new Uint8Array(at + op.length + tail.length);
  out.set(b.subarray(0, at));
  out.set(op, at);
  out.set(tail, at + op.length);
  return out;
};

// ---- zip ---------------------------------------------------------------------------------------

/** Byte offsets of local headers, central directory entries and the end record of a zip. */
function zipHeaders(b: Uint8Array): { local: number[]; central: number[]; eocd: number } {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const local: number[] = [];
  const central: number[] = [];
  let eocd = -1;
  for (let i = b.length - 22; i >= 0 && i >= b.length - 66000; i--) {
    if (v.getUint32(i, true) === 0x06054b50) {
      eocd = i;
      break;
    }
  }
  if (eocd >= 0) {
    const n = v.getUint16(eocd + 10, true);
    let p = v.getUint32(eocd + 16, true);
    for (let k = 0; k < n && p + 46 <= b.length && v.getUint32(p, true) === 0x02014b50; k++) {
      central.push(p);
      local.push(v.getUint32(p + 42, true));
      p += 46 + v.getUint16(p + 28, true) + v.getUint16(p + 30, true) + v.getUint16(p + 32, true);
    }
  }
  return { local, central, eocd };
}

/** Breaks one field of a zip's structure (sizes, offsets, name lengths, method, entry count). */
export const zipField: Mutation = (b, r) => {
  const { local, central, eocd } = zipHeaders(b);
  const fields: number[] = [];
  for (const p of local) fields.push(p + 8, p + 18, p + 22, p + 26, p + 28);
  for (const p of central) fields.push(p + 10, p + 20, p + 24, p + 28, p + 30, p + 42);
  if (eocd >= 0) fields.push(eocd + 8, eocd + 10, eocd + 12, eocd + 16, eocd + 20);
  if (!fields.length) return bitFlip(b, r);
  const at = r.pick(fields);
  const out = b.slice();
  const v = new DataView(out.buffer);
  // 2-byte fields (method, name/extra lengths, counts) and 4-byte ones (sizes, offsets).
  const two = [8, 26, 28, 10, 28, 30].includes(at - (local.find((p) => at - p < 46 && at >= p) ?? central.find((p) => at - p < 46 && at >= p) ?? eocd));
  if (two || at === eocd + 8 || at === eocd + 10 || at === eocd + 20) v.setUint16(at, r.pick([0, 1, 8, 0xff, 0x7fff, 0xffff]), true);
  else if (at + 4 <= out.length) v.setUint32(at, r.pick(EXTREME_U32), true);
  return out;
};

/** Entry-level edits of a zip: mutate one entry's content, drop, duplicate under another name, rename. */
export function zipEntries(inner: (name: string, data: Uint8Array, r: Rng) => Uint8Array): Mutation {
  return (b, r) => {
    let entries: Record<string, Uint8Array>;
    try {
      entries = unzipSync(b);
    } catch {
      return bitFlip(b, r);
    }
    const names = Object.keys(entries);
    const name = r.pick(names);
    const out: Zippable = {};
    const op = r.int(10);
    for (const n of names) {
      if (n !== name) out[n] = [entries[n]!, { level: 0 }];
      else if (op < 6) out[n] = [inner(n, entries[n]!, r), { level: 0 }];
      else if (op === 6) continue; // dropped
      else if (op === 7) out[n.replace(/[^/]*$/, 'x' + r.int(10))] = [entries[n]!, { level: 0 }];
      else if (op === 8) {
        out[n] = [entries[n]!, { level: 0 }];
        out[r.pick(names).replace(/[^/]*$/, String(r.int(300)))] = [entries[n]!, { level: 0 }];
      } else out[n] = [entries[n]!, { level: r.pick([0, 6]) as 0 | 6 }];
    }
    return zipSync(out);
  };
}

// ---- protobuf ----------------------------------------------------------------------------------

interface PbField {
  tag: number;
  wire: number;
  /** varint (wire 0), fixed (1, 5) or bytes (2) as a raw slice. */
  value: bigint | Uint8Array;
  /** Parsed sub-message when the bytes parse as one. */
  sub?: PbField[];
}

function readVarint(b: Uint8Array, p: number): [bigint, number] | null {
  let v = 0n;
  for (let s = 0n; s < 70n; s += 7n) {
    if (p >= b.length) return null;
    const x = b[p++]!;
    v |= BigInt(x & 0x7f) << s;
    if (!(x & 0x80)) return [v, p];
  }
  return null;
}

/** Parses a protobuf message loosely; bytes fields that parse as messages get `sub` (to depth 8). */
function parsePb(b: Uint8Array, depth: number): PbField[] | null {
  const out: PbField[] = [];
  let p = 0;
  while (p < b.length) {
    const t = readVarint(b, p);
    if (!t) return null;
    p = t[1];
    const tag = Number(t[0] >> 3n);
    const wire = Number(t[0] & 7n);
    if (tag === 0) return null;
    if (wire === 0) {
      const v = readVarint(b, p);
      if (!v) return null;
      out.push({ tag, wire, value: v[0] });
      p = v[1];
    } else if (wire === 1 || wire === 5) {
      const n = wire === 1 ? 8 : 4;
      if (p + n > b.length) return null;
      out.push({ tag, wire, value: b.subarray(p, p + n) });
      p += n;
    } else if (wire === 2) {
      const l = readVarint(b, p);
      if (!l || l[1] + Number(l[0]) > b.length) return null;
      const data = b.subarray(l[1], l[1] + Number(l[0]));
      p = l[1] + Number(l[0]);
      const f: PbField = { tag, wire, value: data };
      // Raw tensor data is big and not a message: only small fields are tried.
      if (depth < 8 && data.length > 0 && data.length < 65536) {
        const sub = parsePb(data, depth + 1);
        if (sub && sub.length) f.sub = sub;
      }
      out.push(f);
    } else {
      return null;
    }
  }
  return out;
}

function varint(v: bigint): number[] {
  const out: number[] = [];
  let x = BigInt.asUintN(64, v);
  do {
    let byte = Number(x & 0x7fn);
    x >>= 7n;
    if (x) byte |= 0x80;
    out.push(byte);
  } while (x);
  return out;
}

function encodePb(fields: PbField[]): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const f of fields) {
    parts.push(Uint8Array.from(varint(BigInt((f.tag << 3) | f.wire))));
    if (f.wire === 0) parts.push(Uint8Array.from(varint(f.value as bigint)));
    else if (f.wire === 2) {
      const data = f.sub ? encodePb(f.sub) : (f.value as Uint8Array);
      parts.push(Uint8Array.from(varint(BigInt(data.length))), data);
    } else parts.push(f.value as Uint8Array);
  }
  const n = parts.reduce((a, p) => a + p.length, 0);
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

function allFields(fields: PbField[], acc: { f: PbField; parent: PbField[] }[] = []): { f: PbField; parent: PbField[] }[] {
  for (const f of fields) {
    acc.push({ f, parent: fields });
    if (f.sub) allFields(f.sub, acc);
  }
  return acc;
}

const EXTREME_VARINTS = [0n, 1n, 2n, 3n, 7n, 10n, 0x7fn, 0x7fffffffn, 0xffffffffn, 2n ** 53n, 2n ** 63n - 1n, -1n, -2n, 100n, 1000000n];

/**
 * Structure-aware protobuf edits, re-encoded with consistent lengths (so the file still decodes and the
 * importer sees the semantic damage): a varint set to an extreme, a field dropped or duplicated, a
 * message's fields shuffled. With `raw`, a length varint is broken in place instead.
 */
export const protobufVarint: Mutation = (b, r) => {
  const root = parsePb(b, 0);
  if (!root) return bitFlip(b, r);
  const all = allFields(root);
  const op = r.int(10);
  if (op < 6) {
    const varints = all.filter((x) => x.f.wire === 0);
    if (!varints.length) return bitFlip(b, r);
    const { f } = r.pick(varints);
    f.value = r.chance(0.7) ? r.pick(EXTREME_VARINTS) : (f.value as bigint) + BigInt(r.int(5) - 2);
  } else if (op < 8) {
    const { f, parent } = r.pick(all);
    const i = parent.indexOf(f);
    if (op === 6) parent.splice(i, 1);
    else parent.splice(i, 0, { ...f });
  } else if (op === 8) {
    // A field's wire type or tag changed (a type confusion the decoder may or may not catch).
    const { f } = r.pick(all);
    f.tag = r.chance(0.5) ? f.tag + 1 : 1 + r.int(20);
  } else {
    const { f } = r.pick(all.filter((x) => x.f.wire === 2));
    if (f.sub) delete f.sub;
    f.value = (f.value as Uint8Array).slice(0, r.int((f.value as Uint8Array).length + 1));
  }
  return encodePb(root);
};

/** Applies one mutation picked from `list` (sometimes two in a row). */
export function mutate(b: Uint8Array, r: Rng, list: readonly Mutation[]): { bytes: Uint8Array; names: string[] } {
  const names: string[] = [];
  let out = b;
  const rounds = r.chance(0.2) ? 2 : 1;
  for (let i = 0; i < rounds; i++) {
    const m = r.pick(list);
    names.push(m.name || 'anon');
    out = m(out, r);
  }
  return { bytes: out, names };
}
