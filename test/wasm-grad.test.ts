// The wasm gradient kernels (src/backend/wasm-grad.ts) against the cpu backend's reference kernels,
// on randomised small shapes: strides 1/2, pads same/valid/explicit, odd sizes, depthwise multiplier 1/2.
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/select.ts';
import { registerWasmGradientKernels, WASM_GRADIENT_KERNELS } from '../src/backend/wasm-grad.ts';
import { prng } from './helpers/random-weights.ts';

type Pad = 'same' | 'valid' | [[number, number], [number, number], [number, number], [number, number]];
type Data = { values: Float32Array | Int32Array; shape: number[]; dtype: 'float32' | 'int32' };

// Deterministic PRNG (mulberry32) so a failure reproduces.
const rng = prng;
const rand = rng(20240603);
const int = (lo: number, hi: number): number => lo + Math.floor(rand() * (hi - lo + 1));
const normal = (shape: number[]): Data => {
  const n = shape.reduce((a, b) => a * b, 1);
  const values = new Float32Array(n);
  for (let i = 0; i < n; i++) values[i] = rand() * 2 - 1;
  return { values, shape, dtype: 'float32' };
};

/** Runs `fn` on `backend` with fresh tensors built from `inputs`; returns every output's values. */
async function runOn(backend: string, inputs: Data[], fn: (...t: tf.Tensor[]) => tf.Tensor | tf.Tensor[]): Promise<Data[]> {
  assert.ok(await tf.setBackend(backend));
  const ts = inputs.map((d) => tf.tensor(d.values, d.shape, d.dtype));
  const out = tf.tidy(() => fn(...ts));
  const outs = Array.isArray(out) ? out : [out];
  const res = outs.map((t) => ({ values: t.dataSync() as Float32Array, shape: t.shape, dtype: 'float32' as const }));
  tf.dispose([...ts, ...outs]);
  return res;
}

/** Asserts max|got - want| <= tol * max|want| (and equal shapes). */
function assertClose(got: Data, want: Data, what: string, tol = 1e-4): void {
  assert.deepEqual(got.shape, want.shape, `${what}: shape`);
  let maxRef = 0;
  let maxDiff = 0;
  for (let i = 0; i < want.values.length; i++) {
    maxRef = Math.max(maxRef, Math.abs(want.values[i]));
    maxDiff = Math.max(maxDiff, Math.abs(got.values[i] - want.values[i]));
  }
  assert.ok(Number.isFinite(maxDiff), `${what}: non-finite values`);
  assert.ok(maxRef > 0, `${what}: reference is all zeros, the case tests nothing`);
  assert.ok(maxDiff <= tol * maxRef, `${what}: max|diff| ${maxDiff} > ${tol} * ${maxRef}`);
}

async function compare(what: string, inputs: Data[], fn: (...t: tf.Tensor[]) => tf.Tensor | tf.Tensor[], tol?: number) {
  const want = await runOn('cpu', inputs, fn);
  const got = await runOn('wasm', inputs, fn);
  assert.equal(got.length, want.length);
  got.forEach((g, i) => assertClose(g, want[i], `${what} [output ${i}]`, tol));
}

const outSize = (inp: number, k: number, s: number, pad: Pad, lo: number, hi: number): number =>
  pad === 'same' ? Math.ceil(inp / s) : pad === 'valid' ? Math.floor((inp - k) / s) + 1 : Math.floor((inp + lo + hi - k) / s) + 1;

interface Case {
  n: number; h: number; w: number; c: number; out: number; kh: number; kw: number;
  strides: [number, number]; pad: Pad; ho: number; wo: number; label: string;
}

function makeCase(kernel: [number, number], strides: [number, number], padKind: string, out: number): Case {
  const n = rand() < 0.5 ? 1 : 3;
  const [kh, kw] = kernel;
  for (;;) {
    const h = int(5, 9);
    const w = int(5, 9);
    const pad: Pad =
      padKind === 'explicit' ? [[0, 0], [int(0, 2), int(0, 2)], [int(0, 2), int(0, 2)], [0, 0]] : (padKind as Pad);
    const [t, b, l, r] = Array.isArray(pad) ? [pad[1][0], pad[1][1], pad[2][0], pad[2][1]] : [0, 0, 0, 0];
    const ho = outSize(h, kh, strides[0], pad, t, b);
    const wo = outSize(w, kw, strides[1], pad, l, r);
    if (ho < 1 || wo < 1) continue;
    const c = int(1, 4);
    const label = `n${n} ${h}x${w}x${c} k${kh}x${kw} s${strides} ${JSON.stringify(pad)} out${out}`;
    return { n, h, w, c, out, kh, kw, strides, pad, ho, wo, label };
  }
}

