// Partial FC head against insightface's PartialFC_V2 path (fixtures/margin_loss.json), on cpu and wasm,
// plus the sampleRate < 1 path.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/select.ts';
import { PartialFC } from '../src/losses/partial-fc.ts';
import { SamplerRng, sampleClasses } from '../src/losses/class-sampler.ts';
import { TorchOptimizer } from '../src/train/optimizers.ts';

const FIXTURES = path.resolve(import.meta.dirname, '../../shared/fixtures');
const FILE = path.join(FIXTURES, 'margin_loss.json');
const skipMsg = existsSync(FILE) ? false : `fixture not found: ${FILE}`;

interface Case {
  name: string; s: number; m1: number; m2: number; m3: number;
  labels: number[]; embeddings: number[][]; weight: number[][];
  cos_logits: number[][]; final_logits: number[][]; loss: number;
  grad_embeddings: number[][]; grad_weight: number[][];
}

function maxAbsDiff(got: ArrayLike<number>, want: number[][]): number {
  const flat = want.flat();
  assert.equal(got.length, flat.length);
  let d = 0;
  for (let i = 0; i < flat.length; i++) d = Math.max(d, Math.abs(got[i] - flat[i]));
  return d;
}
const maxAbs = (a: number[][]) => Math.max(...a.flat().map(Math.abs));

for (const backend of ['cpu', 'wasm']) {
  test(`margin_loss.json: every case reproduced on ${backend}`, { skip: skipMsg }, async () => {
    await initBackend(backend, { quiet: true });
    const cases = (JSON.parse(readFileSync(FILE, 'utf8')) as { cases: Case[] }).cases;
    assert.equal(cases.length, 3);
    for (const c of cases) {
      const head = new PartialFC({
        numClasses: c.weight.length, embeddingSize: c.weight[0].length,
        margin: { s: c.s, m1: c.m1, m2: c.m2, m3: c.m3 },
      });
      head.setWeight(new Float32Array(c.weight.flat()));
      const emb = tf.tensor2d(c.embeddings);
      const out = head.forward(emb, c.labels);
      const cosTol = 1e-4 * maxAbs(c.cos_logits);
      assert.ok(maxAbsDiff(out.cosLogits.dataSync(), c.cos_logits) <= cosTol, `${c.name} cos_logits`);
      const finTol = 1e-4 * maxAbs(c.final_logits);
      assert.ok(maxAbsDiff(out.logits.dataSync(), c.final_logits) <= finTol, `${c.name} final_logits`);
      const loss = out.loss.dataSync()[0];
      assert.ok(Math.abs(loss - c.loss) <= 1e-5 * Math.abs(c.loss), `${c.name} loss ${loss} vs ${c.loss}`);
      tf.dispose([out.loss, out.cosLogits, out.logits]);

      // Gradients w.r.t. the embeddings and the centres (the head's variable).
      const ge = tf.grad((e: tf.Tensor) => head.loss(e as tf.Tensor2D, c.labels))(emb);
      const gw = tf.variableGrads(() => head.loss(emb, c.labels), [head.weight]).grads[head.weight.name];
      assert.ok(maxAbsDiff(ge.dataSync(), c.grad_embeddings) <= 1e-4, `${c.name} grad_embeddings ${maxAbsDiff(ge.dataSync(), c.grad_embeddings)}`);
      assert.ok(maxAbsDiff(gw.dataSync(), c.grad_weight) <= 1e-4, `${c.name} grad_weight ${maxAbsDiff(gw.dataSync(), c.grad_weight)}`);
      tf.dispose([ge, gw, emb]);
      head.dispose();
    }
  });
}

test('sampleClasses: all positives plus uniform negatives, sorted, labels remapped', () => {
  const rng = new SamplerRng(7);
  const labels = [5, 17, 5, 99, 0];
  const counts = new Float64Array(100);
  const draws = 4000;
  for (let t = 0; t < draws; t++) {
    const { index, labels: local } = sampleClasses(labels, 100, 0.1, rng);
    assert.equal(index.length, 10); // floor(0.1 * 100)
    for (let i = 1; i < index.length; i++) assert.ok(index[i] > index[i - 1], 'sorted, no repeats');
    for (const p of [0, 5, 17, 99]) assert.ok(index.includes(p));
    labels.forEach((l, i) => assert.equal(index[local[i]], l));
    for (const c of index) counts[c]++;
  }
  // Each of the 96 negatives is drawn with probability 6/96 per step: 250 expected, sd ~15.
  for (let c = 0; c < 100; c++) {
    if ([0, 5, 17, 99].includes(c)) continue;
    assert.ok(Math.abs(counts[c] - 250) < 80, `class ${c} drawn ${counts[c]} times`);
  }
  // sampleRate 0, or fewer samples than positives: positives only.
  assert.deepEqual([...sampleClasses(labels, 100, 0, rng).index], [0, 5, 17, 99]);
  assert.deepEqual([...sampleClasses(labels, 100, 0.03, rng).index], [0, 5, 17, 99]);
  assert.throws(() => sampleClasses([3, 100], 100, 0.5, rng), /label 100 at batch row 1 is outside \[0, 100\)/);
});

