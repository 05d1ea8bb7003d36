// Single-process Partial FC head (insightface PartialFC_V2, arcface_torch/partial_fc_v2.py):
// class centres, cosine logits, margin, DistCrossEntropy, optional class sampling.
import * as tf from '@tensorflow/tfjs';
import { ArcfaceError } from '../errors.ts';
import { SamplerRng, sampleClasses, validateLabels } from './class-sampler.ts';
import { distCrossEntropy } from './cross-entropy.ts';
import { CombinedMarginLoss, type Labels, type MarginOptions } from './margin.ts';

export interface PartialFCOptions {
  numClasses: number;
  embeddingSize: number;
  /** A margin object or its options (e.g. ArcFace {s: 64, m1: 1, m2: 0.5, m3: 0}). */
  margin: CombinedMarginLoss | MarginOptions;
  /** Fraction of class centres used per step (1 = all; 0 = positives only). */
  sampleRate?: number;
  /** Seed for the N(0, 0.01) centre init and for the sampling stream. */
  seed?: number;
  /** Variable name of the centres (must be unique among live tf variables). */
  name?: string;
}

/** Tensors of one forward pass (all owned by the caller). */
export interface PartialFCOutput {
  loss: tf.Scalar;
  /** clamp(normalize(E) . normalize(W[index])^T, -1, 1) */
  cosLogits: tf.Tensor2D;
  /** After the margin and scale. */
  logits: tf.Tensor2D;
  /** Sampled class ids (sorted), or null when all classes are used. */
  index: Int32Array | null;
}

/** x / max(||x||, 1e-12) per row. sqrt(max(sum x^2, 1e-24)) has the same value and torch's zero gradient below eps. */
export function l2Normalize(x: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => x.div(x.square().sum(1, true).maximum(1e-24).sqrt()));
}

/** Row gather whose gradient is a dense scatter (ScatterNd exists on wasm; gather's own gradient does not). */
function gatherRows(w: tf.Tensor2D, index: Int32Array): tf.Tensor2D {
  const idx = tf.tensor2d(index, [index.length, 1], 'int32');
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [x, save] = args as [tf.Tensor, tf.GradSaveFunc];
    save([idx]);
    const value = tf.gatherND(x, idx);
    return { value, gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.scatterND(saved[0], dy, x.shape) };
  });
  const out = f(w) as tf.Tensor2D;
  idx.dispose();
  return out;
}

/**
 * The classification head. `weight` (numClasses x embeddingSize, N(0, 0.01)) is a trainable tf.Variable;
 * its gradient is dense (zero on unsampled rows), so weight decay and momentum still reach every row
 * as in the reference. Use `loss()` inside `tf.variableGrads` / `optimizer.minimize`.
 */
export class PartialFC {
  readonly numClasses: number;
  readonly embeddingSize: number;
  readonly sampleRate: number;
  readonly margin: CombinedMarginLoss;
  readonly weight: tf.Variable<tf.Rank.R2>;
  private rng: SamplerRng;

  constructor(opts: PartialFCOptions) {
    const { numClasses, embeddingSize } = opts;
    if (!Number.isInteger(numClasses) || numClasses < 1) throw new ArcfaceError(`partial fc: numClasses must be a positive integer, got ${numClasses}`);
    if (!Number.isInteger(embeddingSize) || embeddingSize < 1) throw new ArcfaceError(`partial fc: embeddingSize must be a positive integer, got ${embeddingSize}`);
    const sampleRate = opts.sampleRate ?? 1;
    if (!(sampleRate >= 0 && sampleRate <= 1)) throw new ArcfaceError(`partial fc: sampleRate must be in [0, 1], got ${sampleRate}`);
    this.numClasses = numClasses;
    this.embeddingSize = embeddingSize;
    this.sampleRate = sampleRate;
    this.margin = opts.margin instanceof CombinedMarginLoss ? opts.margin : new CombinedMarginLoss(opts.margin);
    const seed = opts.seed ?? 2048;
    const init = tf.randomNormal([numClasses, embeddingSize], 0, 0.01, 'float32', seed);
    this.weight = tf.variable(init, true, opts.name) as tf.Variable<tf.Rank.R2>;
    init.dispose(); // the variable holds its own reference to the data
    this.rng = new SamplerRng(seed);
  }

