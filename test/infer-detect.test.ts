// The face-api detector (SSD-MobileNet v1 + 68 landmarks, weights from the npm package) on the wasm
// backend: the astronaut's five points within 4 px of the fixture, nothing found in a face-free image,
// no tensors left behind.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/select.ts';
import { detectFaces, fivePointsFrom68, loadDetector } from '../src/infer/detect.ts';
import { readImage } from '../src/infer/image.ts';
import type { Point } from '../src/infer/align.ts';
import { sharedFixture, skipUnlessFixture } from './helpers/fixtures.ts';

before(async () => {
  await initBackend('wasm', { quiet: true });
  await loadDetector();
});

test('fivePointsFrom68: eye means of 36-41 / 42-47, nose 30, mouth 48 / 54', () => {
  const pts: Point[] = Array.from({ length: 68 }, (_, i) => [i, 2 * i]);
  assert.deepEqual(fivePointsFrom68(pts), [[38.5, 77], [44.5, 89], [30, 60], [48, 96], [54, 108]]);
  assert.throws(() => fivePointsFrom68(pts.slice(1)), /68/);
});

test('astronaut: one face, five points within 4 px of astronaut_5pt.json', { skip: skipUnlessFixture('faces', 'astronaut_5pt.json') }, async () => {
  const want = JSON.parse(fs.readFileSync(sharedFixture('faces', 'astronaut_5pt.json')!, 'utf8')).landmarks_5pt as [number, number][];
  const img = await readImage(sharedFixture('faces', 'astronaut.png')!);
  const before = tf.memory().numTensors;
  const faces = await detectFaces(img);
  assert.equal(tf.memory().numTensors, before, 'detectFaces leaks tensors');
  assert.equal(faces.length, 1);
  assert.ok(faces[0].score > 0.9, `score ${faces[0].score}`);
  faces[0].landmarks.forEach(([x, y], i) => {
    const d = Math.hypot(x - want[i][0], y - want[i][1]);
    assert.ok(d <= 4, `point ${i} is ${d.toFixed(2)} px from the fixture`);
  });
});

test('an image without a face gives no detection', async () => {
  // Smooth colour gradient: nothing face-like in it.
  const w = 320, h = 240, data = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) data.set([x % 256, y, (x + y) % 256], (y * w + x) * 3);
  assert.deepEqual(await detectFaces({ width: w, height: h, data }), []);
});
