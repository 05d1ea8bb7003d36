// The webgpu backend (Dawn + tfjs-backend-webgpu) against the cpu backend: the gradient kernels one by one
// on small random shapes, then every weight gradient and BN batch statistic of a small IResNet and an
// mbf-like network through trainForward (1e-3 relative); a training step reads back only its loss and
// leaves the tensor count flat.
// Runs on a real adapter where present, else on SwiftShader (Debian's chromium); skips without either.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/select.ts';
import { buildBackbone, type BackboneSpec } from '../src/models/factory.ts';
import { applyBatchNormUpdates, trainForward, trainableVariables, type BatchNormUpdate, type TrainForwardOptions } from '../src/train/forward.ts';
import { PartialFC } from '../src/losses/partial-fc.ts';
import { TorchOptimizer } from '../src/train/optimizers.ts';
import { prng } from './helpers/random-weights.ts';
import { skipUnlessWebgpu } from './helpers/webgpu.ts';

const skip = await skipUnlessWebgpu();

type Data = { values: Float32Array | Int32Array; shape: number[]; dtype: 'float32' | 'int32' };
const rand = prng(20251205);
const int = (lo: number, hi: number): number => lo + Math.floor(rand() * (hi - lo + 1));
const normal = (shape: number[]): Data => {
  const values = new Float32Array(shape.reduce((a, b) => a * b, 1));
  for (let i = 0; i < values.length; i++) values[i] = rand() * 2 - 1;
  return { values, shape, dtype: 'float32' };
};

/** Runs `fn` on `backend` with fresh tensors; reads every output asynchronously (webgpu has no sync read in Node). */
async function runOn(backend: string, inputs: Data[], fn: (...t: tf.Tensor[]) => tf.Tensor | tf.Tensor[]): Promise<Data[]> {
  await initBackend(backend, { quiet: true });
  const ts = inputs.map((d) => tf.tensor(d.values, d.shape, d.dtype));
  const out = tf.tidy(() => fn(...ts));
  const outs = Array.isArray(out) ? out : [out];
  const res: Data[] = [];
  for (const t of outs) res.push({ values: (await t.data()) as Float32Array, shape: t.shape, dtype: 'float32' });
  tf.dispose([...ts, ...outs]);
  return res;
}

function assertClose(got: Data, want: Data, what: string, tol = 1e-4): void {
  assert.deepEqual(got.shape, want.shape, `${what}: shape`);
  let maxRef = 0;
  let maxDiff = 0;
  for (let i = 0; i < want.values.length; i++) {
    maxRef = Math.max(maxRef, Math.abs(want.values[i]!));
    maxDiff = Math.max(maxDiff, Math.abs(got.values[i]! - want.values[i]!));
  }
  assert.ok(Number.isFinite(maxDiff), `${what}: non-finite values`);
  assert.ok(maxRef > 0, `${what}: the reference is all zeros`);
  assert.ok(maxDiff <= tol * maxRef, `${what}: max|diff| ${maxDiff} > ${tol} * ${maxRef}`);
}

async function compare(what: string, inputs: Data[], fn: (...t: tf.Tensor[]) => tf.Tensor | tf.Tensor[]): Promise<void> {
  const want = await runOn('cpu', inputs, fn);
  const got = await runOn('webgpu', inputs, fn);
  assert.equal(got.length, want.length);
  got.forEach((g, i) => assertClose(g, want[i]!, `${what} [output ${i}]`));
}

type Pad = 'same' | 'valid' | number[][];
function convCase(k: number, s: number, padKind: string) {
  for (;;) {
    const n = int(1, 3);
    const h = int(5, 9);
    const w = int(5, 9);
    const c = int(1, 4);
    const pad: Pad = padKind === 'explicit' ? [[0, 0], [int(0, 2), int(0, 2)], [int(0, 2), int(0, 2)], [0, 0]] : padKind as Pad;
    const [t, b, l, r] = Array.isArray(pad) ? [pad[1]![0]!, pad[1]![1]!, pad[2]![0]!, pad[2]![1]!] : [0, 0, 0, 0];
    const out = (size: number, lo: number, hi: number) =>
      pad === 'same' ? Math.ceil(size / s) : pad === 'valid' ? Math.floor((size - k) / s) + 1 : Math.floor((size + lo + hi - k) / s) + 1;
    const ho = out(h, t, b);
    const wo = out(w, l, r);
    if (ho >= 1 && wo >= 1) return { n, h, w, c, ho, wo, pad, label: `n${n} ${h}x${w}x${c} k${k} s${s} ${JSON.stringify(pad)}` };
  }
}

