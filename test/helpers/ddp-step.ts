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

/** What one step's backward gives, before the all-reduce. */
export interface DdpGradients {
  /** The global loss. */
  loss: number;
  /** [rank][variable]: each rank's backbone gradient share, through its own embeddings. */
  shares: Float32Array[][];
  /** The centres' gradient (not in DDP: the whole loss's). */
  head: Float32Array;
  /** Rank 0's BatchNorm batch statistics (the ones its running statistics take in). */
  updates: BatchNormUpdate[];
}

/** Forward and backward of one step of a `images.length`-rank run, in one process. */
export function ddpGradients(backbone: tf.LayersModel, head: PartialFC, images: tf.Tensor4D[], labels: Int32Array): DdpGradients {
  const vars = trainableVariables(backbone);
  const updates: BatchNormUpdate[] = [];
  // Every rank's embeddings as constants; rank 0's pass also gives its BatchNorm statistics.
  const fixed = images.map((x, r) => tf.tidy(() => trainForward(backbone, x, r === 0 ? updates : null, { compiled: false })));
  let loss = NaN;
  let headGrad: Float32Array = new Float32Array(0);
  const shares = images.map((x, r) => {
    const { value, grads } = tf.variableGrads(() => {
      const own = trainForward(backbone, x, null, { compiled: false });
      return head.loss(tf.concat(fixed.map((e, q) => (q === r ? own : e))) as tf.Tensor2D, labels);
    }, [...vars, head.weight]);
    if (r === 0) {
      loss = value.dataSync()[0]!;
      headGrad = grads[head.weight.name]!.dataSync() as Float32Array;
    }
    const mine = vars.map((v) => grads[v.name]!.dataSync() as Float32Array);
    value.dispose();
    tf.dispose(Object.values(grads));
    return mine;
  });
  tf.dispose(fixed);
  return { loss, shares, head: headGrad, updates };
}

/** The all-reduced backbone gradient: a float32 sum, or DDP's fp16 hook (each share to fp16, summed in fp16). */
export function allReduce(shares: Float32Array[][], fp16: boolean): Float32Array[] {
  return shares[0]!.map((_, v) => {
    const out = new Float32Array(shares[0]![v]!.length);
    for (let i = 0; i < out.length; i++) {
      let acc = 0;
      for (const s of shares) acc = fp16 ? toHalf(acc + toHalf(s[v]![i]!)) : Math.fround(acc + s[v]![i]!);
      out[i] = acc;
    }
    return out;
  });
}

/** The optimiser step, the scheduler step and rank 0's running statistics, as train_v2.py orders them. */
export function applyStep(backbone: tf.LayersModel, head: PartialFC, opt: TorchOptimizer, sched: PolynomialLRWarmup, backboneGrads: Float32Array[], headGrad: Float32Array, updates: BatchNormUpdate[]): void {
  const vars = trainableVariables(backbone);
  const grads: tf.NamedTensorMap = {};
  vars.forEach((v, i) => (grads[v.name] = tf.tensor(backboneGrads[i]!, v.shape)));
  grads[head.weight.name] = tf.tensor(headGrad, head.weight.shape);
  applyBatchNormUpdates(updates);
  opt.step(grads, sched.lr);
  tf.dispose(Object.values(grads));
  sched.step();
}

/** The global loss of a step without its backward (rank 0's BatchNorm statistics collected into `updates` when given). */
export function ddpLoss(backbone: tf.LayersModel, head: PartialFC, images: tf.Tensor4D[], labels: Int32Array): number {
  return tf.tidy(() => {
    const embs = images.map((x) => trainForward(backbone, x, null, { compiled: false }));
    return head.loss(tf.concat(embs) as tf.Tensor2D, labels).dataSync()[0]!;
  });
}
