// Backbones: parameter counts equal the reference's sum(p.numel()), the knobs change what they should,
// and the reference initialisation has the reference's statistics.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/select.ts';
import { buildBackbone, resolveSpec } from '../src/models/factory.ts';
import { countParameters } from '../src/models/params.ts';

before(async () => {
  await initBackend('cpu', { quiet: true });
});

// insightface get_model(name, num_features=E): sum(p.numel() for p in model.parameters())
const REFERENCE_COUNTS: [string, number, number][] = [
  ['r18', 512, 24_025_600],
  ['r34', 512, 34_139_328],
  ['r50', 512, 43_590_848],
  ['r100', 512, 65_156_160],
  ['r200', 512, 118_833_920],
  ['mbf', 512, 2_059_520],
  ['mbf', 128, 1_862_144],
  // r50 with a 128-d embedding: fc 25088*128 + 128 and features beta+gamma 2*128 instead of 512-d's
  ['r50', 128, 43_590_848 - (25088 * 512 + 512 + 1024) + (25088 * 128 + 128 + 256)],
];

for (const [network, embeddingSize, expected] of REFERENCE_COUNTS) {
  test(`${network} (${embeddingSize}-d) has ${expected.toLocaleString('en')} parameters`, () => {
    const model = buildBackbone({ network, embeddingSize });
    assert.equal(countParameters(model), expected);
    assert.deepEqual(model.outputs[0]!.shape, [null, embeddingSize]);
    model.dispose();
  });
}

test('custom layers, widths and input size', () => {
  const model = buildBackbone({ network: 'iresnet', layers: [1, 2, 1, 1], widths: [16, 32, 64, 128], inputSize: 64, embeddingSize: 96 });
  assert.deepEqual(model.inputs[0]!.shape, [null, 64, 64, 3]);
  const fc = model.getLayer('fc');
  assert.deepEqual(fc.getWeights()[0]!.shape, [128 * 4 * 4, 96]); // flatten follows (64/16)^2
  assert.ok(model.layers.some((l) => l.name === 'layer2.1.conv2'));
  assert.equal(model.layers.some((l) => l.name === 'layer2.2.conv2'), false);
  const y = model.predict(tf.zeros([2, 64, 64, 3])) as tf.Tensor;
  assert.deepEqual(y.shape, [2, 96]);
  tf.dispose([y]);
  model.dispose();
  assert.throws(() => resolveSpec({ network: 'r51' }), /unknown network "r51"/);
  assert.throws(() => buildBackbone({ network: 'r18', inputSize: 100 }), /multiple of 16/);
});

test('reference initialisation: IResNet conv N(0, 0.1), mbf Kaiming fan-out, frozen final BN gamma', () => {
  const r = buildBackbone({ network: 'iresnet', layers: [1, 1, 1, 1], embeddingSize: 64 }, { seed: 7 });
  const w = r.getLayer('layer3.0.conv1').getWeights()[0]!.dataSync() as Float32Array;
  const std = Math.sqrt(w.reduce((a, v) => a + v * v, 0) / w.length);
  assert.ok(Math.abs(std - 0.1) < 0.002, `conv std ${std}`);
  const fcW = r.getLayer('fc').getWeights()[0]!.dataSync() as Float32Array;
  const bound = 1 / Math.sqrt(512 * 7 * 7);
  assert.ok(fcW.every((v) => Math.abs(v) <= bound) && Math.max(...fcW.slice(0, 5000)) > 0.9 * bound, 'fc ~ U(±1/sqrt(fan_in))');
  const features = r.getLayer('features');
  assert.equal(features.getConfig().scale, false, 'features BN has no trainable gamma');
  assert.equal(r.getLayer('prelu').getWeights()[0]!.dataSync()[0], 0.25);
  // Same seed, same model.
  const r2 = buildBackbone({ network: 'iresnet', layers: [1, 1, 1, 1], embeddingSize: 64 }, { seed: 7 });
  assert.deepEqual(r2.getLayer('layer3.0.conv1').getWeights()[0]!.dataSync().slice(0, 10), w.slice(0, 10));
  const m = buildBackbone({ network: 'mbf' }, { seed: 3 });
  const dw = m.getLayer('layers.5.layers.0.layers.1.layers.0').getWeights()[0]!.dataSync() as Float32Array; // depthwise 3x3 on 256
  const dwStd = Math.sqrt(dw.reduce((a, v) => a + v * v, 0) / dw.length);
  assert.ok(Math.abs(dwStd - Math.sqrt(2 / (256 * 9))) < 0.1 * Math.sqrt(2 / (256 * 9)), `depthwise std ${dwStd}`);
  const grouped = m.getLayer('layers.1.layers.0');
  assert.equal(grouped.getClassName(), 'GroupedConv2D');
  assert.deepEqual(grouped.getWeights()[0]!.shape, [3, 3, 2, 128]);
  [r, r2, m].forEach((x) => x.dispose());
});

test('GroupedConv2D equals per-group convolutions', () => {
  const model = buildBackbone({ network: 'mbf', embeddingSize: 8, inputSize: 32 }, { seed: 1 });
  const layer = model.getLayer('layers.1.layers.0');
  const [kernel] = layer.getWeights() as [tf.Tensor4D];
  const x = tf.randomNormal([2, 9, 9, 128], 0, 1, 'float32', 5) as tf.Tensor4D;
  const got = layer.apply(x) as tf.Tensor;
  const parts = Array.from({ length: 64 }, (_, g) =>
    tf.conv2d(x.slice([0, 0, 0, 2 * g], [-1, -1, -1, 2]), kernel.slice([0, 0, 0, 2 * g], [-1, -1, -1, 2]) as tf.Tensor4D, 1, 'same'),
  );
  const want = tf.concat(parts, 3);
  const diff = tf.max(tf.abs(tf.sub(got, want))).dataSync()[0]!;
  assert.ok(diff < 1e-5, `max diff ${diff}`);
  tf.dispose([x, got, want, ...parts]);
  model.dispose();
});
