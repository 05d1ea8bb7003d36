// evaluateModel on a .bin against an independent computation (one predict over all images, flips by
// tf.reverse, flip-sum and XNorm by hand), the reference's batching of the last partial window, no
// tensor leaks across repeated evaluations, resizing with a warning, and bad .bin files.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import sharp from 'sharp';
import { initBackend } from '../src/backend/select.ts';
import { ArcfaceError } from '../src/errors.ts';
import { writeBin } from '../src/data/bin-set.ts';
import { pickle, PyTuple } from '../src/formats/pickle.ts';
import { buildBackbone } from '../src/models/factory.ts';
import { embedSet, evaluateModel, prepareVerificationSet } from '../src/eval/evaluate-bin.ts';
import { evaluateVerification } from '../src/eval/verification.ts';
import { prng, randomizeWeights } from './helpers/random-weights.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'arcface-eval-bin-'));
const PAIRS = 20;

/** Identity k: a smooth pattern; each image a noisy copy. Same pairs share the identity. */
function makePixels(size: number, seed: number): { pixels: Uint8Array[]; issame: boolean[] } {
  const rand = prng(seed);
  const identity = (id: number) => {
    const a = 1 + (id % 5);
    const b = 1 + ((id * 7) % 4);
    return (x: number, y: number, c: number) => 128 + 100 * Math.sin((a * x) / size * Math.PI + c + id) * Math.cos((b * y) / size * Math.PI - c);
  };
  const image = (id: number) => {
    const f = identity(id);
    const px = new Uint8Array(size * size * 3);
    for (let y = 0; y < size; y++) for (let x = 0; x < size; x++) for (let c = 0; c < 3; c++) {
      px[(y * size + x) * 3 + c] = Math.max(0, Math.min(255, Math.round(f(x, y, c) + 40 * (rand() - 0.5))));
    }
    return px;
  };
  const pixels: Uint8Array[] = [];
  const issame: boolean[] = [];
  for (let k = 0; k < PAIRS; k++) {
    const same = k % 2 === 0;
    pixels.push(image(k), image(same ? k : k + 1));
    issame.push(same);
  }
  return { pixels, issame };
}

async function png(px: Uint8Array, size: number): Promise<Uint8Array> {
  return new Uint8Array(await sharp(px, { raw: { width: size, height: size, channels: 3 } }).png().toBuffer());
}

async function makeBin(file: string, size: number, seed: number): Promise<{ pixels: Uint8Array[]; issame: boolean[] }> {
  const d = makePixels(size, seed);
  writeBin(file, { images: await Promise.all(d.pixels.map((p) => png(p, size))), issame: d.issame });
  return d;
}

/** Raw embeddings of all images in one predict, from pixels by the formula, mirrored by tf.reverse. */
function independentEmbeddings(model: tf.LayersModel, pixels: Uint8Array[], size: number, flip: boolean): Float32Array {
  return tf.tidy(() => {
    const x = tf.tensor4d(Float32Array.from(pixels.flatMap((p) => Array.from(p))), [pixels.length, size, size, 3]).div(255).sub(0.5).div(0.5);
    return (model.predict(flip ? tf.reverse(x, 2) : x) as tf.Tensor).dataSync() as Float32Array;
  });
}

let model: tf.LayersModel;

test('setup: wasm backend, a tiny IResNet with non-trivial weights', async () => {
  await initBackend('wasm', { quiet: true });
  model = buildBackbone({ network: 'iresnet', layers: [1, 1, 1, 1], widths: [8, 16, 16, 32], inputSize: 32, embeddingSize: 16 }, { seed: 3 });
  randomizeWeights(model, { seed: 11 });
});