test('Conv2DBackpropFilter / Conv2DBackpropInput equal the cpu kernels (1x1, 3x3; strides 1, 2; same, valid, explicit pads)', { skip }, async () => {
  for (const k of [1, 3]) {
    for (const s of [1, 2]) {
      for (const padKind of ['same', 'valid', 'explicit']) {
        const cs = convCase(k, s, padKind);
        const out = int(1, 5);
        const attrs = { strides: s, pad: cs.pad, dataFormat: 'NHWC' };
        await compare(`dW ${cs.label}`, [normal([cs.n, cs.h, cs.w, cs.c]), normal([cs.n, cs.ho, cs.wo, out])], (x, dy) =>
          tf.engine().runKernel('Conv2DBackpropFilter', { x: x!, dy: dy! }, { ...attrs, filterShape: [k, k, cs.c, out] }) as tf.Tensor);
        await compare(`dX ${cs.label}`, [normal([cs.n, cs.ho, cs.wo, out]), normal([k, k, cs.c, out])], (dy, f) =>
          tf.engine().runKernel('Conv2DBackpropInput', { dy: dy!, filter: f! }, { ...attrs, inputShape: [cs.n, cs.h, cs.w, cs.c] }) as tf.Tensor);
      }
    }
  }
});

test('depthwise gradients equal the cpu kernels (multiplier 1 and 2, strides 1 and 2)', { skip }, async () => {
  for (const m of [1, 2]) {
    for (const s of [1, 2]) {
      for (const padKind of ['same', 'explicit']) {
        const cs = convCase(3, s, padKind);
        const attrs = { strides: s, pad: cs.pad, dilations: [1, 1] };
        await compare(`depthwise dW m${m} ${cs.label}`, [normal([cs.n, cs.h, cs.w, cs.c]), normal([cs.n, cs.ho, cs.wo, cs.c * m])], (x, dy) =>
          tf.engine().runKernel('DepthwiseConv2dNativeBackpropFilter', { x: x!, dy: dy! }, { ...attrs, filterShape: [3, 3, cs.c, m] }) as tf.Tensor);
        await compare(`depthwise dX m${m} ${cs.label}`, [normal([cs.n, cs.ho, cs.wo, cs.c * m]), normal([3, 3, cs.c, m])], (dy, f) =>
          tf.engine().runKernel('DepthwiseConv2dNativeBackpropInput', { dy: dy!, filter: f! }, { ...attrs, inputShape: [cs.n, cs.h, cs.w, cs.c] }) as tf.Tensor);
      }
    }
  }
});

test('tf.grads through conv, depthwise, PReLU, gather (UnsortedSegmentSum) and a margin-style head', { skip }, async () => {
  const idx: Data = { values: Int32Array.from([1, 4, 1]), shape: [3], dtype: 'int32' };
  const f = (x: tf.Tensor, a: tf.Tensor, b: tf.Tensor, alpha: tf.Tensor, table: tf.Tensor, i: tf.Tensor) => {
    const h = tf.conv2d(x as tf.Tensor4D, a as tf.Tensor4D, 2, 'same');
    const d = tf.prelu(tf.depthwiseConv2d(h, b as tf.Tensor4D, 1, 'same'), alpha);
    const e = tf.mean(d, [1, 2]); // [3, 4]
    const w = tf.gather(table, i as tf.Tensor1D); // [3, 4]
    const cos = tf.matMul(tf.div(e, tf.norm(e, 2, 1, true)), tf.div(w, tf.norm(w, 2, 1, true)), false, true);
    return tf.losses.softmaxCrossEntropy(tf.oneHot(tf.tensor1d([0, 2, 1], 'int32'), 3), tf.mul(cos, 8));
  };
  await compare('grads', [normal([3, 9, 7, 3]), normal([3, 3, 3, 4]), normal([3, 3, 4, 1]), normal([4]), normal([10, 4]), idx], (...ts) =>
    tf.grads((a, b, c, d, e) => f(a!, b!, c!, d!, e!, ts[5]!))(ts.slice(0, 5)));
});

async function gradients(backend: string, spec: Partial<BackboneSpec> & { network: string }, batch: number, opts: TrainForwardOptions = {}): Promise<Map<string, Float32Array>> {
  await initBackend(backend, { quiet: true });
  const model = buildBackbone(spec, { seed: 11 });
  if (opts.freezeBatchNorm) {
    for (const w of model.weights) {
      if (w.originalName.endsWith('/moving_mean')) w.write(tf.randomNormal(w.shape as number[], 0, 0.1, 'float32', 8));
      if (w.originalName.endsWith('/moving_variance')) w.write(tf.randomUniform(w.shape as number[], 0.5, 2, 'float32', 9));
    }
  }
  const x = tf.randomUniform([batch, spec.inputSize!, spec.inputSize!, 3], -1, 1, 'float32', 5);
  const probe = tf.randomNormal([batch, spec.embeddingSize!], 0, 1, 'float32', 6);
  const updates: BatchNormUpdate[] = [];
  const { grads, value } = tf.variableGrads(() => tf.sum(tf.mul(trainForward(model, x, updates, opts), probe)) as tf.Scalar, trainableVariables(model));
  const out = new Map<string, Float32Array>();
  for (const w of model.trainableWeights) out.set(w.originalName, (await grads[(w.read() as tf.Variable).name]!.data()) as Float32Array);
  for (const u of updates) {
    out.set(`${u.layer.name}:mean`, (await u.mean.data()) as Float32Array);
    out.set(`${u.layer.name}:var`, (await u.variance.data()) as Float32Array);
    tf.dispose([u.mean, u.variance]);
  }
  tf.dispose([x, probe, value, ...Object.values(grads)]);
  model.dispose();
  return out;
}

