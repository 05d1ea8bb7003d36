// The embedding pipeline without the detector (fixture landmarks): the insightface mbf fixture as .pth
// (tfjs, NHWC), as a saved tfjs directory, and as the torch-exported .onnx (onnxruntime, NCHW) gives the
// same raw embeddings of a real aligned face; an ONNX graph with the normalisation inside is detected
// and fed raw pixels; batching does not change results; malformed models are clear errors.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/select.ts';
import { parseLandmarks } from '../src/cli/commands/embed.ts';
import { exportOnnx } from '../src/onnx/export.ts';
import { importTorch } from '../src/convert/import-torch.ts';
import { saveModel } from '../src/models/io.ts';
import { normCrop, type Landmarks5 } from '../src/infer/align.ts';
import { embedCrops, embedFiles } from '../src/infer/embed.ts';
import { inputTensorData } from '../src/infer/embedder.ts';
import { tfjsEmbedder } from '../src/infer/embedder-tfjs.ts';
import { readImage, type RgbImage } from '../src/infer/image.ts';
import { loadEmbedder, modelFormatOf } from '../src/infer/load-embedder.ts';
import { cosineSimilarity, l2Normalise } from '../src/infer/similarity.ts';
import { sharedFixture, skipUnlessFixture } from './helpers/fixtures.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'arcface-embed-'));
const skip = skipUnlessFixture('mbf', 'backbone.pth') || skipUnlessFixture('faces', 'astronaut_5pt.json');
let landmarks: Landmarks5;
let crops: RgbImage[] = [];

before(async () => {
  await initBackend('wasm', { quiet: true });
  if (skip) return;
  landmarks = JSON.parse(fs.readFileSync(sharedFixture('faces', 'astronaut_5pt.json')!, 'utf8')).landmarks_5pt;
  const img = await readImage(sharedFixture('faces', 'astronaut.png')!);
  const crop = normCrop(img, landmarks, 112).crop;
  // Second face: the crop mirrored, so the batch holds two different inputs.
  const flipped = new Uint8Array(crop.data.length);
  for (let y = 0; y < 112; y++) for (let x = 0; x < 112; x++) flipped.set(crop.data.subarray((y * 112 + x) * 3, (y * 112 + x) * 3 + 3), (y * 112 + 111 - x) * 3);
  crops = [crop, { width: 112, height: 112, data: flipped }];
});

/** The fixtures' bound: max|got - want| <= 1e-4 + 2e-5 * max|want|. */
function assertClose(got: Float32Array, want: Float32Array, what: string): void {
  assert.equal(got.length, want.length);
  let d = 0, m = 0;
  for (let i = 0; i < got.length; i++) {
    d = Math.max(d, Math.abs(got[i] - want[i]));
    m = Math.max(m, Math.abs(want[i]));
  }
  assert.ok(m > 1, `${what}: near-zero output (max ${m}) proves nothing`);
  assert.ok(d <= 1e-4 + 2e-5 * m, `${what}: max|d| ${d} > ${1e-4 + 2e-5 * m}`);
}

test('inputTensorData: (x - 127.5) / 127.5 in NHWC or NCHW, raw when the model normalises', () => {
  const px: RgbImage = { width: 1, height: 1, data: Uint8Array.of(0, 51, 255) };
  assert.deepEqual([...inputTensorData([px, px], 1, 'nhwc', false)], [-1, -0.6, 1, -1, -0.6, 1].map(Math.fround));
  const c: RgbImage = { width: 2, height: 1, data: new Uint8Array(6) };
  // NCHW: all R first, then G, then B.
  const sq: RgbImage = { width: 2, height: 2, data: Uint8Array.from({ length: 12 }, (_, i) => i) };
  assert.deepEqual([...inputTensorData([sq], 2, 'nchw', true)], [0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11]);
  assert.throws(() => inputTensorData([c], 2, 'nhwc', false), /2x1, the model takes 2x2/);
});

test('mbf fixture: .pth (tfjs), saved tfjs dir and .onnx (onnxruntime) agree on a real aligned face', { skip }, async () => {
  const pth = sharedFixture('mbf', 'backbone.pth')!;
  const fromPth = await loadEmbedder(pth);
  const onnx = await loadEmbedder(sharedFixture('mbf', 'backbone.onnx')!);
  const { model } = importTorch(pth);
  const dir = path.join(tmp, 'mbf-tfjs');
  await saveModel(model, dir);
  model.dispose();
  const fromDir = await loadEmbedder(dir);
  try {
    assert.deepEqual([fromPth.format, fromDir.format, onnx.format], ['pth', 'tfjs', 'onnx']);
    for (const e of [fromPth, fromDir, onnx]) assert.deepEqual([e.inputSize, e.embeddingSize, e.rawInput], [112, 128, false]);
    assert.equal(onnx.maxBatch, Infinity);
    const before = tf.memory().numTensors;
    const want = await onnx.embed(crops);
    const a = await fromPth.embed(crops);
    const b = await fromDir.embed(crops);
    assert.equal(tf.memory().numTensors, before, 'embed leaks tensors');
    for (let i = 0; i < crops.length; i++) {
      assertClose(a[i], want[i], `pth face ${i}`);
      assertClose(b[i], want[i], `tfjs dir face ${i}`);
    }
    // Different faces give different embeddings (the batch is not one row repeated).
    assert.ok(cosineSimilarity(want[0], want[1]) < 0.999);
  } finally {
    await Promise.all([fromPth.dispose(), fromDir.dispose(), onnx.dispose()]);
  }
});