test('evaluateModel = predict on originals and flips, XNorm over both, flip-sum, evaluateVerification', async () => {
  const file = path.join(tmp, 'synth.bin');
  const d = await makeBin(file, 32, 1);
  const set = await prepareVerificationSet(file, 32, { warn: () => assert.fail('no resize expected') });
  assert.equal(set.name, 'synth');
  assert.equal(set.pairs, PAIRS);
  assert.equal(set.resized, 0);
  assert.deepEqual(set.issame, d.issame);
  assert.deepEqual(set.pixels, Uint8Array.from(d.pixels.flatMap((p) => Array.from(p))));

  const E = 16;
  const orig = independentEmbeddings(model, d.pixels, 32, false);
  const flip = independentEmbeddings(model, d.pixels, 32, true);
  let normSum = 0;
  const summed = new Float32Array(orig.length);
  for (let i = 0; i < 2 * PAIRS; i++) {
    let so = 0, sf = 0, ss = 0;
    for (let j = 0; j < E; j++) {
      so += orig[i * E + j] ** 2;
      sf += flip[i * E + j] ** 2;
      summed[i * E + j] = orig[i * E + j] + flip[i * E + j];
      ss += summed[i * E + j] ** 2;
    }
    normSum += Math.sqrt(so) + Math.sqrt(sf);
    for (let j = 0; j < E; j++) summed[i * E + j] /= Math.sqrt(ss);
  }
  const xnorm = normSum / (4 * PAIRS);
  const expected = evaluateVerification(summed, E, d.issame);
  // The flip must matter, or this test could not tell a missing flip from a correct one.
  assert.ok(Math.abs(orig[0] - flip[0]) > 1e-3);

  const got = await evaluateModel(model, set, { batchSize: 7 }); // 40 images: windows 0-7 ... 28-35, then 33-40 keeping 35-40
  assert.equal(got.name, 'synth');
  assert.equal(got.pairs, PAIRS);
  assert.ok(Math.abs(got.xnorm - xnorm) <= 1e-5 * xnorm, `xnorm ${got.xnorm} vs ${xnorm}`);
  assert.ok(xnorm > 0.1);
  assert.deepEqual(got.result.accuracyPerFold, expected.accuracyPerFold);
  assert.equal(got.accuracyMean, expected.accuracyMean);
  assert.equal(got.accuracyStd, expected.accuracyStd);
  assert.equal(got.bestThreshold, expected.bestThreshold);
  assert.deepEqual(got.tarAtFar, { tar: expected.tarAtFar.tar, far: expected.tarAtFar.far, threshold: expected.tarAtFar.threshold, farTarget: 1e-3 });
  for (let t = 0; t < 400; t++) assert.ok(Math.abs(got.result.tpr[t] - expected.tpr[t]) < 1e-12 && Math.abs(got.result.fpr[t] - expected.fpr[t]) < 1e-12);
  // Noisy copies of one pattern are far more alike than two patterns: the pipeline is not scrambling pairs.
  assert.ok(got.accuracyMean >= 0.8, `accuracy ${got.accuracyMean}`);

  // Raw embeddings, per batch size (incl. the re-run last window and a batch larger than the set).
  for (const bs of [1, 7, 10, 64]) {
    const e = await embedSet(model, set, true, bs);
    assert.equal(e.dim, E);
    let maxDiff = 0;
    for (let i = 0; i < flip.length; i++) maxDiff = Math.max(maxDiff, Math.abs(e.embeddings[i] - flip[i]));
    assert.ok(maxDiff < 1e-5, `batch ${bs}: max |diff| ${maxDiff}`);
  }
});

test('repeated evaluations leak no tensors and give the same numbers', async () => {
  const file = path.join(tmp, 'repeat.bin');
  await makeBin(file, 32, 2);
  const set = await prepareVerificationSet(file, 32);
  const first = await evaluateModel(model, set);
  const before = tf.memory().numTensors;
  for (let i = 0; i < 3; i++) {
    const r = await evaluateModel(model, set, { batchSize: 6 });
    assert.equal(r.accuracyMean, first.accuracyMean);
    assert.ok(Math.abs(r.xnorm - first.xnorm) < 1e-6 * first.xnorm);
  }
  assert.equal(tf.memory().numTensors, before);
});

