// Margin variants, filtering, label -1 and DistCrossEntropy against values computed here in float64.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/select.ts';
import { CombinedMarginLoss } from '../src/losses/margin.ts';
import { distCrossEntropy } from '../src/losses/cross-entropy.ts';

const close = (a: number, b: number, tol: number, msg: string) => assert.ok(Math.abs(a - b) <= tol, `${msg}: ${a} vs ${b}`);

test('unsupported margin combinations are errors, as in the reference', async () => {
  await initBackend('cpu', { quiet: true });
  assert.throws(() => new CombinedMarginLoss({ s: 64, m1: 1.35, m2: 0, m3: 0 }), /unsupported combination m1=1.35/);
  assert.throws(() => new CombinedMarginLoss({ s: 64, m1: 1, m2: 0.5, m3: 0, easyMargin: true }), /classic/);
  // m3 > 0 selects CosFace and ignores m1, m2.
  assert.equal(new CombinedMarginLoss({ s: 64, m1: 1.35, m2: 0.5, m3: 0.4 }).path, 'cosface');
});

test('ArcFace (reference): cos(theta+m) with no theta+m>pi fallback, straight-through gradient', async () => {
  await initBackend('cpu', { quiet: true });
  const s = 64;
  const m = 0.5;
  const loss = new CombinedMarginLoss({ s, m1: 1, m2: m, m3: 0 });
  const c = tf.tensor2d([[-0.95, 0.3, 0.7], [0.2, 0.9, -0.1], [0.5, 0.6, 0.7]]);
  const labels = [0, 1, -1];
  const z = loss.apply(c, labels).arraySync();
  close(z[0][0], s * Math.cos(Math.acos(-0.95) + m), 1e-4, 'target past pi'); // -0.9834 * 64 per the notes
  close(z[0][0] / s, -0.9834, 1e-4, 'notes value');
  close(z[1][1], s * Math.cos(Math.acos(0.9) + m), 1e-4, 'target');
  close(z[0][1], s * 0.3, 1e-5, 'non-target unchanged');
  assert.deepEqual(z[2].map((v) => v / s).map((v) => Math.round(v * 1e6) / 1e6), [0.5, 0.6, 0.7]); // label -1: no margin
  const w = tf.tensor2d([[1, 2, 3], [4, 5, 6], [7, 8, 9]]);
  const g = tf.grad((x: tf.Tensor) => loss.apply(x as tf.Tensor2D, labels).mul(w).sum())(c).arraySync();
  assert.deepEqual(g, [[64, 128, 192], [256, 320, 384], [448, 512, 576]]); // s * upstream everywhere
});

test('ArcFace classic (old insightface): linear fallback past pi, easy margin, true gradient', async () => {
  await initBackend('cpu', { quiet: true });
  const s = 64;
  const m = 0.5;
  const classic = new CombinedMarginLoss({ s, m1: 1, m2: m, m3: 0, variant: 'classic' });
  const easy = new CombinedMarginLoss({ s, m1: 1, m2: m, m3: 0, variant: 'classic', easyMargin: true });
  const c = tf.tensor2d([[-0.95, 0.3], [0.2, 0.6], [-0.4, 0.1]]);
  const labels = [0, 1, 0];
  const z = classic.apply(c, labels).arraySync();
  close(z[0][0], s * (-0.95 - m * Math.sin(m)), 1e-4, 'fallback c - m sin m');
  const phi = (x: number) => x * Math.cos(m) - Math.sqrt(1 - x * x) * Math.sin(m);
  close(z[1][1], s * phi(0.6), 1e-4, 'phi');
  close(z[2][0], s * phi(-0.4), 1e-4, 'phi for c > cos(pi-m)');
  const ze = easy.apply(c, labels).arraySync();
  close(ze[2][0], s * -0.4, 1e-5, 'easy margin leaves c <= 0');
  close(ze[1][1], s * phi(0.6), 1e-4, 'easy margin phi where c > 0');
  const g = tf.grad((x: tf.Tensor) => classic.apply(x as tf.Tensor2D, labels).sum())(c).arraySync() as number[][];
  const dphi = (x: number) => Math.cos(m) + (x * Math.sin(m)) / Math.sqrt(1 - x * x);
  close(g[1][1], s * dphi(0.6), 1e-3, 'true derivative');
  close(g[2][0], s * dphi(-0.4), 1e-3, 'true derivative');
  close(g[0][0], s, 1e-4, 'fallback derivative 1');
  close(g[0][1], s, 1e-4, 'non-target');
});

test('CosFace and inter-class filtering (targets never filtered, filtered entries get no gradient)', async () => {
  await initBackend('cpu', { quiet: true });
  const loss = new CombinedMarginLoss({ s: 10, m1: 1, m2: 0, m3: 0.4, interclassFilteringThreshold: 0.4 });
  const c = tf.tensor2d([[0.9, 0.5, 0.3], [0.45, 0.1, 0.41], [0.6, 0.2, 0.95]]);
  const labels = [0, 2, -1];
  const z = loss.apply(c, labels).arraySync();
  const want = [[10 * (0.9 - 0.4), 0, 3], [0, 1, 10 * (0.41 - 0.4)], [0, 2, 0]];
  for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) close(z[i][j], want[i][j], 1e-5, `z[${i}][${j}]`);
  const g = tf.grad((x: tf.Tensor) => loss.apply(x as tf.Tensor2D, labels).sum())(c).arraySync();
  assert.deepEqual(g, [[10, 0, 10], [0, 10, 10], [0, 10, 0]]);
});

test('DistCrossEntropy: clamp at 1e-30 in the loss, (p - onehot)/B in the backward even on a clamped row', async () => {
  await initBackend('cpu', { quiet: true });
  const logits = [[64, -64, 0], [1, 2, 3]];
  const labels = [1, 2];
  // float64 reference
  const p = logits.map((r) => {
    const mx = Math.max(...r);
    const e = r.map((v) => Math.exp(v - mx));
    const sum = e.reduce((a, b) => a + b);
    return e.map((v) => v / sum);
  });
  const want = -(Math.log(Math.max(p[0][1], 1e-30)) + Math.log(p[1][2])) / 2;
  close(want, (69.0775527898 + -Math.log(p[1][2])) / 2, 1e-8, 'row 0 is clamped');
  const x = tf.tensor2d(logits);
  const loss = distCrossEntropy(x, labels);
  close(loss.dataSync()[0], want, 1e-5 * want, 'loss');
  const g = tf.grad((t: tf.Tensor) => distCrossEntropy(t as tf.Tensor2D, labels).mul(3))(x).arraySync() as number[][];
  for (let i = 0; i < 2; i++) {
    for (let j = 0; j < 3; j++) close(g[i][j], (3 * (p[i][j] - (labels[i] === j ? 1 : 0))) / 2, 1e-6, `grad ${i},${j}`);
  }
});