test('an ONNX graph with the normalisation built in (leading Sub/Mul) is fed raw pixels and gives the same embedding', { skip }, async () => {
  const { model } = importTorch(sharedFixture('mbf', 'backbone.pth')!);
  const plainFile = path.join(tmp, 'plain.onnx');
  const rawFile = path.join(tmp, 'raw.onnx');
  fs.writeFileSync(plainFile, exportOnnx(model, { foldBatchNorm: true }));
  fs.writeFileSync(rawFile, exportOnnx(model, { foldBatchNorm: true, embedNormalization: true }));
  model.dispose();
  const plain = await loadEmbedder(plainFile);
  const raw = await loadEmbedder(rawFile);
  try {
    assert.equal(plain.rawInput, false);
    assert.equal(raw.rawInput, true);
    const [p] = await plain.embed(crops.slice(0, 1));
    const [r] = await raw.embed(crops.slice(0, 1));
    assertClose(r, p, 'built-in normalisation');
  } finally {
    await Promise.all([plain.dispose(), raw.dispose()]);
  }
});

test('embedFiles with --landmarks: order kept and batch size does not change embeddings; output is unit length', { skip }, async () => {
  const e = await loadEmbedder(sharedFixture('mbf', 'backbone.pth')!);
  try {
    const files = [sharedFixture('faces', 'astronaut.png')!, sharedFixture('faces', 'astronaut_aligned_112.png')!, sharedFixture('faces', 'astronaut.png')!];
    const run = async (batchSize: number): Promise<Float32Array[]> => {
      const out: Float32Array[] = [];
      for await (const r of embedFiles(e, files, { landmarks, batchSize })) {
        assert.ok('embedding' in r);
        assert.deepEqual(r.landmarks, landmarks);
        out.push(r.embedding);
      }
      return out;
    };
    const one = await run(1);
    const two = await run(2);
    for (let i = 0; i < 3; i++) assert.ok(cosineSimilarity(one[i], two[i]) > 0.999999);
    assert.ok(Math.abs(Math.hypot(...one[0]) - 1) < 1e-6);
    // Files 0 and 2 are the same image; file 1 is another (already-aligned) picture cropped again.
    assert.ok(cosineSimilarity(one[0], one[2]) > 0.999999);
    assert.ok(cosineSimilarity(one[0], one[1]) < 0.99);
    const [direct] = await embedCrops(e, crops.slice(0, 1));
    assert.ok(cosineSimilarity(direct, one[0]) > 0.999999);
  } finally {
    await e.dispose();
  }
});

test('malformed models and inputs are clear errors', async () => {
  const mk = (shape: number[], units = 8): tf.LayersModel => {
    const x = tf.input({ shape });
    const flat = shape.length > 1 ? (tf.layers.flatten().apply(x) as tf.SymbolicTensor) : x;
    return tf.model({ inputs: x, outputs: tf.layers.dense({ units }).apply(flat) as tf.SymbolicTensor });
  };
  assert.throws(() => tfjsEmbedder(mk([112, 112, 1]), 'grey-model'), /grey-model: the model input .* has 1 channels; a face model takes 3/);
  assert.throws(() => tfjsEmbedder(mk([112, 96, 3]), 'wide-model'), /wide-model: the model input .* is 112x96; a face model takes a square crop/);
  assert.throws(() => tfjsEmbedder(mk([8]), 'flat-model'), /flat-model: the model input is \[,8\]/);
  const ok = tfjsEmbedder(mk([4, 4, 3], 5), 'tiny');
  assert.deepEqual([ok.inputSize, ok.embeddingSize], [4, 5]);
  await ok.dispose();

  fs.writeFileSync(path.join(tmp, 'weights.h5'), 'x');
  assert.throws(() => modelFormatOf(path.join(tmp, 'weights.h5')), /weights\.h5: unknown model format/);
  assert.throws(() => modelFormatOf(path.join(tmp, 'missing.onnx')), /missing\.onnx: no such model file/);
  fs.writeFileSync(path.join(tmp, 'junk.onnx'), 'not protobuf at all');
  await assert.rejects(loadEmbedder(path.join(tmp, 'junk.onnx')), /junk\.onnx: not a valid ONNX model/);
  await assert.rejects(readImage(path.join(tmp, 'weights.h5')), /weights\.h5: not a readable image/);

  assert.deepEqual(parseLandmarks('1,2, 3,4 5,6,7,8,9,10'), [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10]]);
  assert.throws(() => parseLandmarks('1,2,3'), /--landmarks needs 10 numbers/);
  assert.throws(() => cosineSimilarity(l2Normalise([1, 2]), l2Normalise([1, 2, 3])), /embedding sizes differ: first has 2, second has 3/);
});
