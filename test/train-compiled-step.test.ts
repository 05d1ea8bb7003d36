// The one-graph training step on the ort engine (src/onnx/head.ts + compileTrainingStep,
// src/train/compiled-step.ts): trainStep's loss, every backbone gradient, the head's centre gradient
// and the BN batch statistics equal the cpu backend's tf.variableGrads step (same weights, batch and
// sampled classes) for ArcFace and CosFace, with Partial FC sampling, inter-class filtering and frozen
// BN; heads the graph does not write fall back; tensors stay flat over steps.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/select.ts';
import { assertGradientsClose } from './helpers/compare.ts';
import { buildBackbone, type BackboneSpec } from '../src/models/factory.ts';
import { PartialFC, type PartialFCOptions } from '../src/losses/partial-fc.ts';
import { compiledTimes } from '../src/ort/train.ts';
import { trainableVariables, type BatchNormUpdate } from '../src/train/forward.ts';
import { trainStep } from '../src/train/step.ts';
import type { TorchOptimizer } from '../src/train/optimizers.ts';

const IRESNET: Partial<BackboneSpec> & { network: string } = { network: 'iresnet', layers: [1, 2, 1, 1], widths: [8, 16, 16, 32], inputSize: 32, embeddingSize: 16 };
const MBF: Partial<BackboneSpec> & { network: string } = { network: 'mbf', blocks: [1, 1, 1, 1], scale: 1, inputSize: 32, embeddingSize: 16 } as Partial<BackboneSpec> & { network: string };

interface StepOut {
  loss: number;
  grads: Map<string, Float32Array>;
  stepMs: number;
}

/** One trainStep with an optimizer that records the gradients it is given instead of stepping. */
async function oneStep(backend: string, spec: Partial<BackboneSpec> & { network: string }, head: Omit<PartialFCOptions, 'embeddingSize'>, frozen = false): Promise<StepOut> {
  await initBackend(backend, { quiet: true });
  const model = buildBackbone(spec, { seed: 3 });
  if (frozen) {
    for (const w of model.weights) {
      if (w.originalName.endsWith('/moving_mean')) w.write(tf.randomNormal(w.shape as number[], 0, 0.1, 'float32', 8));
      if (w.originalName.endsWith('/moving_variance')) w.write(tf.randomUniform(w.shape as number[], 0.5, 2, 'float32', 9));
    }
  }
  const fc = new PartialFC({ ...head, embeddingSize: spec.embeddingSize!, seed: 5 });
  const batch = 8;
  const images = tf.randomUniform([batch, spec.inputSize!, spec.inputSize!, 3], -1, 1, 'float32', 7) as tf.Tensor4D;
  const labels = Int32Array.from({ length: batch }, (_, i) => (i * 7) % head.numClasses);
  const got = new Map<string, Float32Array>();
  const names = new Map<string, string>();
  for (const w of model.trainableWeights) names.set((w.read() as tf.Variable).name, w.originalName);
  names.set(fc.weight.name, 'head.weight');
  const recorder = { step: (g: tf.NamedTensorMap) => { for (const [k, v] of Object.entries(g)) got.set(names.get(k) ?? k, v.dataSync() as Float32Array); } } as unknown as TorchOptimizer;
  const bnUpdates: BatchNormUpdate[] = [];
  const before = compiledTimes.stepMs;
  const loss = await trainStep({ backbone: model, head: fc, optimizer: recorder, backboneVars: trainableVariables(model), bnUpdates, freezeBatchNorm: frozen }, images, labels, 0.1);
  const stepMs = compiledTimes.stepMs - before;
  // applyBatchNormUpdates ran: the running statistics moved by the batch statistics.
  for (const w of model.weights) if (/moving_(mean|variance)$/.test(w.originalName)) got.set(w.originalName, w.read().dataSync() as Float32Array);
  tf.dispose(images);
  fc.dispose();
  model.dispose();
  return { loss, grads: got, stepMs };
}

const CASES: [string, Partial<BackboneSpec> & { network: string }, Omit<PartialFCOptions, 'embeddingSize'>, boolean][] = [
  ['iresnet, ArcFace', IRESNET, { numClasses: 12, margin: { s: 64, m1: 1, m2: 0.5, m3: 0 } }, false],
  ['iresnet, CosFace, Partial FC 0.5, inter-class filtering', IRESNET, { numClasses: 40, sampleRate: 0.5, margin: { s: 30, m1: 1, m2: 0, m3: 0.35, interclassFilteringThreshold: 0.1 } }, false],
  ['mbf, ArcFace, frozen BN', MBF, { numClasses: 12, margin: { s: 64, m1: 1, m2: 0.5, m3: 0 } }, true],
];

for (const [what, spec, head, frozen] of CASES) {
  test(`compiled step = cpu step: ${what}`, async () => {
    const want = await oneStep('cpu', spec, head, frozen);
    const got = await oneStep('ort', spec, head, frozen);
    assert.ok(got.stepMs > 0, 'the ort step did not run the compiled graph');
    assert.ok(Math.abs(got.loss - want.loss) <= 1e-4 * Math.abs(want.loss), `loss ${got.loss} vs ${want.loss}`);
    assertGradientsClose(got.grads, want.grads, 2e-4);
  });
}

test('compiled step: the classic ArcFace variant falls back to tf.variableGrads with the same result', async () => {
  const head = { numClasses: 12, margin: { s: 64, m1: 1, m2: 0.5, m3: 0, variant: 'classic' as const } };
  const want = await oneStep('cpu', IRESNET, head);
  const got = await oneStep('ort', IRESNET, head);
  assert.equal(got.stepMs, 0);
  assert.ok(Math.abs(got.loss - want.loss) <= 1e-4 * Math.abs(want.loss));
  assertGradientsClose(got.grads, want.grads, 2e-4);
});

test('compiled step: tensors stay flat and the loss falls over steps with a real optimizer', async () => {
  await initBackend('ort', { quiet: true });
  const { TorchOptimizer } = await import('../src/train/optimizers.ts');
  const model = buildBackbone(IRESNET, { seed: 3 });
  const fc = new PartialFC({ numClasses: 12, embeddingSize: 16, margin: { s: 64, m1: 1, m2: 0.5, m3: 0 }, seed: 5 });
  const vars = trainableVariables(model);
  const opt = new TorchOptimizer([{ name: 'backbone', params: vars, clipNorm: 5 }, { name: 'head', params: [fc.weight] }], { kind: 'sgd', momentum: 0.9, weightDecay: 5e-4 });
  const images = tf.randomUniform([8, 32, 32, 3], -1, 1, 'float32', 7) as tf.Tensor4D;
  const labels = Int32Array.from({ length: 8 }, (_, i) => i % 12);
  const parts = { backbone: model, head: fc, optimizer: opt, backboneVars: vars, bnUpdates: [] as BatchNormUpdate[] };
  const before = compiledTimes.stepMs;
  const losses = [await trainStep(parts, images, labels, 0.1)];
  const tensors = tf.memory().numTensors;
  for (let i = 0; i < 5; i++) losses.push(await trainStep(parts, images, labels, 0.1));
  assert.equal(tf.memory().numTensors, tensors);
  assert.ok(compiledTimes.stepMs > before);
  assert.ok(losses.at(-1)! < losses[0]! * 0.9, `loss ${losses.join(', ')}`);
  tf.dispose(images);
  fc.dispose();
  model.dispose();
});