/** ||Δ|| <= 1e-3 ||g|| per tensor; gradients that are ~0 in theory (round-off on both sides) against the global scale. */
function assertGradientsClose(got: Map<string, Float32Array>, want: Map<string, Float32Array>): void {
  assert.equal(got.size, want.size);
  assert.ok(want.size > 20);
  const norm = (a: ArrayLike<number>) => Math.sqrt(Array.from(a).reduce((s, v) => s + v * v, 0));
  const globalMax = Math.max(...[...want.values()].map((a) => a.reduce((m, v) => Math.max(m, Math.abs(v)), 0)));
  let compared = 0;
  for (const [name, ref] of want) {
    const g = got.get(name);
    assert.ok(g, `no webgpu value for ${name}`);
    const diff = norm(g.map((v, i) => v - ref[i]!));
    if (ref.reduce((m, v) => Math.max(m, Math.abs(v)), 0) < 1e-4 * globalMax) {
      assert.ok(diff <= 1e-6 * globalMax * Math.sqrt(g.length), `${name}: |Δ| ${diff} where the gradient is ~0`);
      continue;
    }
    assert.ok(diff <= 1e-3 * norm(ref), `${name}: ||Δ|| ${diff} > 1e-3 × ||g|| ${norm(ref)}`);
    compared++;
  }
  assert.ok(compared > want.size / 2, `only ${compared} of ${want.size} compared`);
}

const IRESNET = { network: 'iresnet', layers: [1, 1, 1, 1], widths: [8, 16, 16, 32], inputSize: 32, embeddingSize: 16 };
const MBF = { network: 'mbf', blocks: [1, 1, 1, 1], scale: 1, inputSize: 32, embeddingSize: 16 };

test('small IResNet: every weight gradient and BN batch statistic on webgpu equals the cpu backend\'s', { skip }, async () => {
  assertGradientsClose(await gradients('webgpu', IRESNET, 4), await gradients('cpu', IRESNET, 4));
});

test('mbf-like network (grouped, depthwise, GDC): webgpu gradients equal the cpu backend\'s', { skip }, async () => {
  assertGradientsClose(await gradients('webgpu', MBF, 4), await gradients('cpu', MBF, 4));
});

test('frozen BN (fine-tuning): IResNet gradients on webgpu equal the cpu backend\'s', { skip }, async () => {
  const opts = { freezeBatchNorm: true };
  assertGradientsClose(await gradients('webgpu', IRESNET, 2, opts), await gradients('cpu', IRESNET, 2, opts));
});

test('a training step (backbone, ArcFace Partial FC, SGD and AdamW, BN updates) reads only the loss back; tensors flat', { skip }, async () => {
  await initBackend('webgpu', { quiet: true });
  const backend = tf.backend() as unknown as { read(id: object): Promise<unknown>; readSync(id: object): unknown };
  let reads = 0;
  const read = backend.read.bind(backend);
  const readSync = backend.readSync.bind(backend);
  backend.read = (id) => (reads++, read(id));
  backend.readSync = (id) => (reads++, readSync(id));
  try {
    for (const kind of ['sgd', 'adamw'] as const) {
      const model = buildBackbone(IRESNET, { seed: 2 });
      const vars = trainableVariables(model);
      const head = new PartialFC({ numClasses: 10, embeddingSize: 16, margin: { s: 64, m1: 1, m2: 0.5, m3: 0 }, sampleRate: 1, seed: 1 });
      const opt = new TorchOptimizer([{ name: 'backbone', params: vars }, { name: 'head', params: [head.weight] }], { kind, weightDecay: 5e-4, momentum: 0.9 });
      const x = tf.randomUniform([2, 32, 32, 3], -1, 1, 'float32', 1);
      const labels = Int32Array.from([3, 7]);
      const counts: number[] = [];
      const readsPerStep: number[] = [];
      for (let i = 0; i < 3; i++) {
        const before = reads;
        const updates: BatchNormUpdate[] = [];
        const { value, grads } = tf.variableGrads(() => head.loss(trainForward(model, x, updates) as tf.Tensor2D, labels), [...vars, head.weight]);
        const loss = (await value.data())[0]!;
        assert.ok(Number.isFinite(loss));
        value.dispose();
        applyBatchNormUpdates(updates);
        opt.step(grads, 0.01);
        tf.dispose(Object.values(grads));
        readsPerStep.push(reads - before);
        counts.push(tf.memory().numTensors);
      }
      assert.deepEqual(readsPerStep, [1, 1, 1], `${kind}: GPU reads per step`);
      assert.deepEqual(counts.slice(1), new Array(2).fill(counts[1]), `${kind}: numTensors per step: ${counts}`);
      tf.dispose(x);
      opt.dispose?.();
      model.dispose();
    }
  } finally {
    backend.read = read;
    backend.readSync = readSync;
  }
});
