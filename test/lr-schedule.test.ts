import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PolynomialLRWarmup } from '../src/train/lr-schedule.ts';

// Printed by torch 1.13 (Debian python3-torch) running insightface's PolynomialLRWarmup on an SGD with
// lr 0.1, total_iters 10, power 1: opt.param_groups[0]['lr'] before each of 12 iterations, stepping
// opt and scheduler after each (script: scratch/losses/torch_opt.py, not committed).
const TORCH_W0 = [0.1, 0.09000000000000001, 0.08000000000000002, 0.07, 0.06000000000000001, 0.05000000000000001,
  0.04000000000000001, 0.03000000000000001, 0.019999999999999997, 0.009999999999999998, 0.0, 0.0];
const TORCH_W3 = [0.1, 0.03333333333333333, 0.06666666666666667, 0.10000000000000002, 0.08571428571428574,
  0.07142857142857145, 0.057142857142857155, 0.04285714285714287, 0.02857142857142858, 0.014285714285714297, 0.0, 0.0];

function sequence(warmupSteps: number, n: number): number[] {
  const s = new PolynomialLRWarmup({ baseLr: 0.1, warmupSteps, totalSteps: 10 });
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    out.push(s.lr);
    s.step();
  }
  return out;
}

test('warmup 0, total 10: 0.1, 0.09, ..., 0.01, 0 with torch float64 round-off', () => {
  assert.deepEqual(sequence(0, 12), TORCH_W0);
});

test('warmup 3, total 10: the first iteration uses the full base lr (the reference quirk)', () => {
  assert.deepEqual(sequence(3, 12), TORCH_W3);
});

test('restore replays to the same value; bad settings are errors', () => {
  const s = new PolynomialLRWarmup({ baseLr: 0.1, warmupSteps: 3, totalSteps: 10 });
  s.restore(5);
  assert.equal(s.lr, TORCH_W3[5]);
  assert.equal(s.stepCount, 5);
  assert.throws(() => new PolynomialLRWarmup({ baseLr: 0.1, warmupSteps: 10, totalSteps: 10 }), /totalSteps \(10\) must be/);
  assert.throws(() => new PolynomialLRWarmup({ baseLr: -1, warmupSteps: 0, totalSteps: 10 }), /baseLr/);
});
