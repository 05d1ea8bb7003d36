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

/**
 * Named gradients: ||Δ|| <= rel ||g|| per weight; a gradient that is ~0 in theory (round-off on both
 * sides, below 1e-4 of the largest) is held to 1e-6 of that global scale per element instead.
 */
export function assertGradientsClose(got: Map<string, Float32Array>, want: Map<string, Float32Array>, rel = 1e-3): void {
  assert.deepEqual([...got.keys()].sort(), [...want.keys()].sort());
  const norm = (a: ArrayLike<number>) => Math.sqrt(Array.from(a).reduce((s, v) => s + v * v, 0));
  const globalMax = Math.max(...[...want.values()].map(maxAbs));
  for (const [name, g] of got) {
    const ref = want.get(name)!;
    const diff = norm(g.map((v, i) => v - ref[i]!));
    if (maxAbs(ref) < 1e-4 * globalMax) {
      assert.ok(diff <= 1e-6 * globalMax * Math.sqrt(g.length), `${name}: |Δ| ${diff} where the gradient is ~0`);
      continue;
    }
    assert.ok(diff <= rel * norm(ref), `${name}: ||Δ|| ${diff} > ${rel} × ||g|| ${norm(ref)}`);
  }
}
