// Softmax cross-entropy as insightface's DistCrossEntropy (arcface_torch/partial_fc_v2.py), single process.
import * as tf from '@tensorflow/tfjs';
import { type Labels, labelsTensor, oneHotFloat } from './margin.ts';

/** The smallest target probability before the log: a diverged row contributes -log(1e-30) = 69.08. */
export const P_TARGET_FLOOR = 1e-30;

/**
 * Mean over the batch of -log(max(p_target, 1e-30)) with p = softmax(logits) (row max subtracted).
 * Backward is exactly (p - onehot) / B times the upstream gradient, also on rows whose p_target was
 * clamped. A label -1 row has p_target = 0 (as on a single rank in the reference). Returns a scalar.
 */
export function distCrossEntropy(logits: tf.Tensor2D, labels: Labels): tf.Scalar {
  const [batch, classes] = logits.shape;
  const onehot = tf.tidy(() => oneHotFloat(labelsTensor(labels), classes));
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [z, save] = args as [tf.Tensor, tf.GradSaveFunc];
    const p = tf.tidy(() => {
      const shifted = z.sub(z.max(1, true));
      const e = shifted.exp();
      return e.div(e.sum(1, true));
    });
    save([p, onehot]); // customGrad clones and keeps saved tensors until the backward pass
    const value = tf.tidy(() => {
      const pTarget = p.mul(onehot).sum(1);
      return pTarget.maximum(P_TARGET_FLOOR).log().mean().neg() as tf.Scalar;
    });
    const gradFunc = (dy: tf.Tensor, saved: tf.Tensor[]) => saved[0].sub(saved[1]).div(batch).mul(dy);
    return { value, gradFunc };
  });
  const loss = f(logits) as tf.Scalar;
  onehot.dispose();
  return loss;
}
