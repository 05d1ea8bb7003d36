// The training forward's BatchNorm (closed-form backward, torch running statistics) against tfjs's own
// autodiff of moments + batchNorm, and the running-statistics update against a direct computation.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/select.ts';
import { buildBackbone } from '../src/models/factory.ts';
import { applyBatchNormUpdates, trainForward, trainableVariables, type BatchNormUpdate } from '../src/train/forward.ts';

before(async () => {
  await initBackend('cpu', { quiet: true });
});

test('gradients equal tfjs-layers training mode (autodiff of moments + batchNorm)', () => {
  // mbf: every BN has gamma, so tfjs-layers can run it in training mode as the independent reference.
  const model = buildBackbone({ network: 'mbf', blocks: [1, 1, 1, 1], scale: 1, inputSize: 32, embeddingSize: 8 }, { seed: 4 });
  const x = tf.randomUniform([6, 32, 32, 3], -1, 1, 'float32', 9);
  const probe = tf.randomNormal([6, 8], 0, 1, 'float32', 10);
  const vars = trainableVariables(model);
  const ours = tf.variableGrads(() => tf.sum(tf.mul(trainForward(model, x, null), probe)) as tf.Scalar, vars);
  // tfjs-layers' training path also updates the moving statistics: snapshot and restore them.
  const before = model.getWeights().map((w) => w.clone());
  const ref = tf.variableGrads(() => tf.sum(tf.mul(model.apply(x, { training: true }) as tf.Tensor, probe)) as tf.Scalar, vars);
  model.setWeights(before);
  assert.ok(Math.abs(ours.value.dataSync()[0]! - ref.value.dataSync()[0]!) < 1e-4 * Math.abs(ref.value.dataSync()[0]!) + 1e-5);
  const globalMax = Math.max(...vars.map((v) => tf.max(tf.abs(ref.grads[v.name]!)).dataSync()[0]!));
  for (const v of vars) {
    const a = ours.grads[v.name]!.dataSync();
    const b = ref.grads[v.name]!.dataSync();
    let d = 0;
    let m = 0;
    for (let i = 0; i < a.length; i++) {
      d = Math.max(d, Math.abs(a[i]! - b[i]!));
      m = Math.max(m, Math.abs(b[i]!));
    }
    assert.ok(d <= 1e-3 * Math.max(m, 1e-3 * globalMax), `${v.name}: max|Δ| ${d} vs max|g| ${m}`);
  }
  tf.dispose([x, probe, ours.value, ref.value, ...Object.values(ours.grads), ...Object.values(ref.grads), ...before]);
  model.dispose();
});

test('running statistics: momentum 0.1 with the unbiased batch variance (torch), frozen gamma stays 1', () => {
  const model = buildBackbone({ network: 'iresnet', layers: [1, 1, 1, 1], widths: [4, 4, 4, 4], inputSize: 16, embeddingSize: 3 }, { seed: 2 });
  const features = model.getLayer('features');
  const x = tf.randomUniform([5, 16, 16, 3], -1, 1, 'float32', 3);
  const updates: BatchNormUpdate[] = [];
  const yTrain = trainForward(model, x, updates);
  const [mm0, mv0] = [features.getWeights()[1]!.dataSync(), features.getWeights()[2]!.dataSync()];
  // The BN1d output y = (h - mean) / sqrt(var + eps) + beta (beta = 0 at init) has zero batch mean and
  // biased variance var / (var + eps), which ties the recorded statistics to the output.
  const y = yTrain.arraySync() as number[][];
  assert.equal(updates.length, model.layers.filter((l) => l.getClassName() === 'BatchNormalization').length);
  const upd = updates.find((u) => u.layer === features)!;
  const mean = upd.mean.dataSync();
  const unbiased = upd.variance.dataSync();
  for (let c = 0; c < 3; c++) {
    // normalised outputs have zero mean and (biased) unit variance across the batch
    const col = y.map((r) => r[c]!);
    const mu = col.reduce((a, b) => a + b, 0) / 5;
    const v = col.reduce((a, b) => a + (b - mu) ** 2, 0) / 5;
    assert.ok(Math.abs(mu) < 1e-5);
    assert.ok(Math.abs(v - unbiased[c]! * (4 / 5) / (unbiased[c]! * (4 / 5) + 1e-5)) < 1e-4);
  }
  applyBatchNormUpdates(updates);
  assert.equal(updates.length, 0);
  const [mm1, mv1] = [features.getWeights()[1]!.dataSync(), features.getWeights()[2]!.dataSync()];
  for (let c = 0; c < 3; c++) {
    assert.ok(Math.abs(mm1[c]! - (0.9 * mm0[c]! + 0.1 * mean[c]!)) < 1e-6);
    assert.ok(Math.abs(mv1[c]! - (0.9 * mv0[c]! + 0.1 * unbiased[c]!)) < 1e-6);
  }
  assert.equal(features.getWeights().length, 3, 'no gamma: beta, moving mean, moving variance');
  tf.dispose([x, yTrain]);
  model.dispose();
});
