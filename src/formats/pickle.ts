// Python pickle reading and writing, for insightface's `.bin` verification sets (Python 2 protocol 2 up to
// protocol 5) and torch.save's `data.pkl`. Values map to plain JS: bytes -> Uint8Array, str -> string,
// list/tuple -> Array, dict -> Map, int -> number (bigint beyond 2^53), True/False -> boolean, None -> null.
// Classes go through a `findClass` hook; unknown ones become PickleObject records rather than errors, so a
// caller can decide what a foreign class means.

/** A class or function named by GLOBAL / STACK_GLOBAL, not yet called. */
export class PickleGlobal {
  constructor(readonly module: string, readonly name: string) {}
  get qualname(): string {
    return `${this.module}.${this.name}`;
  }
}

/** An instance of a class that no hook knew: what REDUCE/NEWOBJ/BUILD gave it, kept for the caller. */
export class PickleObject {
  state: unknown = undefined;
  readonly items = new Map<unknown, unknown>();
  readonly listItems: unknown[] = [];
  constructor(readonly cls: PickleGlobal, readonly args: unknown[]) {}
}

/** A Python tuple, for writing (reading gives plain arrays). */
export class PyTuple {
  constructor(readonly items: unknown[]) {}
}
/** A float that must stay a float when written even if it has no fraction. */
export class PyFloat {
  constructor(readonly value: number) {}
}
/** `callable(*args)` for writing. */
export class PyReduce {
  constructor(
    readonly callable: PickleGlobal,
    readonly args: unknown[],
    readonly state?: unknown,
    /** Key/value pairs added after construction (SETITEMS), as an OrderedDict is pickled. */
    readonly dictItems?: Map<unknown, unknown>,
  ) {}
}
/** A persistent id for writing (BINPERSID), as torch.save uses for tensor storages. */
export class PyPersistentId {
  constructor(readonly id: unknown) {}
}

export interface UnpickleOptions {
  /** Resolves a global to a callable; return undefined to keep it as a PickleGlobal. */
  findClass?: (module: string, name: string) => ((...args: unknown[]) => unknown) | undefined;
  /** Resolves a persistent id (PERSID / BINPERSID). Without it, such a pickle is an error. */
  persistentLoad?: (pid: unknown) => unknown;
}

export class PickleError extends Error {
  constructor(message: string, readonly offset: number) {
    super(`${message} (pickle byte ${offset})`);
    this.name = 'PickleError';
  }
}

const MARK = Symbol('mark');
type Callable = (...args: unknown[]) => unknown;

function builtinClass(module: string, name: string): Callable | undefined {
  const qual = `${module}.${name}`;
  switch (qual) {
    case 'collections.OrderedDict':
    case 'builtins.dict':
    case '__builtin__.dict':
      return () => new Map();
    case 'builtins.set':
    case '__builtin__.set':
    case 'builtins.frozenset':
      return (items?: unknown) => new Set(Array.isArray(items) ? items : []);
    case 'builtins.list':
    case '__builtin__.list':
      return (items?: unknown) => (Array.isArray(items) ? [...items] : []);
    case '_codecs.encode':
      // Python 3 pickles py2-incompatible bytes at protocol 2 as _codecs.encode(str, 'latin1').
      return (s: unknown, enc: unknown) => {
        if (typeof s !== 'string') throw new Error('_codecs.encode expects a string');
        if (enc !== 'latin1' && enc !== 'latin-1') return new TextEncoder().encode(s);
        const out = new Uint8Array(s.length);
        for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i) & 0xff;
        return out;
      };
    case 'builtins.bytearray':
    case '__builtin__.bytearray':
      return (v?: unknown) => (v instanceof Uint8Array ? v : new Uint8Array(0));
    default:
      return undefined;
  }
}

