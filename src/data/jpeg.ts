// JPEG decoding on the hot path: libjpeg-turbo compiled to WebAssembly (@cwasm/jpeg-turbo's .wasm),
// synchronous, so it runs inside worker threads. Bound here directly rather than through the package's
// `decode()` to get RGB (not RGBA) output into reused buffers, and to recover from libjpeg's longjmp:
// the package stubs longjmp with a JS throw, which leaves the module's stack unbalanced, so after any
// throw we start a fresh instance instead of reusing the damaged one.
import fs from 'node:fs';
import { createRequire } from 'node:module';

const TJPF_RGB = 0;
const require = createRequire(import.meta.url);

interface TurboExports {
  memory: WebAssembly.Memory;
  malloc(n: number): number;
  free(p: number): void;
  tjInitDecompress(): number;
  tjDestroy(h: number): number;
  tjDecompressHeader3(h: number, src: number, len: number, w: number, hgt: number, subsamp: number, cs: number): number;
  tjDecompress2(h: number, src: number, len: number, dst: number, w: number, pitch: number, hgt: number, pf: number, flags: number): number;
}

let wasmModule: WebAssembly.Module | null = null;

class LongJmp extends Error {}

const imports = {
  env: {
    setjmp: () => 0,
    longjmp: () => {
      throw new LongJmp('libjpeg error');
    },
  },
  wasi_snapshot_preview1: {
    environ_sizes_get: () => 0,
    environ_get: () => 0,
    proc_exit: () => {
      throw new LongJmp('proc_exit');
    },
    fd_close: () => 0,
    fd_seek: () => 0,
    fd_write: () => 0,
  },
};

/** One wasm instance with a decompressor handle and grow-only input/output buffers. */
class Turbo {
  readonly x: TurboExports;
  readonly handle: number;
  private meta: number;
  private inPtr = 0;
  private inCap = 0;
  private outPtr = 0;
  private outCap = 0;

  constructor() {
    wasmModule ??= new WebAssembly.Module(fs.readFileSync(require.resolve('@cwasm/jpeg-turbo/jpeg-turbo.wasm')));
    this.x = new WebAssembly.Instance(wasmModule, imports).exports as unknown as TurboExports;
    this.handle = this.x.tjInitDecompress();
    if (!this.handle) throw new Error('libjpeg-turbo: cannot allocate a decompressor');
    this.meta = this.x.malloc(16);
  }

  input(bytes: Uint8Array): number {
    if (bytes.length > this.inCap) {
      if (this.inPtr) this.x.free(this.inPtr);
      this.inCap = Math.max(bytes.length, 2 * this.inCap, 65536);
      this.inPtr = this.x.malloc(this.inCap);
      if (!this.inPtr) throw new Error('libjpeg-turbo: out of memory');
    }
    new Uint8Array(this.x.memory.buffer, this.inPtr, bytes.length).set(bytes);
    return this.inPtr;
  }

  output(n: number): number {
    if (n > this.outCap) {
      if (this.outPtr) this.x.free(this.outPtr);
      this.outCap = Math.max(n, 2 * this.outCap);
      this.outPtr = this.x.malloc(this.outCap);
      if (!this.outPtr) throw new Error('libjpeg-turbo: out of memory');
    }
    return this.outPtr;
  }

  get metaPtr(): number {
    return this.meta;
  }
}

let turbo: Turbo | null = null;

export interface RgbImage {
  /** Interleaved RGB, row-major, width*height*3 bytes. */
  data: Uint8Array;
  width: number;
  height: number;
}

/** Thrown when bytes cannot be decoded; callers add the file or key. */
export class JpegDecodeError extends Error {
  override name = 'JpegDecodeError';
}

/** True if the bytes start with a JPEG SOI marker. */
export function isJpeg(b: Uint8Array): boolean {
  return b.length > 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff;
}

/**
 * Decodes a JPEG to RGB with libjpeg-turbo. Strict: any libjpeg warning (truncated data, bad Huffman code)
 * is a failure too; callers that want libvips' leniency fall back to sharp.
 * `into`, when given and large enough, receives the pixels (no allocation).
 */
export function decodeJpeg(bytes: Uint8Array, into?: Uint8Array): RgbImage {
  if (!isJpeg(bytes)) throw new JpegDecodeError('not a JPEG (no SOI marker)');
  turbo ??= new Turbo();
  const t = turbo;
  try {
    const src = t.input(bytes);
    const m = t.metaPtr;
    if (t.x.tjDecompressHeader3(t.handle, src, bytes.length, m, m + 4, m + 8, m + 12) !== 0) {
      throw new JpegDecodeError('cannot read the JPEG header');
    }
    const meta = new Int32Array(t.x.memory.buffer, m, 2);
    const width = meta[0];
    const height = meta[1];
    if (width <= 0 || height <= 0 || width * height > 1 << 28) throw new JpegDecodeError(`implausible JPEG size ${width}x${height}`);
    const n = width * height * 3;
    const dst = t.output(n);
    if (t.x.tjDecompress2(t.handle, src, bytes.length, dst, width, width * 3, height, TJPF_RGB, 0) !== 0) {
      throw new JpegDecodeError('corrupt JPEG data');
    }
    const data = into && into.length >= n ? into.subarray(0, n) : new Uint8Array(n);
    data.set(new Uint8Array(t.x.memory.buffer, dst, n));
    return { data, width, height };
  } catch (e) {
    if (e instanceof JpegDecodeError) throw e;
    // A longjmp (or a wasm trap) unwound through the module: its stack pointer is lost, so drop the instance.
    turbo = null;
    throw new JpegDecodeError(e instanceof LongJmp ? 'corrupt JPEG data' : `JPEG decoder failure: ${(e as Error).message}`);
  }
}

/** Width and height from a JPEG's SOF marker without decoding; null if not found. */
export function jpegSize(b: Uint8Array): { width: number; height: number } | null {
  if (!isJpeg(b)) return null;
  let i = 2;
  while (i + 9 < b.length) {
    if (b[i] !== 0xff) return null;
    const marker = b[i + 1];
    if (marker === 0xff) {
      i++;
      continue;
    }
    const len = (b[i + 2] << 8) | b[i + 3];
    // SOF0..SOF15 except DHT (c4), JPG (c8), DAC (cc)
    if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) {
      return { height: (b[i + 5] << 8) | b[i + 6], width: (b[i + 7] << 8) | b[i + 8] };
    }
    if (marker === 0xd9 || marker === 0xda) return null;
    i += 2 + len;
  }
  return null;
}
