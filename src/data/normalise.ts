// RGB uint8 -> float32 (x/255 - 0.5)/0.5, optionally flipped left-right, written into an NHWC batch.
// The table reproduces torchvision's ToTensor + Normalize(0.5, 0.5) in float32 step by step, so values
// are bit-identical to the PyTorch pipeline's. The hot path runs the same arithmetic in WebAssembly SIMD
// (simd-kernel.ts), about 4x faster than the JS loop, and is checked against the table when loaded.
import { loadSimdKernel, type SimdKernel } from './simd-kernel.ts';

/** NORMALISE[v] = float32((float32(v / 255) - 0.5) / 0.5). */
export const NORMALISE: Float32Array = (() => {
  const t = new Float32Array(256);
  for (let v = 0; v < 256; v++) t[v] = Math.fround(Math.fround(Math.fround(v / 255) - 0.5) / 0.5);
  return t;
})();

function checkArgs(rgb: Uint8Array, width: number, height: number, out: Float32Array, offset: number): void {
  if (rgb.length < width * height * 3) throw new RangeError(`image buffer has ${rgb.length} bytes, expected ${width * height * 3}`);
  if (offset < 0 || offset + width * height * 3 > out.length) throw new RangeError('image does not fit in the output batch');
}

/** The plain JS version (reference and fallback). */
export function writeNormalisedJs(rgb: Uint8Array, width: number, height: number, out: Float32Array, offset: number, flip: boolean): void {
  checkArgs(rgb, width, height, out, offset);
  const lut = NORMALISE;
  const row = width * 3;
  for (let y = 0; y < height; y++) {
    const base = y * row;
    let o = offset + base;
    if (flip) {
      for (let s = base + row - 3; s >= base; s -= 3, o += 3) {
        out[o] = lut[rgb[s]];
        out[o + 1] = lut[rgb[s + 1]];
        out[o + 2] = lut[rgb[s + 2]];
      }
    } else {
      for (let s = base, e = base + row; s < e; s++, o++) out[o] = lut[rgb[s]];
    }
  }
}

/** Kernel instance with room for one image: [input | flipped | floats]. */
class SimdNormaliser {
  private cap = 0;
  constructor(readonly k: SimdKernel) {}

  write(rgb: Uint8Array, width: number, height: number, out: Float32Array, offset: number, flip: boolean): void {
    const n = width * height * 3;
    const n16 = n & ~15;
    const inCap = (n + 15) & ~15;
    const need = 6 * inCap; // input, flipped copy, 4 bytes of float per value
    if (need > this.cap) {
      const have = this.k.memory.buffer.byteLength;
      if (need > have) this.k.memory.grow(Math.ceil((need - have) / 65536));
      this.cap = need;
    }
    const heap = new Uint8Array(this.k.memory.buffer);
    heap.set(rgb.subarray(0, n), 0);
    let src = 0;
    if (flip) {
      this.k.flip(0, inCap, width, height);
      src = inCap;
    }
    const dst = 2 * inCap;
    this.k.norm(src, dst, n16);
    out.set(new Float32Array(this.k.memory.buffer, dst, n16), offset);
    for (let i = n16; i < n; i++) out[offset + i] = NORMALISE[heap[src + i]];
  }
}

const simd = ((): SimdNormaliser | null => {
  const k = loadSimdKernel();
  if (!k) return null;
  const s = new SimdNormaliser(k);
  // Self-check on every byte value, both orientations: any mismatch and the JS path is used instead.
  const w = 16;
  const h = 16;
  const rgb = new Uint8Array(w * h * 3).map((_, i) => (i * 7) & 255);
  for (const flip of [false, true]) {
    const a = new Float32Array(rgb.length);
    const b = new Float32Array(rgb.length);
    s.write(rgb, w, h, a, 0, flip);
    writeNormalisedJs(rgb, w, h, b, 0, flip);
    if (!a.every((x, i) => x === b[i])) return null;
  }
  return s;
})();

/** True when the WebAssembly SIMD kernel is in use. */
export const usingSimd = simd !== null;

/**
 * Writes one HxWx3 RGB image into `out` starting at float index `offset`, normalised, mirrored along
 * the width when `flip` is true.
 */
export function writeNormalised(rgb: Uint8Array, width: number, height: number, out: Float32Array, offset: number, flip: boolean): void {
  checkArgs(rgb, width, height, out, offset);
  if (simd) simd.write(rgb, width, height, out, offset, flip);
  else writeNormalisedJs(rgb, width, height, out, offset, flip);
}