class Reader {
  pos = 0;
  private readonly view: DataView;
  constructor(readonly buf: Uint8Array) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }
  need(n: number): void {
    if (this.pos + n > this.buf.length) {
      throw new PickleError(`truncated: needs ${n} more bytes, ${this.buf.length - this.pos} left`, this.pos);
    }
  }
  u8(): number {
    this.need(1);
    return this.buf[this.pos++]!;
  }
  u16(): number {
    this.need(2);
    const v = this.view.getUint16(this.pos, true);
    this.pos += 2;
    return v;
  }
  u32(): number {
    this.need(4);
    const v = this.view.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }
  i32(): number {
    this.need(4);
    const v = this.view.getInt32(this.pos, true);
    this.pos += 4;
    return v;
  }
  u64(): number {
    this.need(8);
    const v = this.view.getBigUint64(this.pos, true);
    this.pos += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new PickleError('length too large', this.pos - 8);
    return Number(v);
  }
  f64be(): number {
    this.need(8);
    const v = this.view.getFloat64(this.pos, false);
    this.pos += 8;
    return v;
  }
  bytes(n: number): Uint8Array {
    this.need(n);
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }
  line(): string {
    const end = this.buf.indexOf(0x0a, this.pos);
    if (end < 0) throw new PickleError('truncated: no end of line', this.pos);
    const s = latin1(this.buf.subarray(this.pos, end));
    this.pos = end + 1;
    return s;
  }
}

function latin1(b: Uint8Array): string {
  let s = '';
  for (let i = 0; i < b.length; i += 8192) s += String.fromCharCode(...b.subarray(i, i + 8192));
  return s;
}
const utf8 = new TextDecoder('utf-8');

function decodeLong(b: Uint8Array): number | bigint {
  if (b.length === 0) return 0;
  let v = 0n;
  for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]!);
  if (b[b.length - 1]! & 0x80) v -= 1n << BigInt(8 * b.length);
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