test('images of another size are resized (shorter side to the input size) with a warning naming the file', async () => {
  const file = path.join(tmp, 'big40.bin');
  const d = await makeBin(file, 40, 4);
  const warnings: string[] = [];
  const set = await prepareVerificationSet(file, 32, { warn: (m) => warnings.push(m) });
  assert.equal(warnings.length, 1);
  assert.ok(warnings[0].includes(file), warnings[0]);
  assert.match(warnings[0], /40 of 40 images are not 32x32 \(40 x 40x40\)/);
  assert.equal(set.resized, 40);
  assert.equal(set.pixels.length, 40 * 32 * 32 * 3);
  // Image 5 is the bicubic 40 -> 32 resize of its pixels, not a crop or garbage.
  const want = await sharp(d.pixels[5], { raw: { width: 40, height: 40, channels: 3 } }).resize(32, 32, { kernel: 'cubic' }).raw().toBuffer();
  let maxDiff = 0;
  for (let i = 0; i < want.length; i++) maxDiff = Math.max(maxDiff, Math.abs(want[i] - set.pixels[5 * 32 * 32 * 3 + i]));
  assert.ok(maxDiff <= 1, `max diff ${maxDiff}`);
  const r = await evaluateModel(model, set);
  assert.ok(r.accuracyMean >= 0.8, `accuracy ${r.accuracyMean}`);

  // Non-square images: shorter side to 32, centre crop.
  const wide = path.join(tmp, 'wide.bin');
  const px = new Uint8Array(48 * 32 * 3).map((_, i) => ((i / 3) % 48 < 8 ? 0 : 200));
  const img = new Uint8Array(await sharp(px, { raw: { width: 48, height: 32, channels: 3 } }).png().toBuffer());
  writeBin(wide, { images: Array(20).fill(img), issame: Array(10).fill(true) });
  const w: string[] = [];
  const ws = await prepareVerificationSet(wide, 32, { warn: (m) => w.push(m) });
  assert.match(w[0], /20 x 48x32/);
  assert.equal(ws.pixels[0], 200, 'the dark left 8 columns are cropped away');
});

test('bad .bin files: an error naming the file and the problem', async () => {
  const cases: [string, Uint8Array | null, RegExp][] = [
    ['missing.bin', null, /cannot read/],
    ['text.bin', new TextEncoder().encode('lfw pairs, not a pickle\n'), /not a verification \.bin \(cannot unpickle/],
    ['dict.bin', pickle(new Map([['images', 1]]), { protocol: 2 }), /expected a pickled \(list of images, list of issame\)/],
    ['odd.bin', pickle(new PyTuple([[new Uint8Array([1]), new Uint8Array([2]), new Uint8Array([3])], [true]]), { protocol: 2 }), /3 images for 1 pairs/],
    ['fewer.bin', pickle(new PyTuple([[new Uint8Array([1]), new Uint8Array([2])], [true, false]]), { protocol: 2 }), /2 images for 2 pairs/],
    ['empty.bin', pickle(new PyTuple([[], []]), { protocol: 2 }), /holds no pairs/],
    ['corrupt.bin', pickle(new PyTuple([Array(20).fill(new Uint8Array([0xff, 0xd8, 0xff, 1, 2])), Array(10).fill(true)]), { protocol: 2 }), /image 0: cannot decode/],
  ];
  for (const [name, bytes, why] of cases) {
    const file = path.join(tmp, name);
    if (bytes) fs.writeFileSync(file, bytes);
    await assert.rejects(prepareVerificationSet(file, 32), (e: Error) => {
      assert.ok(e instanceof ArcfaceError, `${name}: ${e.name}: ${e.message}`);
      assert.ok(e.message.includes(file), `${name}: ${e.message}`);
      assert.match(e.message, why);
      return true;
    });
  }
  // Fewer pairs than folds, and a model of another input size.
  const few = path.join(tmp, 'few.bin');
  const d = makePixels(32, 5);
  writeBin(few, { images: await Promise.all(d.pixels.slice(0, 8).map((p) => png(p, 32))), issame: d.issame.slice(0, 4) });
  const set = await prepareVerificationSet(few, 32);
  await assert.rejects(evaluateModel(model, set), (e: Error) => e.message.includes(few) && /4 pairs cannot be split into 10 folds/.test(e.message));
  await assert.rejects(evaluateModel(model, await prepareVerificationSet(few, 24, { warn: () => {} }), { folds: 2 }), /prepared at 24x24 but the model takes 32x32/);
});
