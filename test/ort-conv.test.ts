// The ort engine's convolution kernels against the cpu backend (1e-4 relative to the largest value)
// on randomised shapes: strides 1/2, pads same/valid/explicit, odd sizes, dense/grouped/depthwise
// (multiplier 1 and 2), batch 1 and 5; forward, dX and dW. Each also checks that ORT ran it.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/select.ts';
import { ortStats } from '../src/backend/ort-conv.ts';

type Pad = 'same' | 'valid' | [[number, number], [number, number], [number, number], [number, number]];
interface Case {
  n: number;
  h: number;
  w: number;
  c: number;
  k: [number, number];
  out: number; // dense: output channels; depthwise: multiplier
  stride: [number, number];
  pad: Pad;
  depthwise: boolean;
  dilation?: number;
}

/** Deterministic cases: a fixed list covering the corners plus seeded random ones. */
function cases(): Case[] {
  let s = 12345;
  const rnd = (lo: number, hi: number) => {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    return lo + (s % (hi - lo + 1));
  };
  const fixed: Case[] = [
    { n: 5, h: 9, w: 7, c: 3, k: [3, 3], out: 4, stride: [2, 2], pad: 'same', depthwise: false },
    { n: 1, h: 8, w: 8, c: 4, k: [3, 3], out: 5, stride: [2, 2], pad: 'valid', depthwise: false },
    { n: 5, h: 7, w: 7, c: 6, k: [1, 1], out: 3, stride: [2, 2], pad: 'valid', depthwise: false },
    { n: 1, h: 8, w: 6, c: 6, k: [1, 1], out: 7, stride: [1, 1], pad: 'same', depthwise: false },
    { n: 5, h: 6, w: 6, c: 2, k: [3, 3], out: 2, stride: [1, 1], pad: [[0, 0], [1, 1], [1, 1], [0, 0]], depthwise: false },
    { n: 5, h: 10, w: 10, c: 4, k: [3, 3], out: 4, stride: [2, 2], pad: [[0, 0], [1, 1], [1, 1], [0, 0]], depthwise: false },
    { n: 5, h: 9, w: 8, c: 5, k: [3, 3], out: 1, stride: [2, 2], pad: 'same', depthwise: true },
    { n: 1, h: 7, w: 9, c: 3, k: [3, 3], out: 2, stride: [1, 1], pad: 'valid', depthwise: true },
    { n: 5, h: 8, w: 8, c: 4, k: [5, 3], out: 2, stride: [2, 1], pad: 'same', depthwise: true },
    { n: 1, h: 11, w: 8, c: 3, k: [2, 4], out: 3, stride: [1, 2], pad: 'valid', depthwise: false },
    { n: 1, h: 9, w: 9, c: 3, k: [3, 3], out: 4, stride: [1, 1], pad: 'same', depthwise: false, dilation: 2 },
  ];
  const random: Case[] = [];
  for (let i = 0; i < 14; i++) {
    const depthwise = i % 3 === 2;
    const k = rnd(1, 4);
    random.push({
      n: rnd(0, 1) ? 5 : 1,
      h: rnd(k + 1, 13),
      w: rnd(k + 1, 13),
      c: rnd(1, 6),
      k: [k, rnd(1, 4)],
      out: depthwise ? rnd(1, 2) : rnd(1, 7),
      stride: [rnd(1, 2), rnd(1, 2)],
      pad: rnd(0, 1) ? 'same' : 'valid',
      depthwise,
    });
  }
  return [...fixed, ...random];
}

interface Results {
  y: Float32Array;
  dx: Float32Array;
  dw: Float32Array;
}

function run(c: Case, seed: number): Results {
  let result!: Results;
  tf.tidy(() => {
    const x = tf.randomUniform([c.n, c.h, c.w, c.c], -1, 1, 'float32', seed) as tf.Tensor4D;
    const w = tf.randomUniform([c.k[0], c.k[1], c.c, c.out], -1, 1, 'float32', seed + 1) as tf.Tensor4D;
    const conv = (a: tf.Tensor4D, b: tf.Tensor4D) =>
      c.depthwise ? tf.depthwiseConv2d(a, b, c.stride, c.pad) : tf.conv2d(a, b, c.stride, c.pad, 'NHWC', c.dilation ?? 1);
    const y = conv(x, w);
    const dy = tf.randomUniform(y.shape, -1, 1, 'float32', seed + 2);
    result = { y: y.dataSync() as Float32Array, dx: new Float32Array(), dw: new Float32Array() };
    if (c.dilation == null) {
      const [dx, dw] = tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(conv(a as tf.Tensor4D, b as tf.Tensor4D), dy)))([x, w]);
      result.dx = dx!.dataSync() as Float32Array;
      result.dw = dw!.dataSync() as Float32Array;
    }
  });
  return result;
}

function assertClose(name: string, got: Float32Array, want: Float32Array): void {
  assert.equal(got.length, want.length, `${name}: length`);
  let scale = 0;
  let diff = 0;
  for (let i = 0; i < want.length; i++) {
    scale = Math.max(scale, Math.abs(want[i]!));
    diff = Math.max(diff, Math.abs(got[i]! - want[i]!));
  }
  assert.ok(diff <= 1e-4 * Math.max(scale, 1e-6), `${name}: max |Δ| ${diff} vs max |ref| ${scale}`);
}

for (const engine of ['ort', 'ort-cpu']) {
  test(`${engine}: conv forward, dX and dW equal the cpu backend on ${cases().length} shapes`, async () => {
    const all = cases();
    const want: Results[] = [];
    await initBackend('cpu', { quiet: true });
    all.forEach((c, i) => want.push(run(c, 100 + i)));
    await initBackend(engine, { quiet: true });
    all.forEach((c, i) => {
      const before = ortStats().runs;
      const got = run(c, 100 + i);
      const name = `${engine} ${JSON.stringify(c)}`;
      assertClose(`${name} y`, got.y, want[i]!.y);
      assertClose(`${name} dx`, got.dx, want[i]!.dx);
      assertClose(`${name} dw`, got.dw, want[i]!.dw);
      // The kernels really ran on ORT: forward (except depthwise on `ort`, XNNPACK's by choice; run
      // again inside tf.grads), dX and dW.
      const fwd = c.depthwise && engine === 'ort' ? 0 : 1;
      const expected = c.dilation == null ? 2 * fwd + 2 : fwd;
      assert.equal(ortStats().runs - before, expected, `${name}: ORT kernel runs`);
    });
  });
}

test('ort: fused conv2d with bias and relu equals the cpu backend', async () => {
  const f = () =>
    tf.tidy(() => {
      const x = tf.randomUniform([5, 9, 9, 3], -1, 1, 'float32', 7) as tf.Tensor4D;
      const filter = tf.randomUniform([3, 3, 3, 4], -1, 1, 'float32', 8) as tf.Tensor4D;
      const bias = tf.randomUniform([4], -1, 1, 'float32', 9);
      return tf.fused.conv2d({ x, filter, strides: 2, pad: 'same', bias, activation: 'relu' }).dataSync() as Float32Array;
    });
  await initBackend('cpu', { quiet: true });
  const want = f();
  await initBackend('ort', { quiet: true });
  assertClose('fused', f(), want);
});

before(async () => {
  tf.enableProdMode();
});
