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
