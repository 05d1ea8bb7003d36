// RGB uint8 -> float32 (x/255 - 0.5)/0.5, optionally flipped left-right, written into an NHWC batch.
// The table reproduces torchvision's ToTensor + Normalize(0.5, 0.5) in float32 step by step, so values
// are bit-identical to the PyTorch pipeline's.

/** NORMALISE[v] = float32((float32(v / 255) - 0.5) / 0.5). */
export const NORMALISE: Float32Array = (() => {
  const t = new Float32Array(256);
  for (let v = 0; v < 256; v++) t[v] = Math.fround(Math.fround(Math.fround(v / 255) - 0.5) / 0.5);
  return t;
})();

/**
 * Writes one HxWx3 RGB image into `out` starting at float index `offset`, normalised, mirrored along
 * the width when `flip` is true.
 */
export function writeNormalised(rgb: Uint8Array, width: number, height: number, out: Float32Array, offset: number, flip: boolean): void {
  const lut = NORMALISE;
  const row = width * 3;
  if (rgb.length < row * height) throw new RangeError(`image buffer has ${rgb.length} bytes, expected ${row * height}`);
  if (offset + row * height > out.length) throw new RangeError('image does not fit in the output batch');
  if (!flip) {
    for (let i = 0, n = row * height; i < n; i++) out[offset + i] = lut[rgb[i]];
    return;
  }
  for (let y = 0; y < height; y++) {
    const base = y * row;
    let o = offset + base;
    for (let x = width - 1; x >= 0; x--) {
      const s = base + x * 3;
      out[o] = lut[rgb[s]];
      out[o + 1] = lut[rgb[s + 1]];
      out[o + 2] = lut[rgb[s + 2]];
      o += 3;
    }
  }
}
