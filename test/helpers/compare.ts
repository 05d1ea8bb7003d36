// Closeness checks used against reference fixtures.
import assert from 'node:assert/strict';

export function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length, `length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** The fixtures' bound: max|got - expected| <= 1e-4 + 2e-5 * max|expected|. */
export function assertFixtureClose(got: ArrayLike<number>, expected: ArrayLike<number>, what: string): void {
  const bound = 1e-4 + 2e-5 * maxAbs(expected);
  const d = maxAbsDiff(got, expected);
  assert.ok(d <= bound, `${what}: max|Δ| ${d} exceeds ${bound}`);
}

/** NHWC [N,H,W,C] -> NCHW flat order. */
export function nhwcToNchw(data: ArrayLike<number>, [n, h, w, c]: number[]): Float32Array {
  const out = new Float32Array(n! * h! * w! * c!);
  for (let b = 0; b < n!; b++)
    for (let y = 0; y < h!; y++)
      for (let x = 0; x < w!; x++)
        for (let k = 0; k < c!; k++) out[((b * c! + k) * h! + y) * w! + x] = data[((b * h! + y) * w! + x) * c! + k]!;
  return out;
}