/** Parses one pickle. Throws PickleError (with the byte offset) on malformed or unsupported input. */
export function unpickle(buf: Uint8Array, opts: UnpickleOptions = {}): unknown {
  const r = new Reader(buf);
  const stack: unknown[] = [];
  const marks: number[] = [];
  const memo = new Map<number, unknown>();

  const pop = (): unknown => {
    if (stack.length === 0 || (marks.length && stack.length <= marks[marks.length - 1]!)) {
      throw new PickleError('stack underflow', r.pos);
    }
    return stack.pop();
  };
  const popMark = (): unknown[] => {
    const m = marks.pop();
    if (m === undefined) throw new PickleError('MARK expected', r.pos);
    return stack.splice(m);
  };
  const top = (): unknown => {
    if (stack.length === 0) throw new PickleError('stack empty', r.pos);
    return stack[stack.length - 1];
  };
  const resolve = (module: string, name: string): unknown =>
    opts.findClass?.(module, name) ?? builtinClass(module, name) ?? new PickleGlobal(module, name);
  const call = (fn: unknown, args: unknown[]): unknown => {
    if (typeof fn === 'function') return (fn as Callable)(...args);
    if (fn instanceof PickleGlobal) return new PickleObject(fn, args);
    throw new PickleError(`cannot call ${typeof fn}`, r.pos);
  };
  const setItems = (target: unknown, kv: unknown[]): void => {
    const dict = target instanceof Map ? target : target instanceof PickleObject ? target.items : undefined;
    if (!dict) throw new PickleError('SETITEM(S) on a non-dict', r.pos);
    for (let i = 0; i + 1 < kv.length; i += 2) dict.set(kv[i], kv[i + 1]);
  };
  const appendItems = (target: unknown, items: unknown[]): void => {
    if (Array.isArray(target)) target.push(...items);
    else if (target instanceof Set) items.forEach((v) => target.add(v));
    else if (target instanceof PickleObject) target.listItems.push(...items);
    else throw new PickleError('APPEND(S) on a non-list', r.pos);
  };

  for (;;) {
    const at = r.pos;
    const op = r.u8();
    switch (op) {
      case 0x80: // PROTO
        r.u8();
        break;
      case 0x95: // FRAME
        r.u64();
        break;
      case 0x2e: // STOP
        if (stack.length !== 1) throw new PickleError(`STOP with ${stack.length} values on the stack`, at);
        return stack[0];
      case 0x28: // MARK
        marks.push(stack.length);
        break;
      case 0x30: // POP
        pop();
        break;
      case 0x31: // POP_MARK
        popMark();
        break;
      case 0x32: // DUP
        stack.push(top());
        break;
      case 0x4e: // NONE
        stack.push(null);
        break;
      case 0x88: // NEWTRUE
        stack.push(true);
        break;
      case 0x89: // NEWFALSE
        stack.push(false);
        break;
      case 0x49: {
        // INT (text); protocol 0 spells booleans 01 / 00
        const s = r.line();
        stack.push(s === '01' ? true : s === '00' ? false : Number.parseInt(s, 10));
        break;
      }
      case 0x4a: // BININT
        stack.push(r.i32());
        break;
      case 0x4b: // BININT1
        stack.push(r.u8());
        break;
      case 0x4d: // BININT2
        stack.push(r.u16());
        break;
      case 0x4c: {
        // LONG (text, trailing L)
        const s = r.line().replace(/L$/, '');
        const v = BigInt(s);
        stack.push(v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v);
        break;
      }
      case 0x8a: // LONG1
        stack.push(decodeLong(r.bytes(r.u8())));
        break;
      case 0x8b: // LONG4
        stack.push(decodeLong(r.bytes(r.i32())));
        break;
      case 0x46: // FLOAT (text)
        stack.push(Number.parseFloat(r.line()));
        break;
      case 0x47: // BINFLOAT (big-endian)
        stack.push(r.f64be());
        break;
      case 0x53: {
        // STRING (text repr, py2 str): only the simple quoted forms are needed in practice
        const s = r.line();
        const q = s[0];
        if ((q !== "'" && q !== '"') || s[s.length - 1] !== q) throw new PickleError('bad STRING literal', at);
        const body = s.slice(1, -1).replace(/\\x([0-9a-fA-F]{2})|\\(.)/g, (_m, hex: string | undefined, ch: string) =>
          hex ? String.fromCharCode(Number.parseInt(hex, 16)) : ch === 'n' ? '\n' : ch === 't' ? '\t' : ch === 'r' ? '\r' : ch,
        );
        const out = new Uint8Array(body.length);
        for (let i = 0; i < body.length; i++) out[i] = body.charCodeAt(i) & 0xff;
        stack.push(out);
        break;
      }
      case 0x54: {
        // BINSTRING (py2 str): raw bytes
        const n = r.i32();
        if (n < 0) throw new PickleError('negative BINSTRING length', at);
        stack.push(r.bytes(n));
        break;
      }
      case 0x55: // SHORT_BINSTRING
        stack.push(r.bytes(r.u8()));
        break;
      case 0x42: // BINBYTES
        stack.push(r.bytes(r.u32()));
        break;
      case 0x43: // SHORT_BINBYTES
        stack.push(r.bytes(r.u8()));
        break;
      case 0x8e: // BINBYTES8
      case 0x96: // BYTEARRAY8
        stack.push(r.bytes(r.u64()));
        break;
      case 0x56: // UNICODE (raw-unicode-escape text)
        stack.push(r.line().replace(/\\u([0-9a-fA-F]{4})/g, (_m, h: string) => String.fromCharCode(Number.parseInt(h, 16))));
        break;
      case 0x58: // BINUNICODE
        stack.push(utf8.decode(r.bytes(r.u32())));
        break;
      case 0x8c: // SHORT_BINUNICODE
        stack.push(utf8.decode(r.bytes(r.u8())));
        break;
      case 0x8d: // BINUNICODE8
        stack.push(utf8.decode(r.bytes(r.u64())));
        break;
      case 0x5d: // EMPTY_LIST
        stack.push([]);
        break;
      case 0x6c: // LIST
        stack.push(popMark());
        break;
      case 0x61: {
        // APPEND
        const v = pop();
        appendItems(top(), [v]);
        break;
      }
      case 0x65: {
        // APPENDS
        const items = popMark();
        appendItems(top(), items);
        break;
      }
      case 0x29: // EMPTY_TUPLE
        stack.push([]);
        break;
      case 0x74: // TUPLE
        stack.push(popMark());
        break;
      case 0x85: // TUPLE1
        stack.push([pop()]);
        break;
      case 0x86: {
        // TUPLE2
        const b = pop();
        const a = pop();
        stack.push([a, b]);
        break;
      }
      case 0x87: {
        // TUPLE3
        const c = pop();
        const b = pop();
        const a = pop();
        stack.push([a, b, c]);
        break;
      }
      case 0x7d: // EMPTY_DICT
        stack.push(new Map());
        break;
      case 0x64: {
        // DICT
        const m = new Map();
        setItems(m, popMark());
        stack.push(m);
        break;
      }
      case 0x73: {
        // SETITEM
        const v = pop();
        const k = pop();
        setItems(top(), [k, v]);
        break;
      }
      case 0x75: {
        // SETITEMS
        const kv = popMark();
        setItems(top(), kv);
        break;
      }
      case 0x8f: // EMPTY_SET
        stack.push(new Set());
        break;
      case 0x90: {
        // ADDITEMS
        const items = popMark();
        appendItems(top(), items);
        break;
      }
      case 0x91: // FROZENSET
        stack.push(new Set(popMark()));
        break;
      case 0x67: // GET
        stack.push(memoGet(memo, Number.parseInt(r.line(), 10), at));
        break;
      case 0x68: // BINGET
        stack.push(memoGet(memo, r.u8(), at));
        break;
      case 0x6a: // LONG_BINGET
        stack.push(memoGet(memo, r.u32(), at));
        break;
      case 0x70: // PUT
        memo.set(Number.parseInt(r.line(), 10), top());
        break;
      case 0x71: // BINPUT
        memo.set(r.u8(), top());
        break;
      case 0x72: // LONG_BINPUT
        memo.set(r.u32(), top());
        break;
      case 0x94: // MEMOIZE
        memo.set(memo.size, top());
        break;
      case 0x63: {
        // GLOBAL
        const module = r.line();
        const name = r.line();
        stack.push(resolve(module, name));
        break;
      }
      case 0x93: {
        // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') throw new PickleError('STACK_GLOBAL needs strings', at);
        stack.push(resolve(module, name));
        break;
      }
      case 0x52: {
        // REDUCE
        const args = pop();
        const fn = pop();
        stack.push(call(fn, Array.isArray(args) ? args : [args]));
        break;
      }
      case 0x81: {
        // NEWOBJ
        const args = pop();
        const cls = pop();
        stack.push(call(cls, Array.isArray(args) ? args : [args]));
        break;
      }
      case 0x92: {
        // NEWOBJ_EX
        pop(); // kwargs
        const args = pop();
        const cls = pop();
        stack.push(call(cls, Array.isArray(args) ? args : [args]));
        break;
      }
      case 0x69: {
        // INST
        const module = r.line();
        const name = r.line();
        stack.push(call(resolve(module, name), popMark()));
        break;
      }
      case 0x6f: {
        // OBJ
        const items = popMark();
        const cls = items.shift();
        stack.push(call(cls, items));
        break;
      }
      case 0x62: {
        // BUILD: set state; objects we model natively (Map, arrays) ignore it
        const state = pop();
        const obj = top();
        if (obj instanceof PickleObject) obj.state = state;
        else if (obj && typeof obj === 'object' && 'setState' in obj && typeof obj.setState === 'function') obj.setState(state);
        break;
      }
      case 0x50: // PERSID
      case 0x51: {
        // BINPERSID
        const pid = op === 0x50 ? r.line() : pop();
        if (!opts.persistentLoad) throw new PickleError('persistent id found but no persistentLoad given', at);
        stack.push(opts.persistentLoad(pid));
        break;
      }
      default:
        throw new PickleError(`unsupported opcode 0x${op.toString(16).padStart(2, '0')}`, at);
    }
  }
}