for (const backend of ['cpu', 'wasm']) {
  test(`sampleRate < 1 equals a full head on the sampled centres; gradient only on sampled rows (${backend})`, async () => {
    await initBackend(backend, { quiet: true });
    const before = tf.memory().numTensors;
    const C = 40;
    const D = 8;
    const labels = [3, 11, 3, 27, 39, 0];
    const head = new PartialFC({ numClasses: C, embeddingSize: D, sampleRate: 0.25, seed: 11, margin: { s: 64, m1: 1, m2: 0.5, m3: 0 } });
    const emb = tf.randomNormal([labels.length, D], 0, 1, 'float32', 5) as tf.Tensor2D;
    // Keep the rng state so the sampled run can be repeated to get gradients.
    const state = head.rngState;
    const out = head.forward(emb, labels);
    const index = out.index!;
    assert.equal(index.length, 10);
    head.rngState = state;
    const { value, grads } = tf.variableGrads(() => head.loss(emb, labels), [head.weight]);
    const gw = grads[head.weight.name].arraySync() as number[][];

    // Independent computation: a full head whose centres are W[index], labels remapped by hand.
    const full = new PartialFC({ numClasses: index.length, embeddingSize: D, margin: { s: 64, m1: 1, m2: 0.5, m3: 0 } });
    const w = head.weight.arraySync();
    full.setWeight(new Float32Array(Array.from(index).flatMap((r) => w[r])));
    const local = labels.map((l) => index.indexOf(l));
    const ref = tf.variableGrads(() => full.loss(emb, local), [full.weight]);
    const rgw = ref.grads[full.weight.name].arraySync() as number[][];
    assert.ok(Math.abs(value.dataSync()[0] - ref.value.dataSync()[0]) < 1e-5 * ref.value.dataSync()[0]);
    assert.equal(out.loss.dataSync()[0], value.dataSync()[0]);
    for (let r = 0; r < C; r++) {
      const k = index.indexOf(r);
      for (let j = 0; j < D; j++) {
        if (k < 0) assert.equal(gw[r][j], 0, `unsampled row ${r} has zero gradient`);
        else assert.ok(Math.abs(gw[r][j] - rgw[k][j]) < 1e-6, `row ${r}`);
      }
    }
    assert.ok(rgw.flat().some((v) => v !== 0));
    tf.dispose([out.loss, out.cosLogits, out.logits, value, ref.value, emb, ...Object.values(grads), ...Object.values(ref.grads)]);
    head.dispose();
    full.dispose();
    assert.equal(tf.memory().numTensors, before, 'no leaked tensors');
  });
}

test('sampled head + SGD: unsampled centres still get weight decay (dense zero gradient, as in partial_fc_v2.py)', async () => {
  await initBackend('cpu', { quiet: true });
  const head = new PartialFC({ numClasses: 30, embeddingSize: 4, sampleRate: 0.2, seed: 3, margin: { s: 64, m1: 1, m2: 0, m3: 0.4 } });
  const emb = tf.randomNormal([4, 4], 0, 1, 'float32', 9) as tf.Tensor2D;
  const labels = [1, 2, 3, 4];
  const w0 = head.weight.arraySync();
  const state = head.rngState;
  const index = head.forward(emb, labels);
  tf.dispose([index.loss, index.cosLogits, index.logits]);
  head.rngState = state;
  const opt = new TorchOptimizer([{ name: 'head', params: [head.weight] }], { kind: 'sgd', weightDecay: 0.5 });
  const { value, grads } = tf.variableGrads(() => head.loss(emb, labels), [head.weight]);
  opt.step(grads, 0.1);
  const w1 = head.weight.arraySync();
  for (let r = 0; r < 30; r++) {
    if (index.index!.includes(r)) continue;
    // g = 0 + 0.5 p; buf = g; p - 0.1 buf = 0.95 p
    for (let j = 0; j < 4; j++) assert.ok(Math.abs(w1[r][j] - 0.95 * w0[r][j]) < 1e-7, `row ${r}`);
  }
  tf.dispose([value, emb, ...Object.values(grads)]);
  opt.dispose();
  head.dispose();
});