const KERNEL_SIZES: [number, number][] = [[1, 1], [3, 3], [3, 1]];
const STRIDES: [number, number][] = [[1, 1], [2, 2], [2, 1]];
const PADS = ['same', 'valid', 'explicit'];

before(async () => {
  await initBackend('wasm', { quiet: true });
});

describe('wasm gradient kernels match the cpu backend', () => {
  test('registers every kernel the wasm backend lacked', () => {
    for (const name of ['Conv2DBackpropFilter', 'Conv2DBackpropInput', 'DepthwiseConv2dNativeBackpropFilter',
      'DepthwiseConv2dNativeBackpropInput', 'UnsortedSegmentSum']) {
      assert.ok(WASM_GRADIENT_KERNELS.includes(name), name);
      assert.ok(tf.getKernel(name, 'wasm') != null, `${name} not registered for wasm`);
    }
  });

  test('Conv2DBackpropFilter and Conv2DBackpropInput', async () => {
    for (const kernel of KERNEL_SIZES) {
      for (const strides of STRIDES) {
        for (const padKind of PADS) {
          const k = makeCase(kernel, strides, padKind, int(1, 5));
          const x = normal([k.n, k.h, k.w, k.c]);
          const dy = normal([k.n, k.ho, k.wo, k.out]);
          const filter = normal([k.kh, k.kw, k.c, k.out]);
          const attrs = { strides, pad: k.pad, dataFormat: 'NHWC' };
          await compare(`dW ${k.label}`, [x, dy], (xt, dyt) =>
            tf.engine().runKernel('Conv2DBackpropFilter', { x: xt, dy: dyt },
              { ...attrs, filterShape: [k.kh, k.kw, k.c, k.out] }) as tf.Tensor);
          await compare(`dX ${k.label}`, [dy, filter], (dyt, ft) =>
            tf.engine().runKernel('Conv2DBackpropInput', { dy: dyt, filter: ft },
              { ...attrs, inputShape: [k.n, k.h, k.w, k.c] }) as tf.Tensor);
        }
      }
    }
  });

  test('Conv2D gradients in NCHW layout', async () => {
    const k = makeCase([3, 3], [2, 2], 'same', 3);
    const x = normal([k.n, k.c, k.h, k.w]);
    const dy = normal([k.n, k.out, k.ho, k.wo]);
    const filter = normal([3, 3, k.c, k.out]);
    const attrs = { strides: [2, 2], pad: 'same', dataFormat: 'NCHW' };
    await compare(`dW NCHW ${k.label}`, [x, dy], (xt, dyt) =>
      tf.engine().runKernel('Conv2DBackpropFilter', { x: xt, dy: dyt }, { ...attrs, filterShape: [3, 3, k.c, k.out] }) as tf.Tensor);
    await compare(`dX NCHW ${k.label}`, [dy, filter], (dyt, ft) =>
      tf.engine().runKernel('Conv2DBackpropInput', { dy: dyt, filter: ft },
        { ...attrs, inputShape: [k.n, k.c, k.h, k.w] }) as tf.Tensor);
  });

  test('DepthwiseConv2dNativeBackpropFilter and DepthwiseConv2dNativeBackpropInput', async () => {
    for (const multiplier of [1, 2]) {
      for (const kernel of KERNEL_SIZES) {
        for (const strides of STRIDES) {
          for (const padKind of PADS) {
            const k = makeCase(kernel, strides, padKind, multiplier);
            const x = normal([k.n, k.h, k.w, k.c]);
            const dy = normal([k.n, k.ho, k.wo, k.c * multiplier]);
            const filter = normal([k.kh, k.kw, k.c, multiplier]);
            const attrs = { strides, pad: k.pad, dilations: [1, 1] };
            await compare(`depthwise dW ${k.label}`, [x, dy], (xt, dyt) =>
              tf.engine().runKernel('DepthwiseConv2dNativeBackpropFilter', { x: xt, dy: dyt },
                { ...attrs, filterShape: [k.kh, k.kw, k.c, multiplier] }) as tf.Tensor);
            await compare(`depthwise dX ${k.label}`, [dy, filter], (dyt, ft) =>
              tf.engine().runKernel('DepthwiseConv2dNativeBackpropInput', { dy: dyt, filter: ft },
                { ...attrs, inputShape: [k.n, k.h, k.w, k.c] }) as tf.Tensor);
          }
        }
      }
    }
  });

  test('registration is idempotent', () => {
    const before = WASM_GRADIENT_KERNELS.map((k) => tf.getKernel(k, 'wasm')?.kernelFunc);
    registerWasmGradientKernels();
    registerWasmGradientKernels();
    assert.deepEqual(WASM_GRADIENT_KERNELS.map((k) => tf.getKernel(k, 'wasm')?.kernelFunc), before);
  });

  test('a dy of the wrong shape is rejected, naming the kernel', async () => {
    assert.ok(await tf.setBackend('wasm'));
    const dy = tf.ones([1, 4, 4, 2]);
    const filter = tf.ones([3, 3, 1, 2]);
    assert.throws(
      () => tf.engine().runKernel('Conv2DBackpropInput', { dy, filter },
        { strides: 2, pad: 'same', dataFormat: 'NHWC', inputShape: [1, 9, 9, 1] }),
      /Conv2DBackpropInput: dy has shape \[1,4,4,2\] but the convolution's output shape is \[1,5,5,2\]/,
    );
    tf.dispose([dy, filter]);
  });

  test('depthwise gradients reject dilation > 1 with a clear error', async () => {
    assert.ok(await tf.setBackend('wasm'));
    const x = tf.ones([1, 5, 5, 2]);
    const dy = tf.ones([1, 1, 1, 2]);
    assert.throws(
      () => tf.engine().runKernel('DepthwiseConv2dNativeBackpropFilter', { x, dy },
        { strides: 1, pad: 'valid', dilations: [2, 2], filterShape: [3, 3, 2, 1] }),
      /dilation 1 only/,
    );
    tf.dispose([x, dy]);
  });

  test('UnsortedSegmentSum for ranks 1-3, repeated, unused and out-of-range ids', async () => {
    // Reference computed here: the cpu kernel mis-broadcasts ids of rank > 1 when x has more axes.
    const cases: { x: number[]; ids: number[]; numSegments: number }[] = [
      { x: [7], ids: [7], numSegments: 4 },
      { x: [6, 5], ids: [6], numSegments: 9 },
      { x: [4, 3, 2], ids: [4], numSegments: 3 },
      { x: [4, 3, 2], ids: [4, 3], numSegments: 5 },
      { x: [3, 2], ids: [3, 2], numSegments: 2 },
    ];
    assert.ok(await tf.setBackend('wasm'));
    for (const c of cases) {
      const x = normal(c.x);
      const size = c.ids.reduce((a, b) => a * b, 1);
      const ids = Int32Array.from({ length: size }, (_, i) => (i === 1 ? -1 : i === 2 ? c.numSegments : int(0, c.numSegments - 1)));
      ids[3 % size] = ids[0]; // a repeated id must sum
      const inner = x.values.length / size;
      const want = new Float32Array(c.numSegments * inner);
      ids.forEach((id, i) => {
        if (id < 0 || id >= c.numSegments) return;
        for (let j = 0; j < inner; j++) want[id * inner + j] += x.values[i * inner + j];
      });
      const out = tf.tidy(() => tf.engine().runKernel('UnsortedSegmentSum',
        { x: tf.tensor(x.values, c.x), segmentIds: tf.tensor(ids, c.ids, 'int32') }, { numSegments: c.numSegments }) as tf.Tensor);
      const got: Data = { values: out.dataSync() as Float32Array, shape: out.shape, dtype: 'float32' };
      out.dispose();
      assertClose(got, { values: want, shape: [c.numSegments, ...c.x.slice(c.ids.length)], dtype: 'float32' },
        `segment sum x[${c.x}] ids[${c.ids}] n${c.numSegments}`, 1e-6);
    }
  });

  test('tf.grad through conv, depthwise (multiplier 1 and 2) and gather', async () => {
    const x = normal([3, 9, 7, 3]);
    const w1 = normal([3, 3, 3, 4]);
    const w2 = normal([3, 3, 4, 1]);
    const w3 = normal([3, 3, 4, 2]);
    const table = normal([10, 4]);
    const idx: Data = { values: Int32Array.from([1, 4, 1]), shape: [3], dtype: 'int32' };
    const f = (xt: tf.Tensor, a: tf.Tensor, b: tf.Tensor, c: tf.Tensor, t: tf.Tensor, i: tf.Tensor) => {
      const h = tf.conv2d(xt as tf.Tensor4D, a as tf.Tensor4D, 2, 'same');
      const d1 = tf.depthwiseConv2d(h, b as tf.Tensor4D, 1, 'same');
      const d2 = tf.depthwiseConv2d(h, c as tf.Tensor4D, 2, 'valid');
      const rows = tf.gather(t, i as tf.Tensor1D); // [3, 4]
      const s1 = tf.sum(tf.mul(tf.mean(d1, [1, 2]), rows));
      return tf.add(s1, tf.sum(tf.square(d2)));
    };
    await compare('grads', [x, w1, w2, w3, table, idx], (...ts) =>
      tf.grads((a, b, c, d, e) => f(a, b, c, d, e, ts[5]))(ts.slice(0, 5)));
  });

  test('tf.variableGrads of a small IResNet/MobileFaceNet-style model', async () => {
    assert.ok(await tf.setBackend('cpu'));
    const inp = tf.input({ shape: [9, 9, 3] });
    const conv = (filters: number, kernelSize: number, strides: number) =>
      tf.layers.conv2d({ filters, kernelSize, strides, padding: 'same', useBias: false, kernelInitializer: 'glorotNormal' });
    let x = conv(8, 3, 1).apply(inp) as tf.SymbolicTensor;
    x = tf.layers.batchNormalization({ epsilon: 1e-5 }).apply(x) as tf.SymbolicTensor;
    x = tf.layers.prelu({ sharedAxes: [1, 2], alphaInitializer: tf.initializers.constant({ value: 0.25 }) }).apply(x) as tf.SymbolicTensor;
    const main = tf.layers.depthwiseConv2d({ kernelSize: 3, strides: 2, padding: 'same', useBias: false, depthMultiplier: 2 })
      .apply(x) as tf.SymbolicTensor;
    const shortcut = conv(16, 1, 2).apply(x) as tf.SymbolicTensor;
    let y = tf.layers.add().apply([main, shortcut]) as tf.SymbolicTensor;
    y = tf.layers.batchNormalization({ epsilon: 1e-5 }).apply(y) as tf.SymbolicTensor;
    y = tf.layers.flatten().apply(y) as tf.SymbolicTensor;
    y = tf.layers.dense({ units: 6 }).apply(y) as tf.SymbolicTensor;
    const model = tf.model({ inputs: inp, outputs: y });
    const xin = normal([3, 9, 9, 3]);
    const gradsOn = async (backend: string) => {
      assert.ok(await tf.setBackend(backend));
      const xt = tf.tensor(xin.values, xin.shape);
      const { value, grads } = tf.variableGrads(() =>
        tf.sum(tf.square(model.apply(xt, { training: true }) as tf.Tensor)) as tf.Scalar);
      const out: Record<string, Data> = {};
      for (const [name, g] of Object.entries(grads)) {
        out[name] = { values: g.dataSync() as Float32Array, shape: g.shape, dtype: 'float32' };
      }
      tf.dispose([xt, value, ...Object.values(grads)]);
      return out;
    };
    const want = await gradsOn('cpu');
    const got = await gradsOn('wasm');
    assert.deepEqual(Object.keys(got).sort(), Object.keys(want).sort());
    assert.ok(Object.keys(want).length >= 10);
    for (const name of Object.keys(want)) assertClose(got[name], want[name], `grad of ${name}`, 1e-3);
    model.layers.forEach((l) => l.dispose());
  });
});
