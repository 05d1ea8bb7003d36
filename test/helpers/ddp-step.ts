// One train_v2.py step of an N-rank DDP run, replayed in one process with this project's parts: each rank's
// images go through the backbone on their own (DDP normalises BatchNorm per GPU), the embeddings meet in one
// Partial FC loss (PartialFC_V2 all-gathers them), each rank's backbone gradient is its own share (through
// its own embeddings), and the all-reduce optionally rounds them to fp16 as the compression hook does.
import * as tf from '@tensorflow/tfjs';
import type { PartialFC } from '../../src/losses/partial-fc.ts';
import type { TorchOptimizer } from '../../src/train/optimizers.ts';
import type { PolynomialLRWarmup } from '../../src/train/lr-schedule.ts';
import { applyBatchNormUpdates, trainForward, trainableVariables, type BatchNormUpdate } from '../../src/train/forward.ts';

/** Rounds to the nearest IEEE half-precision value (ties to even), returned as a number. */
export function toHalf(x: number): number {
  if (x === 0 || !Number.isFinite(x)) return x;
  const a = Math.abs(x);
  if (a >= 65520) return Math.sign(x) * Infinity;
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  if (2 ** (e + 1) <= a) e++;
  const ulp = 2 ** (Math.max(e, -14) - 10);
  const q = a / ulp;
  const f = Math.floor(q);
  const d = q - f;
  const r = d > 0.5 ? f + 1 : d < 0.5 ? f : f % 2 === 0 ? f : f + 1;
  return Math.sign(x) * r * ulp;
}

export interface DdpStepOptions {
  /** DDP's fp16 compression hook: each rank's gradient to fp16, summed in fp16. */
  fp16Allreduce: boolean;
}

/** Runs one step; returns the global loss (before the update). Only rank 0's BatchNorm statistics are kept. */
export function ddpStep(
  backbone: tf.LayersModel,
  head: PartialFC,
  opt: TorchOptimizer,
  sched: PolynomialLRWarmup,
  images: tf.Tensor4D[],
  labels: Int32Array,
  o: DdpStepOptions,
): number {
  const vars = trainableVariables(backbone);
  const updates: BatchNormUpdate[] = [];
  // Every rank's embeddings as constants (rank 0's pass also gives the BatchNorm statistics it keeps).
  const fixed = images.map((x, r) => tf.tidy(() => trainForward(backbone, x, r === 0 ? updates : null, { compiled: false })));
  let loss = NaN;
  const shares: tf.NamedTensorMap[] = [];
  images.forEach((x, r) => {
    const { value, grads } = tf.variableGrads(() => {
      const own = trainForward(backbone, x, null, { compiled: false });
      const all = tf.concat(fixed.map((e, q) => (q === r ? own : e))) as tf.Tensor2D;
      return head.loss(all, labels);
    }, [...vars, head.weight]);
    if (r === 0) loss = value.dataSync()[0]!;
    value.dispose();
    shares.push(grads);
  });
  tf.dispose(fixed);
  const grads: tf.NamedTensorMap = {};
  for (const v of vars) {
    const parts = shares.map((g) => g[v.name]!.dataSync() as Float32Array);
    const out = new Float32Array(parts[0]!.length);
    for (let i = 0; i < out.length; i++) {
      if (o.fp16Allreduce) {
        let acc = 0;
        for (const p of parts) acc = toHalf(acc + toHalf(p[i]!));
        out[i] = acc;
      } else {
        let acc = 0;
        for (const p of parts) acc = Math.fround(acc + p[i]!);
        out[i] = acc;
      }
    }
    grads[v.name] = tf.tensor(out, v.shape);
  }
  // The centres are not in DDP: their gradient is the whole loss's (the same in every rank's pass).
  grads[head.weight.name] = shares[0]![head.weight.name]!.clone();
  for (const g of shares) tf.dispose(Object.values(g));
  applyBatchNormUpdates(updates);
  opt.step(grads, sched.lr);
  tf.dispose(Object.values(grads));
  sched.step();
  return loss;
}
