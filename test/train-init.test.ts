// `train --init` from every kind of model: ONNX IResNet/MobileFaceNet graphs (torch2onnx fixtures, the
// MXNet-style opset-8 graph) become the native network, every layer initialised from the graph and
// compiled-training ready, the input convention kept in the fine-tuned model; a Keras-style ResNet in tfjs
// layers format (not a native network) fine-tunes through the generic path and its loss falls.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/select.ts';
import { compileTrainingGraphs } from '../src/onnx/training.ts';
import { loadBackbone } from '../src/convert/load-backbone.ts';
import { readTorchStateDict } from '../src/formats/torch.ts';
import { loadModel, saveModel, specOf } from '../src/models/io.ts';
import { inputConventionOf } from '../src/models/input-convention.ts';
import { loadConfig } from '../src/train/config.ts';
import { train } from '../src/train/loop.ts';
import { recalibrateBatchNorms } from '../src/train/init.ts';
import { trainForward } from '../src/train/forward.ts';
import { readNpy } from '../src/formats/npy.ts';
import { assertFixtureClose, maxAbs, maxAbsDiff } from './helpers/compare.ts';
import { sharedFixture, skipUnlessFixture } from './helpers/fixtures.ts';
import { mxnetStyleIResNet } from './helpers/mxnet-style-onnx.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'arcface-train-init-'));
const REC = sharedFixture('rec_insightface');
const noRec = skipUnlessFixture('rec_insightface');

before(async () => {
  await initBackend('wasm', { quiet: true });
});

const cfgFor = (init: string, output: string, extra: Record<string, unknown> = {}) =>
  loadConfig('tiny', {
    rec: REC ?? 'missing',
    init,
    output,
    batch_size: 4,
    num_epoch: 1,
    max_steps: 2,
    val_targets: [],
    frequent: 1,
    verbose: 1000,
    save_every: 1000,
    num_workers: 0,
    freeze_bn: true,
    backbone_lr_scale: 0.1,
    lr: 0.01,
    ...extra,
  });

for (const [name, embeddingSize] of [['iresnet_tiny', 64], ['mbf', 128]] as const) {
  test(`train --init ${name}/backbone.onnx: the native network, every layer from the graph`, { skip: skipUnlessFixture(name) || noRec }, async () => {
    const file = sharedFixture(name, 'backbone.onnx')!;
    const loaded = await loadBackbone(file);
    assert.ok(loaded.spec, loaded.note);
    // The fast path: the converted network compiles to onnxruntime training graphs.
    assert.doesNotThrow(() => compileTrainingGraphs(loaded.model, { batch: 2, freezeBatchNorm: true }));
    const before = loaded.model.getWeights().length;
    loaded.model.dispose();
    const result = await train(cfgFor(file, path.join(tmp, name), { embedding_size: embeddingSize }), { quiet: true });
    assert.equal(result.steps, 2);
    assert.ok(Number.isFinite(result.finalLoss));
    const tuned = await loadModel(result.modelDir);
    assert.equal(specOf(tuned)!.network, loaded.spec!.network);
    assert.equal(tuned.getWeights().length, before);
    tuned.dispose();
  });
}

test('train --init an MXNet-style opset-8 graph: native IResNet, (x - 127.5) / 128 kept in the fine-tuned model', { skip: skipUnlessFixture('iresnet_tiny') || noRec }, async () => {
  const file = path.join(tmp, 'mxnet.onnx');
  fs.writeFileSync(file, mxnetStyleIResNet(readTorchStateDict(sharedFixture('iresnet_tiny', 'backbone.pth')!)));
  const result = await train(cfgFor(file, path.join(tmp, 'mxnet'), { embedding_size: 64 }), { quiet: true });
  assert.ok(Number.isFinite(result.finalLoss));
  const tuned = await loadModel(result.modelDir);
  assert.deepEqual(specOf(tuned)!.layers, [1, 1, 1, 1]);
  const c = inputConventionOf(tuned);
  assert.deepEqual([c.order, c.mean[0], c.std[0], c.normalisationInGraph], ['RGB', 127.5, 128, true]);
  tuned.dispose();
});

