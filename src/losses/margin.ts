// Combined margin softmax logits (insightface CombinedMarginLoss): ArcFace, CosFace, inter-class filtering.
// Input: clamped cosines (N x C) and labels (-1 = no target in this row). Output: scaled logits for
// softmax cross-entropy, as arcface_torch/losses.py computes them.
import * as tf from '@tensorflow/tfjs';
import { ArcfaceError } from '../errors.ts';

/**
 * `reference`: today's insightface ArcFace: forward cos(acos(c)+m2) with no theta+m>pi handling, and a
 *   straight-through backward (dz/dc = s), exactly as the reference's in-place no-grad trick trains.
 * `classic`: the OLD insightface ArcFace (before commit 657ae30e, Dec 2022): phi = c cos m - sin(theta) sin m
 *   with the linear fallback c - m sin m when c <= cos(pi - m) (or, with easyMargin, phi only where c > 0),
 *   differentiated for real (true gradient). Only the ArcFace path differs; CosFace is the same in both.
 */
export type MarginVariant = 'reference' | 'classic';

export interface MarginOptions {
  /** Scale s (64 in the reference). */
  s: number;
  /** Multiplicative angular margin; must be 1 unless m3 > 0 (the reference raises otherwise). */
  m1: number;
  /** Additive angular margin (ArcFace, 0.5 by default in the reference). */
  m2: number;
  /** Additive cosine margin (CosFace, 0.4); m3 > 0 selects the CosFace path and ignores m1, m2. */
  m3: number;
  /** Non-target cosines above this are zeroed (0 = off; 0.4 in the WF12M noisy configs). */
  interclassFilteringThreshold?: number;
  variant?: MarginVariant;
  /** Only for variant 'classic': apply the margin only where cos > 0. */
  easyMargin?: boolean;
}

/** Labels accepted by the losses: host arrays avoid a device read; -1 marks a row without a target. */
export type Labels = Int32Array | readonly number[] | tf.Tensor1D;

export function labelsTensor(labels: Labels): tf.Tensor1D {
  return labels instanceof tf.Tensor ? labels.toInt() : tf.tensor1d(Array.from(labels), 'int32');
}

/** Float one-hot rows (all zero for label -1). Built as int32 then cast: wasm's OneHot ignores a float dtype. */
export function oneHotFloat(labels: tf.Tensor1D, numClasses: number): tf.Tensor2D {
  return tf.tidy(() => tf.oneHot(labels, numClasses).toFloat() as tf.Tensor2D);
}

/** Combined margin (s, m1, m2, m3) as in insightface; `apply` turns cosines into final logits. */
export class CombinedMarginLoss {
  readonly s: number;
  readonly m1: number;
  readonly m2: number;
  readonly m3: number;
  readonly threshold: number;
  readonly variant: MarginVariant;
  readonly easyMargin: boolean;
  readonly path: 'arcface' | 'cosface';

  constructor(opts: MarginOptions) {
    const { s, m1, m2, m3 } = opts;
    for (const [k, v] of Object.entries({ s, m1, m2, m3 })) {
      if (!Number.isFinite(v)) throw new ArcfaceError(`margin: ${k} must be a finite number, got ${v}`);
    }
    this.s = s;
    this.m1 = m1;
    this.m2 = m2;
    this.m3 = m3;
    this.threshold = opts.interclassFilteringThreshold ?? 0;
    this.variant = opts.variant ?? 'reference';
    this.easyMargin = opts.easyMargin ?? false;
    if (this.variant !== 'reference' && this.variant !== 'classic') {
      throw new ArcfaceError(`margin: unknown variant "${String(this.variant)}" (use reference or classic)`);
    }
    if (this.easyMargin && this.variant !== 'classic') {
      throw new ArcfaceError('margin: easyMargin exists only in the classic ArcFace variant');
    }
    // Branch selection as in the reference: not a true combination of the three margins.
    if (m1 === 1 && m3 === 0) this.path = 'arcface';
    else if (m3 > 0) this.path = 'cosface';
    else {
      throw new ArcfaceError(
        `margin: unsupported combination m1=${m1}, m2=${m2}, m3=${m3} (m1 != 1 needs m3 > 0; SphereFace-style margins are not implemented, as in the reference)`,
      );
    }
  }

