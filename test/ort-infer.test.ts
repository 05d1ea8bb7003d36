// Compiled inference (src/ort/infer.ts) against model.predict on the `cpu` backend, 1e-4
// relative to the largest output: a small IResNet, a small MobileFaceNet (grouped and depthwise convs)
// with an odd embedding size, batch 1 and 5, PReLU slopes of both signs and above 1 (the graph rewrites
// PReLU). The compiled form is a snapshot of the weights until dropped; it is used on the ort engines only;
// the embedder and evaluation run it there.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/select.ts';
import { ortAvailable } from '../src/ort/binding.ts';
import { compileForInference, compileIfEnabled, compiledInferenceEnabled, dropCompiled } from '../src/ort/infer.ts';
import { exportOnnx } from '../src/onnx/export.ts';
import { onnx } from '../src/convert/onnx/reader.ts';
import { hasBuiltInNormalisation } from '../src/infer/embedder-onnx.ts';
import { buildBackbone } from '../src/models/factory.ts';
import { tfjsEmbedder } from '../src/infer/embedder-tfjs.ts';
import { evaluateModel, type PreparedSet } from '../src/eval/evaluate-bin.ts';
import type { RgbImage } from '../src/infer/image.ts';
import { maxAbs, maxAbsDiff } from './helpers/compare.ts';
import { prng, randomInput, randomizeWeights } from './helpers/random-weights.ts';

const skip = ortAvailable() ? false : 'onnxruntime-node (pinned version) is not loadable here';

before(async () => {
  await initBackend('cpu', { quiet: true });
});

/** Random weights, then PReLU slopes in [-0.5, 1.5): negative, small, above one. */
function model(spec: Parameters<typeof buildBackbone>[0], seed: number): tf.LayersModel {
  const m = buildBackbone(spec, { seed });
  randomizeWeights(m, { seed });
  const rand = prng(seed + 7);
  for (const layer of m.layers) {
    for (const w of layer.weights.filter((v) => v.name.endsWith('/alpha'))) {
      const n = (w.shape as number[]).reduce((a, b) => a * b, 1);
      const t = tf.tensor(Float32Array.from({ length: n }, () => rand() * 2 - 0.5), w.shape as number[]);
      w.write(t);
      t.dispose();
    }
  }
  return m;
}

function assertRelClose(got: ArrayLike<number>, want: ArrayLike<number>, what: string): void {
  const scale = maxAbs(want);
  assert.ok(scale > 1e-3 && Number.isFinite(scale), `${what}: reference scale ${scale}`);
  const rel = maxAbsDiff(got, want) / scale;
  assert.ok(rel <= 1e-4, `${what}: max|diff| / max|ref| = ${rel}`);
}

const predict = (m: tf.LayersModel, x: tf.Tensor4D): Float32Array => tf.tidy(() => (m.predict(x) as tf.Tensor).dataSync() as Float32Array);

const SPECS = [
  { network: 'iresnet', layers: [1, 2, 1, 1], widths: [16, 32, 32, 64], inputSize: 32, embeddingSize: 64 },
  { network: 'mbf', blocks: [1, 2, 1, 1], scale: 1, inputSize: 32, embeddingSize: 37 },
  { network: 'mbf', blocks: [2, 1, 1, 1], scale: 1, inputSize: 16, embeddingSize: 5 },
];

test('compiled predictor = model.predict on cpu (1e-4 relative), batch 1 and 5', { skip }, () => {
  SPECS.forEach((spec, i) => {
    const m = model(spec, 10 + i);
    const compiled = compileForInference(m, { cache: false });
    assert.deepEqual(compiled.inputShape, [spec.inputSize, spec.inputSize, 3]);
    assert.equal(compiled.outputSize, spec.embeddingSize);
    for (const batch of [1, 5]) {
      const x = randomInput(m, batch, 100 + batch);
      const y = compiled.predict(x);
      assert.deepEqual(y.shape, [batch, spec.embeddingSize]);
      assert.equal(tf.getBackend(), 'cpu');
      assertRelClose(y.dataSync(), predict(m, x), `${spec.network} ${spec.embeddingSize}-d batch ${batch}`);
      tf.dispose([x, y]);
    }
    compiled.dispose();
    assert.throws(() => compiled.run(new Float32Array(spec.inputSize * spec.inputSize * 3), 1), /disposed/);
    m.dispose();
  });
});

test('the compiled form is a snapshot of the weights until dropCompiled', { skip }, () => {
  const m = model(SPECS[0]!, 3);
  const x = randomInput(m, 2, 5);
  const first = compileForInference(m);
  assert.equal(compileForInference(m), first, 'cached per model');
  const before = first.predict(x).dataSync();
  // Change one weight: the embedding layer's kernel.
  const fc = m.layers.find((l) => l.getClassName() === 'Dense')!;
  const k = fc.weights[0]!;
  const t = tf.tidy(() => k.read().mul(-0.5).add(0.01));
  k.write(t);
  t.dispose();
  const want = predict(m, x);
  assertRelClose(compileForInference(m).predict(x).dataSync(), before, 'still the snapshot');
  assert.ok(maxAbsDiff(want, before) > 1e-2 * maxAbs(want), 'the weight change changes model.predict');
  dropCompiled(m);
  const second = compileForInference(m);
  assert.notEqual(second, first);
  assertRelClose(second.predict(x).dataSync(), want, 'after dropCompiled');
  dropCompiled();
  assert.notEqual(compileForInference(m, { cache: true }), second, 'dropCompiled() drops every model');
  dropCompiled();
  x.dispose();
  m.dispose();
});