/** A small Keras-style ResNet (conv + BN + ReLU, identity and projection shortcuts, global pooling, dense). */
function kerasStyleResNet(): tf.LayersModel {
  const init = (seed: number) => tf.initializers.glorotUniform({ seed });
  let seed = 1;
  const input = tf.input({ shape: [32, 32, 3], name: 'input_1' });
  const convBnRelu = (x: tf.SymbolicTensor, filters: number, stride: number, relu = true): tf.SymbolicTensor => {
    let y = tf.layers.conv2d({ filters, kernelSize: 3, strides: stride, padding: 'same', kernelInitializer: init(seed++) }).apply(x) as tf.SymbolicTensor;
    y = tf.layers.batchNormalization({ axis: 3 }).apply(y) as tf.SymbolicTensor;
    return relu ? (tf.layers.activation({ activation: 'relu' }).apply(y) as tf.SymbolicTensor) : y;
  };
  let x = convBnRelu(input, 8, 1);
  for (const [filters, stride] of [[8, 1], [16, 2]] as const) {
    const y = convBnRelu(convBnRelu(x, filters, stride), filters, 1, false);
    const sc = stride === 1 ? x : (tf.layers.conv2d({ filters, kernelSize: 1, strides: stride, kernelInitializer: init(seed++) }).apply(x) as tf.SymbolicTensor);
    x = tf.layers.activation({ activation: 'relu' }).apply(tf.layers.add().apply([y, sc]) as tf.SymbolicTensor) as tf.SymbolicTensor;
  }
  x = tf.layers.globalAveragePooling2d({}).apply(x) as tf.SymbolicTensor;
  const out = tf.layers.dense({ units: 16, kernelInitializer: init(seed++), name: 'embedding' }).apply(x) as tf.SymbolicTensor;
  return tf.model({ inputs: input, outputs: out, name: 'keras_resnet' });
}

test('train --init a Keras-style ResNet (tfjs layers, not a native network): generic path, loss falls', { skip: noRec }, async () => {
  const dir = path.join(tmp, 'keras');
  const model = kerasStyleResNet();
  await saveModel(model, dir);
  model.dispose();
  const result = await train(cfgFor(dir, path.join(tmp, 'keras-run'), { max_steps: 18, num_epoch: 2, batch_size: 8, lr: 0.1, backbone_lr_scale: 1, freeze_bn: false, embedding_size: 16, warmup_epoch: 0 }), { quiet: true });
  assert.equal(result.steps, 18);
  const log = fs.readFileSync(path.join(tmp, 'keras-run', 'train.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  const losses = log.filter((e) => e.type === 'train').map((e) => e.loss as number);
  const mean = (a: number[]) => a.reduce((s, v) => s + v, 0) / a.length;
  assert.ok(mean(losses.slice(-4)) < mean(losses.slice(0, 4)) - 0.5, `loss ${losses.map((l) => l.toFixed(2)).join(' ')}`);
  // The fine-tuned model is the same architecture, trained (BN statistics moved in the layers' own semantics).
  const tuned = await loadModel(result.modelDir);
  assert.equal(tuned.layers.length, kerasStyleResNet().layers.length);
  assert.equal(specOf(tuned), undefined);
  const bn = tuned.layers.find((l) => l.getClassName() === 'BatchNormalization')!;
  assert.ok(Math.abs(bn.getWeights()[2]!.dataSync()[0]!) > 0, 'moving mean updated');
  // ONNX export says which layer it lacks.
  const { exportOnnx } = await import('../src/onnx/export.ts');
  assert.throws(() => exportOnnx(tuned), /GlobalAveragePooling2D/);
  tuned.dispose();
});

test('BNs folded by torch.onnx get real statistics from a batch: same inference function, train mode close to it', { skip: skipUnlessFixture('iresnet_tiny') }, async () => {
  const loaded = await loadBackbone(sharedFixture('iresnet_tiny', 'backbone.onnx')!);
  const m = loaded.model;
  assert.ok(loaded.foldedLayers!.includes('layer1.0.bn2') && loaded.foldedLayers!.includes('layer4.0.downsample.1'));
  const inp = readNpy(sharedFixture('iresnet_tiny', 'input_nchw.npy')!);
  const x = tf.tidy(() => tf.tensor4d(inp.data as Float32Array, inp.shape as [number, number, number, number]).transpose([0, 2, 3, 1]) as tf.Tensor4D);
  const evalOut = () => tf.tidy(() => (m.predict(x) as tf.Tensor).dataSync() as Float32Array);
  // The stem (conv1 with bn1 folded, PReLU): in train mode on the calibration batch it computes exactly
  // its inference function once recalibrated, and unit-variance channels before.
  const stem = tf.model({ inputs: m.inputs, outputs: m.getLayer('prelu').output as tf.SymbolicTensor });
  const stemEval = () => tf.tidy(() => (stem.predict(x) as tf.Tensor).dataSync() as Float32Array);
  const stemTrain = () => tf.tidy(() => trainForward(stem, x, null, { compiled: false }).dataSync() as Float32Array);
  const before = evalOut();
  const stemBefore = stemEval();
  const gapBefore = maxAbsDiff(stemTrain(), stemBefore);
  const done = recalibrateBatchNorms(m, loaded.foldedLayers!, x);
  assert.equal(done.length, loaded.foldedLayers!.length);
  assertFixtureClose(evalOut(), before, 'inference unchanged by the recalibration');
  const mean = m.getLayer('layer1.0.bn2').getWeights()[2]!.dataSync();
  assert.ok(maxAbs(mean) > 1e-3, 'running mean is the batch mean now');
  const gapAfter = maxAbsDiff(stemTrain(), stemBefore);
  assert.ok(gapAfter < 1e-3 * maxAbs(stemBefore) && gapBefore > 0.1 * maxAbs(stemBefore), `train-mode stem gap ${gapBefore} -> ${gapAfter}`);
  x.dispose();
  m.dispose();
});