  /**
   * Final logits (N x C) from clamped cosine logits (N x C). Rows whose label is -1 get no margin.
   * Differentiable: use inside `tf.variableGrads` / `optimizer.minimize`.
   */
  apply(cosLogits: tf.Tensor2D, labels: Labels): tf.Tensor2D {
    return tf.tidy(() => {
      const [n, c] = cosLogits.shape;
      const lab = labelsTensor(labels);
      if (lab.shape[0] !== n) {
        throw new ArcfaceError(`margin: ${lab.shape[0]} labels for ${n} rows of logits`);
      }
      const onehot = oneHotFloat(lab, c); // label -1 rows get no target
      let x = cosLogits;
      if (this.threshold > 0) {
        // Mask built without gradient; the product keeps it (zeroed entries get zero gradient).
        const t = this.threshold;
        const keep = noGrad(x, (v) => tf.logicalOr(tf.lessEqual(v, t), tf.cast(onehot, 'bool')).toFloat());
        x = x.mul(keep);
      }
      if (this.path === 'cosface') {
        return x.sub(onehot.mul(this.m3)).mul(this.s);
      }
      if (this.variant === 'classic') return this.classic(x, onehot);
      return straightThroughArc(x, onehot, this.m2, this.s);
    });
  }

  private classic(x: tf.Tensor2D, onehot: tf.Tensor2D): tf.Tensor2D {
    const m = this.m2;
    // Margin on the target cosine only: gather it, transform, and put it back (true gradient).
    const target = x.mul(onehot).sum(1, true);
    // Guard the sqrt at |c| = 1 where its derivative is infinite.
    const sine = tf.sqrt(tf.clipByValue(tf.sub(1, target.square()), 1e-12, 1));
    const phi = target.mul(Math.cos(m)).sub(sine.mul(Math.sin(m)));
    let chosen: tf.Tensor;
    if (this.easyMargin) {
      chosen = tf.where(noGrad(target, (v) => tf.greater(v, 0)), phi, target);
    } else {
      const th = Math.cos(Math.PI - m);
      const mm = Math.sin(Math.PI - m) * m;
      chosen = tf.where(noGrad(target, (v) => tf.greater(v, th)), phi, target.sub(mm));
    }
    const notTarget = tf.sub(1, onehot);
    return x.mul(notTarget).add(onehot.mul(chosen)).mul(this.s) as tf.Tensor2D;
  }
}

/** fn(x) as a constant for autodiff (comparisons have no gradient in tfjs, so a mask must not be on the tape). */
function noGrad(x: tf.Tensor, fn: (v: tf.Tensor) => tf.Tensor): tf.Tensor {
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const v = args[0] as tf.Tensor;
    return { value: fn(v), gradFunc: () => tf.zerosLike(v) };
  });
  return f(x);
}

/** s * cos(acos(c_y) + m) on targets and s * c elsewhere; backward is s * dy (straight-through, as the reference). */
function straightThroughArc(x: tf.Tensor2D, onehot: tf.Tensor2D, m: number, s: number): tf.Tensor2D {
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const c = args[0] as tf.Tensor;
    // Only target entries change; acos->cos on the others would merely add round-off (notes b).
    // c*onehot summed over a row is exactly c_y (the other terms are 0), and 0 for label -1 rows.
    const target = c.mul(onehot).sum(1, true);
    const withMargin = tf.cos(tf.acos(target).add(m));
    const value = c.mul(tf.sub(1, onehot)).add(onehot.mul(withMargin)).mul(s);
    return { value, gradFunc: (dy: tf.Tensor) => dy.mul(s) };
  });
  return f(x) as tf.Tensor2D;
}
