// A real pretrained third-party face model converted to tfjs: faceplugin's fr_feature.onnx (a 512-d
// MobileFaceNet-style net exported by PyTorch 1.10, opset 9) through `importOnnx` agrees with
// onnxruntime-node on real aligned faces within the fixtures' bound, and gives the same L2-normalised
// embeddings through the embed pipeline.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/select.ts';
import { importOnnx } from '../src/convert/onnx/index.ts';
import { embedCrops, prepareFace } from '../src/infer/embed.ts';
import type { Embedder } from '../src/infer/embedder.ts';
import { tfjsEmbedder } from '../src/infer/embedder-tfjs.ts';
import type { RgbImage } from '../src/infer/image.ts';
import { loadEmbedder } from '../src/infer/load-embedder.ts';
import { cosineSimilarity } from '../src/infer/similarity.ts';
import { sharedFixture } from './helpers/fixtures.ts';
import { FR_FEATURE_MISSING, frFeatureOnnx, packageFile } from './helpers/third-party-model.ts';

const FR = frFeatureOnnx();
const OTHER = packageFile('@vladmandic/face-api', 'demo/sample2.jpg');
const ASTRONAUT = sharedFixture('faces', 'astronaut.png');
const skip = !FR
  ? FR_FEATURE_MISSING
  : !ASTRONAUT || !OTHER
    ? 'needs ../shared/fixtures/faces/astronaut.png and @vladmandic/face-api demo/sample2.jpg'
    : false;

let crops: RgbImage[] = [];
let runtime: Embedder;
let converted: Embedder;

before(async () => {
  if (skip) return;
  await initBackend('wasm', { quiet: true });
  // Real faces, detected and aligned by the project's own pipeline: the astronaut, and the best face of
  // face-api's demo photo 2 (a different person).
  crops = [(await prepareFace(ASTRONAUT!, 112)).crop, (await prepareFace(OTHER!, 112)).crop];
  runtime = await loadEmbedder(FR!);
  const imported = await importOnnx(FR!);
  assert.equal(imported.customLayerCount, 0, 'every node maps onto a built-in tfjs layer');
  converted = tfjsEmbedder(imported.model, FR!);
});

test('importOnnx(fr_feature.onnx): raw embeddings equal onnxruntime within max|d| <= 1e-4 + 2e-5 max|out|', { skip }, async () => {
  assert.deepEqual([converted.inputSize, converted.embeddingSize, converted.rawInput], [112, 512, false]);
  const want = await runtime.embed(crops);
  const before = tf.memory().numTensors;
  const got = await converted.embed(crops); // one batch of 2, though the ONNX graph fixes its batch at 1
  assert.equal(tf.memory().numTensors, before);
  for (let i = 0; i < crops.length; i++) {
    let d = 0, m = 0;
    for (let j = 0; j < 512; j++) {
      d = Math.max(d, Math.abs(got[i][j] - want[i][j]));
      m = Math.max(m, Math.abs(want[i][j]));
    }
    assert.ok(m > 0.1, `face ${i}: output too small to compare (${m})`);
    assert.ok(d <= 1e-4 + 2e-5 * m, `face ${i}: max|d| = ${d}, bound ${1e-4 + 2e-5 * m}`);
  }
  const [a, b] = await embedCrops(converted, crops);
  const [c, e] = await embedCrops(runtime, crops);
  assert.ok(cosineSimilarity(a, c) > 0.99999 && cosineSimilarity(b, e) > 0.99999);
  assert.ok(cosineSimilarity(a, b) < 0.3, 'two different people');
});
