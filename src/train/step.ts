// One optimisation step, as train_v2.py's loop body: backbone forward in training mode -> margin loss over
// Partial FC -> backward -> (accumulate) -> optimiser step. The training loop and bench/train.ts share it.
import * as tf from '@tensorflow/tfjs';
import type { PartialFC } from '../losses/partial-fc.ts';
import { applyBatchNormUpdates, trainForward, type BatchNormUpdate } from './forward.ts';
import { compiledTrainStep } from './compiled-step.ts';
import type { GradientAccumulator, TorchOptimizer } from './optimizers.ts';

export interface StepParts {
  backbone: tf.LayersModel;
  head: PartialFC;
  optimizer: TorchOptimizer;
  /** The backbone's trainable variables (the head's weight is added here). */
  backboneVars: tf.Variable[];
  /** Reused across steps: the BatchNorm running-statistics updates of one forward pass. */
  bnUpdates: BatchNormUpdate[];
  /** Sums micro-batches and steps the optimiser every `every` calls (gradient_acc > 1). */
  accumulator?: GradientAccumulator | null;
  /** Fine-tuning: BatchNorm in inference mode, statistics frozen. */
  freezeBatchNorm?: boolean;
}

/**
 * Runs one step on a batch and resolves to its loss: the one GPU->CPU read per step. A loss that is not
 * finite updates nothing (weights, BatchNorm statistics and accumulated gradients stay as they were),
 * so the caller can stop with the last good state intact.
 */
export async function trainStep(p: StepParts, images: tf.Tensor4D, labels: Int32Array, lr: number): Promise<number> {
  // On the ort engines the whole step is one compiled graph where the backbone and head allow it.
  const fused = compiledTrainStep(p.backbone, p.head, images, labels, p.bnUpdates, p.freezeBatchNorm ?? false);
  let loss: number;
  let grads: tf.NamedTensorMap;
  if (fused) {
    ({ loss, grads } = fused);
  } else {
    const r = tf.variableGrads(
      () => p.head.loss(trainForward(p.backbone, images, p.bnUpdates, { freezeBatchNorm: p.freezeBatchNorm }) as tf.Tensor2D, labels),
      [...p.backboneVars, p.head.weight],
    );
    grads = r.grads;
    // Awaited: the webgpu backend has no synchronous read in Node.
    loss = (await r.value.data())[0]!;
    r.value.dispose();
  }
  if (!Number.isFinite(loss)) {
    tf.dispose(Object.values(grads));
    for (const u of p.bnUpdates) tf.dispose([u.mean, u.variance]);
    p.bnUpdates.length = 0;
    return loss;
  }
  applyBatchNormUpdates(p.bnUpdates);
  if (p.accumulator) {
    if (p.accumulator.add(grads)) {
      const summed = p.accumulator.take();
      p.optimizer.step(summed, lr);
      tf.dispose(Object.values(summed));
    }
  } else {
    p.optimizer.step(grads, lr);
  }
  tf.dispose(Object.values(grads));
  return loss;
}
