// Verification protocol against insightface's calculate_roc output (fixtures/verification.json).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { readNpy } from '../src/formats/npy.ts';
import {
  evaluateVerification, flipSumEmbeddings, formatAccuracyFlip, numpySum, sequentialFolds,
} from '../src/eval/verification.ts';

const FIXTURES = path.resolve(import.meta.dirname, '../../shared/fixtures');
const skipMsg = existsSync(path.join(FIXTURES, 'verification.json')) ? false : `fixtures not found at ${FIXTURES}`;

test('verification.json: folds, mean, std exactly; tpr/fpr within 1e-9', { skip: skipMsg }, () => {
  const want = JSON.parse(readFileSync(path.join(FIXTURES, 'verification.json'), 'utf8')) as {
    issame: boolean[]; accuracy_per_fold: number[]; accuracy_mean: number; accuracy_std: number; tpr: number[]; fpr: number[];
  };
  const emb = readNpy(path.join(FIXTURES, 'embeddings.npy'));
  const r = evaluateVerification(emb.data as Float32Array, emb.shape[1], want.issame);
  assert.deepEqual(r.accuracyPerFold, want.accuracy_per_fold);
  assert.equal(r.accuracyMean, want.accuracy_mean);
  assert.equal(r.accuracyStd, want.accuracy_std);
  assert.equal(r.tpr.length, 400);
  for (let t = 0; t < 400; t++) {
    assert.ok(Math.abs(r.tpr[t] - want.tpr[t]) <= 1e-9, `tpr[${t}]`);
    assert.ok(Math.abs(r.fpr[t] - want.fpr[t]) <= 1e-9, `fpr[${t}]`);
  }
  assert.equal(formatAccuracyFlip('lfw', 2000, r), '[lfw][2000]Accuracy-Flip: 0.96333+-0.02963');
  // TAR@FAR over all pairs: recomputed here by scanning a fine threshold grid (independent of the sort trick).
  const d = Array.from({ length: want.issame.length }, (_, k) => {
    let s = 0;
    for (let j = 0; j < 32; j++) s += (emb.data[2 * k * 32 + j] as number - (emb.data[(2 * k + 1) * 32 + j] as number)) ** 2;
    return s;
  });
  const neg = want.issame.filter((s) => !s).length;
  const pos = want.issame.length - neg;
  let bestTar = 0;
  for (let t = 0; t <= 4; t += 1e-4) {
    const fp = d.filter((v, i) => !want.issame[i] && v < t).length;
    if (fp / neg <= 1e-3) bestTar = d.filter((v, i) => want.issame[i] && v < t).length / pos;
  }
  assert.ok(r.tarAtFar.far <= 1e-3);
  assert.equal(r.tarAtFar.tar, bestTar);
});

test('sklearn KFold sizes: the first folds take the extra pairs', () => {
  assert.deepEqual(sequentialFolds(6000, 10), Array(10).fill(600));
  assert.deepEqual(sequentialFolds(23, 10), [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]);
});

test('numpy pairwise sum order (values whose float sum depends on the order)', () => {
  // 1e16 + 1 + 1 ... : sequential adds lose the ones; numpy's 8 accumulators keep part of them.
  const a = [1e16, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1];
  // numpy: r = a[0..7]; ((1e16+1)+(1+1))+((1+1)+(1+1)) = 1e16+6 -> 1e16+6 ; then +1 +1 +1
  let expect = ((1e16 + 1) + (1 + 1)) + ((1 + 1) + (1 + 1));
  for (let i = 8; i < 11; i++) expect += 1;
  assert.equal(numpySum(a), expect);
  assert.notEqual(numpySum(a), a.reduce((x, y) => x + y));
});

test('a hand-made case: ties to the smallest threshold, strict <, odd fold sizes', () => {
  // 11 pairs in 1-d: dist = (a-b)^2; two folds of 6 and 5 pairs.
  const dists = [0.04, 0.09, 0.25, 1.0, 0.01, 2.25, 0.0, 0.36, 1.44, 0.16, 3.24];
  const same = [true, true, false, false, true, false, true, true, false, false, false];
  const emb = new Float32Array(dists.flatMap((d) => [0, Math.sqrt(d)]));
  const r = evaluateVerification(emb, 1, same, { folds: 2 });
  assert.deepEqual(r.foldSizes, [6, 5]);
  // Fold 0 trains on pairs 6..10 (same: 0.0, 0.36; different: 1.44, 0.16, 3.24): the smallest threshold
  // with the best training accuracy (4/5) is 0.01 (0.0 < 0.01 only).
  assert.equal(r.bestThresholds[0], 0.01);
  // Test on fold 0 at 0.01: no distance there is below 0.01, so all are "different": 3/6 correct.
  assert.equal(r.accuracyPerFold[0], 3 / 6);
  // Strict <: a distance of exactly 0.25 (0.5^2, exact in float32) is not below threshold 0.25.
  const s = evaluateVerification(new Float32Array([0, 0.5, 0, 0.5, 0, 0.5, 0, 0.5]), 1, [true, true, true, true], { folds: 2 });
  assert.equal(s.thresholds[25], 0.25);
  assert.equal(s.tpr[25], 0);
  assert.equal(s.tpr[26], 1);
});

test('flip-sum: XNorm over both copies, sum before normalising', () => {
  const orig = new Float32Array([3, 4, 0, 1]);
  const flip = new Float32Array([0, 0, 0, 3]);
  const { embeddings, xnorm } = flipSumEmbeddings(orig, flip, 2);
  assert.equal(xnorm, (5 + 1 + 0 + 3) / 4);
  assert.deepEqual([...embeddings], [0.6, 0.8, 0, 1].map(Math.fround));
});