test('used on the ort engines only; a model the exporter cannot express falls back', { skip }, async () => {
  assert.equal(compiledInferenceEnabled('cpu'), false);
  assert.equal(compiledInferenceEnabled('wasm'), false);
  assert.equal(compiledInferenceEnabled('ort-cpu'), true);
  assert.equal(compileIfEnabled(buildBackbone(SPECS[1]!, { seed: 1 })), null, 'cpu is active');
  await initBackend('ort-cpu', { quiet: true });
  try {
    const input = tf.input({ shape: [8, 8, 3] });
    const pooled = tf.layers.maxPooling2d({ poolSize: 2 }).apply(input) as tf.SymbolicTensor;
    const out = tf.layers.dense({ units: 4 }).apply(tf.layers.flatten().apply(pooled) as tf.SymbolicTensor) as tf.SymbolicTensor;
    const odd = tf.model({ inputs: input, outputs: out });
    const notes: string[] = [];
    const write = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((s: string) => (notes.push(String(s)), true)) as typeof process.stderr.write;
    try {
      assert.equal(compileIfEnabled(odd), null);
    } finally {
      process.stderr.write = write;
    }
    assert.match(notes.join(''), /running model\.predict .*MaxPooling2D/);
    odd.dispose();
  } finally {
    await initBackend('cpu', { quiet: true });
  }
});

test('the embedder runs the compiled graph on ort-cpu and gives model.predict embeddings', { skip }, async () => {
  const m = model(SPECS[1]!, 21);
  const size = SPECS[1]!.inputSize;
  const rand = prng(4);
  const crops: RgbImage[] = [0, 1, 2].map(() => ({ width: size, height: size, data: Uint8Array.from({ length: size * size * 3 }, () => Math.floor(rand() * 256)) }) as RgbImage);
  const x = tf.tensor4d(
    Float32Array.from(crops.flatMap((c) => Array.from(c.data, (v) => (v - 127.5) / 127.5))),
    [3, size, size, 3],
  );
  const want = predict(m, x);
  x.dispose();
  await initBackend('ort-cpu', { quiet: true });
  try {
    const e = tfjsEmbedder(m, 'test-mbf');
    const before = tf.memory().numTensors;
    const got = await e.embed(crops);
    assert.equal(tf.memory().numTensors, before, 'no tfjs tensors on the compiled path');
    assertRelClose(Float32Array.from(got.flatMap((v) => Array.from(v))), want, 'embedder on ort-cpu');
    await e.dispose();
  } finally {
    await initBackend('cpu', { quiet: true });
  }
});

test('evaluateModel on ort-cpu runs the compiled graph (never model.predict) and gives the cpu result', { skip }, async () => {
  const m = model(SPECS[0]!, 31);
  const size = SPECS[0]!.inputSize;
  const pairs = 12;
  const rand = prng(9);
  const set: PreparedSet = {
    name: 'synthetic',
    file: 'synthetic.bin',
    size,
    pairs,
    issame: Array.from({ length: pairs }, (_, i) => i % 2 === 0),
    pixels: Uint8Array.from({ length: 2 * pairs * size * size * 3 }, () => Math.floor(rand() * 256)),
    resized: 0,
  };
  const want = await evaluateModel(m, set, { batchSize: 7, folds: 4 });
  await initBackend('ort-cpu', { quiet: true });
  const predictFn = m.predict;
  m.predict = () => {
    throw new Error('model.predict called');
  };
  try {
    const got = await evaluateModel(m, set, { batchSize: 7, folds: 4 });
    assert.ok(Math.abs(got.xnorm - want.xnorm) <= 1e-4 * want.xnorm, `XNorm ${got.xnorm} vs ${want.xnorm}`);
    assert.equal(got.accuracyMean, want.accuracyMean);
  } finally {
    m.predict = predictFn;
    await initBackend('cpu', { quiet: true });
  }
  m.dispose();
});

test('export options: NHWC input with built-in normalisation keeps the leading Sub', { skip }, () => {
  const m = buildBackbone(SPECS[2]!, { seed: 2 });
  const graph = onnx.ModelProto.decode(exportOnnx(m, { inputLayout: 'nhwc', embedNormalization: true, ortCpu: true })).graph!;
  assert.deepEqual(graph.node!.slice(0, 3).map((n) => n.opType), ['Sub', 'Mul', 'Transpose']);
  assert.ok(hasBuiltInNormalisation(graph, 'data'));
  assert.deepEqual(graph.input![0]!.type!.tensorType!.shape!.dim!.map((d) => d.dimParam || Number(d.dimValue)), ['batch', 16, 16, 3]);
  assert.ok(!graph.node!.some((n) => n.opType === 'PRelu'), 'PReLU rewritten');
  m.dispose();
});
