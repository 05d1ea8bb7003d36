// The compiled training graphs' convolution forward, input gradient and filter gradient (every path of
// src/onnx/training.ts: pointwise, unfold, whole-batch GEMM, ConvTranspose and flipped-Conv dX, one
// window over the whole input, dense/grouped/depthwise (NCHWc-blocked where the channels allow),
// ZeroPadding2D folded into the conv) against
// the cpu backend layer by layer (1e-4 relative to the largest value) on randomised shapes: strides
// 1/2, pads same/valid/explicit, odd sizes, groups 1/2/depthwise (multiplier 1 and 2), batch 1 and 5.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/select.ts';
import { compiledTimes } from '../src/ort/train.ts';
import { GroupedConv2D } from '../src/models/grouped-conv.ts';
import { trainForward, trainableVariables } from '../src/train/forward.ts';
import { maxAbs, maxAbsDiff } from './helpers/compare.ts';

interface Case {
  n: number;
  h: number;
  w: number;
  c: number;
  k: number;
  kind: 'dense' | 'grouped' | 'depthwise';
  /** Output channels (dense, grouped) or the depth multiplier (depthwise). */
  out: number;
  stride: number;
  pad: 'same' | 'valid' | 'zeropad';
}

function cases(): Case[] {
  let s = 777;
  const rnd = (lo: number, hi: number) => {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    return lo + (s % (hi - lo + 1));
  };
  const fixed: Case[] = [
    { n: 5, h: 9, w: 7, c: 3, k: 3, kind: 'dense', out: 4, stride: 2, pad: 'same' },
    { n: 1, h: 8, w: 8, c: 4, k: 3, kind: 'dense', out: 5, stride: 1, pad: 'valid' },
    { n: 5, h: 7, w: 7, c: 6, k: 1, kind: 'dense', out: 3, stride: 2, pad: 'valid' },
    { n: 1, h: 6, w: 6, c: 4, k: 3, kind: 'dense', out: 40, stride: 1, pad: 'zeropad' }, // o > oh*ow: whole-batch GEMM
    { n: 5, h: 5, w: 5, c: 6, k: 3, kind: 'dense', out: 30, stride: 2, pad: 'same' },
    { n: 5, h: 9, w: 8, c: 4, k: 3, kind: 'grouped', out: 6, stride: 1, pad: 'same' },
    { n: 1, h: 7, w: 9, c: 6, k: 3, kind: 'grouped', out: 4, stride: 2, pad: 'valid' },
    { n: 5, h: 9, w: 8, c: 5, k: 3, kind: 'depthwise', out: 1, stride: 2, pad: 'same' },
    { n: 1, h: 7, w: 9, c: 3, k: 3, kind: 'depthwise', out: 2, stride: 1, pad: 'valid' },
    { n: 5, h: 8, w: 8, c: 4, k: 3, kind: 'depthwise', out: 1, stride: 2, pad: 'zeropad' },
    // One window over the whole input: dense (with bias) and depthwise (a global depthwise conv) take
    // the product path; depthwise with multiplier 2 the general one.
    { n: 5, h: 5, w: 5, c: 4, k: 5, kind: 'dense', out: 6, stride: 1, pad: 'valid' },
    { n: 5, h: 7, w: 7, c: 6, k: 7, kind: 'depthwise', out: 1, stride: 1, pad: 'valid' },
    { n: 1, h: 3, w: 3, c: 3, k: 3, kind: 'depthwise', out: 2, stride: 2, pad: 'valid' },
    // Channels a multiple of onnxruntime's NCHWc block (8 or 16): its blocked depthwise kernels.
    { n: 5, h: 9, w: 8, c: 16, k: 3, kind: 'depthwise', out: 1, stride: 1, pad: 'same' },
    { n: 5, h: 9, w: 9, c: 32, k: 3, kind: 'depthwise', out: 1, stride: 2, pad: 'zeropad' },
  ];
  const random: Case[] = [];
  for (let i = 0; i < 10; i++) {
    const kind = (['dense', 'grouped', 'depthwise'] as const)[i % 3]!;
    const k = rnd(1, 3) * 2 - 1;
    const c = kind === 'grouped' ? 2 * rnd(1, 3) : rnd(1, 6);
    random.push({
      n: rnd(0, 1) ? 5 : 1,
      h: rnd(k + 1, 13),
      w: rnd(k + 1, 13),
      c,
      k,
      kind,
      out: kind === 'depthwise' ? rnd(1, 2) : kind === 'grouped' ? 2 * rnd(1, 3) : rnd(1, 9),
      stride: rnd(1, 2),
      pad: (['same', 'valid', 'zeropad'] as const)[rnd(0, 2)]!,
    });
  }
  return [...fixed, ...random];
}