function memoGet(memo: Map<number, unknown>, k: number, at: number): unknown {
  if (!memo.has(k)) throw new PickleError(`memo key ${k} missing`, at);
  return memo.get(k);
}

// ---------------------------------------------------------------------------------------------------------
// Writing

class Writer {
  private chunks: Uint8Array[] = [];
  private cur = new Uint8Array(1 << 16);
  private n = 0;
  private ensure(k: number): void {
    if (this.n + k <= this.cur.length) return;
    this.chunks.push(this.cur.subarray(0, this.n));
    this.cur = new Uint8Array(Math.max(1 << 16, k));
    this.n = 0;
  }
  byte(b: number): void {
    this.ensure(1);
    this.cur[this.n++] = b;
  }
  u16(v: number): void {
    this.ensure(2);
    new DataView(this.cur.buffer).setUint16(this.n, v, true);
    this.n += 2;
  }
  i32(v: number): void {
    this.ensure(4);
    new DataView(this.cur.buffer).setInt32(this.n, v, true);
    this.n += 4;
  }
  f64be(v: number): void {
    this.ensure(8);
    new DataView(this.cur.buffer).setFloat64(this.n, v, false);
    this.n += 8;
  }
  raw(b: Uint8Array): void {
    if (b.length > 1 << 16) {
      this.chunks.push(this.cur.subarray(0, this.n), b);
      this.cur = new Uint8Array(1 << 16);
      this.n = 0;
      return;
    }
    this.ensure(b.length);
    this.cur.set(b, this.n);
    this.n += b.length;
  }
  ascii(s: string): void {
    const b = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) b[i] = s.charCodeAt(i);
    this.raw(b);
  }
  finish(): Uint8Array {
    this.chunks.push(this.cur.subarray(0, this.n));
    const total = this.chunks.reduce((a, c) => a + c.length, 0);
    const out = new Uint8Array(total);
    let o = 0;
    for (const c of this.chunks) {
      out.set(c, o);
      o += c.length;
    }
    return out;
  }
}

