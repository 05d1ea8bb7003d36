// Alignment against the insightface-made fixture: the least-squares similarity matrix from the five
// astronaut landmarks, and the 112x112 crop warpAffine gives with it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { alignmentMatrix, arcfaceTemplate, estimateSimilarity, normCrop, warpAffine, type Landmarks5 } from '../src/infer/align.ts';
import { readImage } from '../src/infer/image.ts';
import { sharedFixture, skipUnlessFixture } from './helpers/fixtures.ts';

interface Fixture5pt {
  landmarks_5pt: [number, number][];
  arcface_template_112: [number, number][];
  similarity_matrix_2x3: number[][];
}
const skip = skipUnlessFixture('faces', 'astronaut_5pt.json');
const fixture = (): Fixture5pt => JSON.parse(fs.readFileSync(sharedFixture('faces', 'astronaut_5pt.json')!, 'utf8'));

test('template equals the fixture; other sizes scale as insightface estimate_norm', { skip }, () => {
  const fx = fixture();
  assert.deepEqual(arcfaceTemplate(112), fx.arcface_template_112);
  assert.deepEqual(arcfaceTemplate(224)[0], [38.2946 * 2, 51.6963 * 2]);
  // 128 is not a multiple of 112: ratio 1, x shifted by 8.
  const t128 = arcfaceTemplate(128);
  assert.ok(Math.abs(t128[2][0] - (56.0252 + 8)) < 1e-9 && Math.abs(t128[2][1] - 71.7366) < 1e-9);
});

test('similarity matrix from the astronaut landmarks equals the fixture to 1e-4', { skip }, () => {
  const fx = fixture();
  const m = alignmentMatrix(fx.landmarks_5pt as unknown as Landmarks5, 112);
  for (let r = 0; r < 2; r++) {
    for (let c = 0; c < 3; c++) {
      assert.ok(Math.abs(m[r][c] - fx.similarity_matrix_2x3[r][c]) <= 1e-4, `M[${r}][${c}] = ${m[r][c]}, expected ${fx.similarity_matrix_2x3[r][c]}`);
    }
  }
});

test('an exact similarity is recovered (rotation 30 deg, scale 1.7, shift), and no reflection is fitted', () => {
  const th = Math.PI / 6, s = 1.7;
  const src: [number, number][] = [[10, 20], [60, 25], [35, 50], [15, 80], [55, 78]];
  const dst = src.map(([x, y]) => [s * (Math.cos(th) * x - Math.sin(th) * y) + 5, s * (Math.sin(th) * x + Math.cos(th) * y) - 7] as [number, number]);
  const m = estimateSimilarity(src, dst);
  const want = [[s * Math.cos(th), -s * Math.sin(th), 5], [s * Math.sin(th), s * Math.cos(th), -7]];
  for (let r = 0; r < 2; r++) for (let c = 0; c < 3; c++) assert.ok(Math.abs(m[r][c] - want[r][c]) < 1e-9);
  // A mirrored target cannot be matched by a similarity: the fit stays a rotation (det > 0).
  const mirrored = estimateSimilarity(src, dst.map(([x, y]) => [-x, y] as [number, number]));
  assert.ok(mirrored[0][0] * mirrored[1][1] - mirrored[0][1] * mirrored[1][0] > 0);
  assert.throws(() => estimateSimilarity([[1, 1], [1, 1]], [[0, 0], [1, 1]]), /degenerate/);
});

test('aligned crop equals astronaut_aligned_112.png within a mean |d| of 2 grey levels', { skip: skip || skipUnlessFixture('faces', 'astronaut_aligned_112.png') }, async () => {
  const fx = fixture();
  const img = await readImage(sharedFixture('faces', 'astronaut.png')!);
  const { crop } = normCrop(img, fx.landmarks_5pt as unknown as Landmarks5, 112);
  const want = await readImage(sharedFixture('faces', 'astronaut_aligned_112.png')!);
  assert.equal(crop.width, 112);
  assert.equal(want.data.length, crop.data.length);
  let sum = 0, max = 0;
  for (let i = 0; i < crop.data.length; i++) {
    const d = Math.abs(crop.data[i] - want.data[i]);
    sum += d;
    max = Math.max(max, d);
  }
  const mean = sum / crop.data.length;
  assert.ok(mean <= 2, `mean |d| = ${mean}`);
  assert.ok(max <= 1, `max |d| = ${max}`); // same sampling rule, so at most a rounding tie differs
});

test('warp border is 0 and bilinear interpolation is exact on a ramp', () => {
  // 4x1 ramp 0, 100, 200, 250: half-pixel shift samples midpoints; past the edge mixes with 0.
  const data = new Uint8Array([0, 100, 200, 250].flatMap((v) => [v, v, v]));
  const out = warpAffine({ width: 4, height: 1, data }, [[1, 0, -0.5], [0, 1, 0]], 5, 1);
  assert.deepEqual([...out.data].filter((_, i) => i % 3 === 0), [50, 150, 225, 125, 0]);
});