  /** Replaces the centres (e.g. from a checkpoint); `data` is row-major numClasses x embeddingSize. */
  setWeight(data: Float32Array | tf.Tensor2D): void {
    const n = this.numClasses * this.embeddingSize;
    const size = data instanceof tf.Tensor ? data.size : data.length;
    if (size !== n) throw new ArcfaceError(`partial fc: weight has ${size} values, expected ${this.numClasses}x${this.embeddingSize}`);
    tf.tidy(() => this.weight.assign(data instanceof tf.Tensor ? data.reshape([this.numClasses, this.embeddingSize]) : tf.tensor2d(data, [this.numClasses, this.embeddingSize])));
  }

  /** Sampler RNG state for checkpoints. */
  get rngState(): number {
    return this.rng.state;
  }

  set rngState(state: number) {
    this.rng = new SamplerRng(state);
  }

  /**
   * Full forward pass. Labels in [0, numClasses); with sampleRate < 1 they are needed on the host
   * (a tensor is read synchronously). Differentiable w.r.t. embeddings and `weight`.
   */
  forward(embeddings: tf.Tensor2D, labels: Labels): PartialFCOutput {
    if (embeddings.rank !== 2 || embeddings.shape[1] !== this.embeddingSize) {
      throw new ArcfaceError(`partial fc: embeddings must be [batch, ${this.embeddingSize}], got [${embeddings.shape.join(', ')}]`);
    }
    const batch = embeddings.shape[0];
    const labelCount = labels instanceof tf.Tensor ? labels.shape[0] : labels.length;
    if (labelCount !== batch) throw new ArcfaceError(`partial fc: ${labelCount} labels for a batch of ${batch}`);
    let index: Int32Array | null = null;
    let localLabels: Labels = labels;
    if (this.sampleRate < 1) {
      const sample = this.sample(labels instanceof tf.Tensor ? labels.dataSync() : labels);
      index = sample.index;
      localLabels = sample.labels as Int32Array; // sampled: always renumbered into an Int32Array
    } else if (!(labels instanceof tf.Tensor)) {
      validateLabels(labels, this.numClasses);
    }
    const [cosLogits, logits, loss] = tf.tidy(() => {
      const w = index ? gatherRows(this.weight, index) : this.weight;
      const cos = tf.matMul(l2Normalize(embeddings), l2Normalize(w), false, true).clipByValue(-1, 1) as tf.Tensor2D;
      const z = this.margin.apply(cos, localLabels);
      return [cos, z, distCrossEntropy(z, localLabels)] as const;
    });
    return { loss, cosLogits, logits, index };
  }

  /**
   * The classes one step uses (advancing the sampling stream as forward() does): the sorted class ids and
   * the labels renumbered into them, or index null (all classes, labels checked) at sample rate 1.
   */
  sample(labels: ArrayLike<number>): { index: Int32Array | null; labels: ArrayLike<number> } {
    if (this.sampleRate >= 1) {
      validateLabels(labels, this.numClasses);
      return { index: null, labels };
    }
    return sampleClasses(labels, this.numClasses, this.sampleRate, this.rng);
  }

  /** How many classes sample(labels) will use: all, or the sample size (at least the distinct labels). */
  sampleSize(labels: ArrayLike<number>): number {
    if (this.sampleRate >= 1) return this.numClasses;
    return Math.max(Math.floor(this.sampleRate * this.numClasses), new Set(Array.from(labels)).size);
  }

  /** The scalar loss only (intermediates disposed); for `tf.variableGrads` / `optimizer.minimize`. */
  loss(embeddings: tf.Tensor2D, labels: Labels): tf.Scalar {
    const out = this.forward(embeddings, labels);
    out.cosLogits.dispose();
    out.logits.dispose();
    return out.loss;
  }

  dispose(): void {
    this.weight.dispose();
  }
}