export interface PickleOptions {
  /** 2 (default; what Python 2 reads, and what insightface's .bin files use) up to 4. */
  protocol?: 2 | 3 | 4;
}

/**
 * Serialises a value. Uint8Array is written as a py2 `str` (BINSTRING) at protocol 2 and as `bytes`
 * (BINBYTES) at protocol >= 3; arrays are lists (use PyTuple for tuples), Map is a dict.
 */
export function pickle(value: unknown, opts: PickleOptions = {}): Uint8Array {
  const protocol = opts.protocol ?? 2;
  const w = new Writer();
  w.byte(0x80);
  w.byte(protocol);
  const enc = new TextEncoder();

  const write = (v: unknown): void => {
    if (v === null || v === undefined) return w.byte(0x4e);
    if (v === true) return w.byte(0x88);
    if (v === false) return w.byte(0x89);
    if (typeof v === 'number') {
      if (Number.isInteger(v) && v >= -(2 ** 31) && v < 2 ** 31) {
        if (v >= 0 && v < 256) {
          w.byte(0x4b);
          w.byte(v);
        } else if (v >= 0 && v < 65536) {
          w.byte(0x4d);
          w.u16(v);
        } else {
          w.byte(0x4a);
          w.i32(v);
        }
        return;
      }
      if (Number.isInteger(v)) return write(BigInt(v));
      w.byte(0x47);
      return w.f64be(v);
    }
    if (typeof v === 'bigint') {
      const bytes: number[] = [];
      let x = v;
      for (;;) {
        bytes.push(Number(x & 0xffn));
        x >>= 8n;
        const sign = bytes[bytes.length - 1]! & 0x80;
        if ((x === 0n && !sign) || (x === -1n && sign)) break;
      }
      w.byte(0x8a);
      w.byte(bytes.length);
      return w.raw(Uint8Array.from(bytes));
    }
    if (v instanceof PyFloat) {
      w.byte(0x47);
      return w.f64be(v.value);
    }
    if (typeof v === 'string') {
      const b = enc.encode(v);
      w.byte(0x58);
      w.i32(b.length);
      return w.raw(b);
    }
    if (v instanceof Uint8Array) {
      if (v.length < 256) {
        w.byte(protocol >= 3 ? 0x43 : 0x55);
        w.byte(v.length);
      } else {
        w.byte(protocol >= 3 ? 0x42 : 0x54);
        w.i32(v.length);
      }
      return w.raw(v);
    }
    if (Array.isArray(v)) {
      w.byte(0x5d);
      for (let i = 0; i < v.length; i += 1000) {
        w.byte(0x28);
        for (const item of v.slice(i, i + 1000)) write(item);
        w.byte(0x65);
      }
      return;
    }
    if (v instanceof PyTuple) {
      const n = v.items.length;
      if (n === 0) return w.byte(0x29);
      if (n <= 3) {
        v.items.forEach(write);
        return w.byte([0x85, 0x86, 0x87][n - 1]!);
      }
      w.byte(0x28);
      v.items.forEach(write);
      return w.byte(0x74);
    }
    if (v instanceof Map) {
      w.byte(0x7d);
      if (v.size === 0) return;
      w.byte(0x28);
      for (const [k, x] of v) {
        write(k);
        write(x);
      }
      return w.byte(0x75);
    }
    if (v instanceof PickleGlobal) {
      w.byte(0x63);
      return w.ascii(`${v.module}\n${v.name}\n`);
    }
    if (v instanceof PyReduce) {
      write(v.callable);
      write(new PyTuple(v.args));
      w.byte(0x52);
      if (v.dictItems?.size) {
        w.byte(0x28);
        for (const [k, x] of v.dictItems) {
          write(k);
          write(x);
        }
        w.byte(0x75);
      }
      if (v.state !== undefined) {
        write(v.state);
        w.byte(0x62);
      }
      return;
    }
    if (v instanceof PyPersistentId) {
      write(v.id);
      return w.byte(0x51);
    }
    throw new Error(`pickle: cannot serialise ${Object.prototype.toString.call(v)}`);
  };

  write(value);
  w.byte(0x2e);
  return w.finish();
}
