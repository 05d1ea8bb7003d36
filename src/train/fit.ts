// A training loop over batches held in memory, on whatever tfjs backend is active (browsers included):
// the same step as `train()` (src/train/step.ts: PyTorch-BatchNorm forward, margin loss + Partial FC, torch
// SGD/AdamW) and polynomial warm-up schedule, without files, data loaders, checkpoints or verification.
import * as tf from '@tensorflow/tfjs';
import { ArcfaceError } from '../errors.ts';
import type { PartialFC } from '../losses/partial-fc.ts';
import { trainableVariables, type BatchNormUpdate } from './forward.ts';
import { trainStep, type StepParts } from './step.ts';
import { PolynomialLRWarmup } from './lr-schedule.ts';
import { TorchOptimizer, type OptimizerKind } from './optimizers.ts';

/** What `onProgress` receives after every training iteration (of `train()` and `fit()`). */
export interface TrainProgress {
  /** Steps done so far (1 after the first). */
  step: number;
  /** The step the run ends at. */
  totalSteps: number;
  epoch: number;
  loss: number;
  /** The learning rate the step used. */
  lr: number;
}

export interface FitBatch {
  /** n x size x size x 3 pixels, already normalised ((x - 127.5) / 127.5), NHWC. */
  images: Float32Array;
  /** n class indices in [0, head.numClasses). */
  labels: Int32Array;
}

export interface FitOptions {
  backbone: tf.LayersModel;
  head: PartialFC;
  /** Batches in order; one pass over them is one epoch (an array is reused for `epochs`). */
  batches: Iterable<FitBatch> | AsyncIterable<FitBatch>;
  /** Passes over `batches` (default 1; more need a re-iterable such as an array). */
  epochs?: number;
  /** Stop after this many steps (default: all batches of all epochs). Sets the schedule's length. */
  steps?: number;
  /** Base learning rate (default 0.1, the reference's SGD). */
  lr?: number;
  warmupSteps?: number;
  optimizer?: OptimizerKind;
  weightDecay?: number;
  /** Gradient-norm clip on the backbone (default 5, as the reference). */
  clipNorm?: number;
  freezeBatchNorm?: boolean;
  onProgress?: (p: TrainProgress) => void;
  /** Aborting stops before the next step; `fit` then resolves with `stopped: true`. */
  signal?: AbortSignal;
}

export interface FitResult {
  steps: number;
  finalLoss: number;
  stopped: boolean;
}

/** Trains `backbone` and `head` in place (neither is disposed). Throws ArcfaceError when the loss diverges. */
export async function fit(o: FitOptions): Promise<FitResult> {
  const epochs = o.epochs ?? 1;
  let total = o.steps;
  if (total === undefined) {
    if (!Array.isArray(o.batches)) throw new ArcfaceError('fit: give `steps` when `batches` is not an array');
    total = o.batches.length * epochs;
  }
  const side = o.backbone.inputs[0]!.shape[1]!;
  const backboneVars = trainableVariables(o.backbone);
  const opt = new TorchOptimizer(
    [
      { name: 'backbone', params: backboneVars, clipNorm: o.clipNorm ?? 5 },
      { name: 'head', params: [o.head.weight] },
    ],
    { kind: o.optimizer ?? 'sgd', weightDecay: o.weightDecay ?? 5e-4, momentum: 0.9 },
  );
  const sched = new PolynomialLRWarmup({ baseLr: o.lr ?? 0.1, warmupSteps: o.warmupSteps ?? 0, totalSteps: Math.max(total, (o.warmupSteps ?? 0) + 1) });
  const bnUpdates: BatchNormUpdate[] = [];
  const parts: StepParts = { backbone: o.backbone, head: o.head, optimizer: opt, backboneVars, bnUpdates, freezeBatchNorm: o.freezeBatchNorm ?? false };
  let step = 0;
  let finalLoss = NaN;
  let stopped = false;
  try {
    epochs: for (let epoch = 0; epoch < epochs && step < total; epoch++) {
      for await (const batch of o.batches) {
        if (o.signal?.aborted) {
          stopped = true;
          break epochs;
        }
        const n = batch.labels.length;
        if (batch.images.length !== n * side * side * 3) {
          throw new ArcfaceError(`fit: batch ${step} has ${batch.images.length} pixel values for ${n} labels at ${side}x${side}x3`);
        }
        const images = tf.tensor4d(batch.images, [n, side, side, 3]);
        const lr = sched.lr;
        let loss: number;
        try {
          loss = await trainStep(parts, images, batch.labels, lr);
        } finally {
          images.dispose();
        }
        if (!Number.isFinite(loss)) throw new ArcfaceError(`fit: loss is ${loss} at step ${step + 1}; lower lr or check the data`);
        sched.step();
        step++;
        finalLoss = loss;
        o.onProgress?.({ step, totalSteps: total, epoch, loss, lr });
        if (step >= total) break epochs;
      }
    }
  } finally {
    for (const u of bnUpdates) tf.dispose([u.mean, u.variance]);
    opt.dispose();
  }
  return { steps: step, finalLoss, stopped };
}