/**
 * image -> 1x1 conv (so the case's conv has an input gradient to test) -> [ZeroPadding2D] -> the case's
 * conv -> output feature map. Weights from `seed`, so two backends build the same model.
 */
function buildModel(c: Case, seed: number): tf.LayersModel {
  const init = (i: number) => tf.initializers.randomUniform({ minval: -1, maxval: 1, seed: seed + i });
  const input = tf.input({ shape: [c.h, c.w, 3] });
  let x = tf.layers.conv2d({ filters: c.c, kernelSize: 1, useBias: false, kernelInitializer: init(1), name: 'pre' }).apply(input) as tf.SymbolicTensor;
  let padding: 'same' | 'valid' = c.pad === 'same' ? 'same' : 'valid';
  if (c.pad === 'zeropad') {
    x = tf.layers.zeroPadding2d({ padding: [[1, 0], [1, 2]], name: 'pad' }).apply(x) as tf.SymbolicTensor;
    padding = 'valid';
  }
  const common = { kernelSize: c.k, strides: c.stride, padding, name: 'conv' };
  const layer =
    c.kind === 'dense'
      ? tf.layers.conv2d({ ...common, filters: c.out, useBias: true, kernelInitializer: init(2), biasInitializer: init(3) })
      : c.kind === 'depthwise'
        ? tf.layers.depthwiseConv2d({ ...common, depthMultiplier: c.out, useBias: false, depthwiseInitializer: init(2) })
        : new GroupedConv2D({ ...common, filters: c.out, groups: 2, kernelInitializer: init(2) });
  return tf.model({ inputs: input, outputs: layer.apply(x) as tf.SymbolicTensor });
}

function run(c: Case, compiled: boolean): Map<string, Float32Array> {
  const model = buildModel(c, 100);
  const x = tf.randomUniform([c.n, c.h, c.w, 3], -1, 1, 'float32', 5);
  const out = new Map<string, Float32Array>();
  const { value, grads } = tf.variableGrads(() => {
    const y = trainForward(model, x, null, { compiled });
    out.set('y', y.dataSync() as Float32Array);
    // A fixed, non-uniform upstream gradient.
    return tf.sum(tf.mul(y, tf.randomUniform(y.shape, -1, 1, 'float32', 6))) as tf.Scalar;
  }, trainableVariables(model));
  for (const w of model.trainableWeights) out.set(w.originalName, grads[(w.read() as tf.Variable).name]!.dataSync() as Float32Array);
  tf.dispose([x, value, ...Object.values(grads)]);
  model.dispose();
  return out;
}

function assertClose(what: string, got: Float32Array, want: Float32Array): void {
  const diff = maxAbsDiff(got, want);
  const scale = maxAbs(want);
  assert.ok(diff <= 1e-4 * Math.max(scale, 1e-6), `${what}: max |Δ| ${diff} vs max |ref| ${scale}`);
}

for (const engine of ['ort', 'ort-cpu']) {
  test(`${engine}, compiled: conv forward, dX and dW equal the cpu backend on ${cases().length} shapes`, async () => {
    for (const c of cases()) {
      await initBackend('cpu', { quiet: true });
      const want = run(c, false);
      await initBackend(engine, { quiet: true });
      const before = compiledTimes.backwardMs;
      const got = run(c, true);
      assert.ok(compiledTimes.backwardMs > before, `${JSON.stringify(c)}: the compiled graphs ran`);
      // pre/kernel's gradient goes through the case's dX; conv/kernel (and bias) is its dW.
      assert.deepEqual([...got.keys()].sort(), [...want.keys()].sort());
      for (const [name, ref] of want) assertClose(`${JSON.stringify(c)} ${name}`, got.get(name)!, ref);
    }
  });
}
