// A model on a verification `.bin` (lfw, cfp_fp, agedb_30), as insightface's CallBackVerification does
// (arcface_torch/utils/utils_callbacks.py): decode once, then per evaluation embed the original and the flipped copy in
// eval mode, XNorm over both, flip-sum, 10-fold accuracy, TAR@FAR.
import * as tf from '@tensorflow/tfjs';
import path from 'node:path';
import { compileIfEnabled, type CompiledBackbone } from '../ort/infer.ts';
import { ArcfaceError } from '../errors.ts';
import { cosineThresholdsAtFar, exactRoc, pairCosines, type CosineAtFar, type Roc } from './calibrate.ts';
import { readBin } from '../data/bin-set.ts';
import { decodeImage, resizeRgb } from '../data/decode.ts';
import { writeNormalised } from '../data/normalise.ts';
import { adaptStandardInput, inputConventionOf } from '../models/input-convention.ts';
import { evaluateVerification, flipSumEmbeddings, type VerificationResult } from './verification.ts';

/** A decoded verification set, ready to be evaluated many times. */
export interface PreparedSet {
  /** File name without `.bin` (`lfw`), as the reference names a target. */
  name: string;
  file: string;
  /** Side of the square images (the model's input size). */
  size: number;
  pairs: number;
  issame: boolean[];
  /**
   * All 2P images as RGB uint8 HWC, concatenated. Kept as bytes, not normalised float32 originals and
   * flips: LFW would take 3.6 GB that way, and normalising + mirroring a batch is a table lookup.
   */
  pixels: Uint8Array;
  /** How many images were resized to `size`. */
  resized: number;
}

export interface PrepareOptions {
  /** Overrides the name taken from the file. */
  name?: string;
  /** Where the resize warning goes (default: stderr). */
  warn?: (message: string) => void;
}

/**
 * Reads and decodes a `.bin`. Images that are not `inputSize` square are resized as the reference's
 * `mx.image.resize_short` (shorter side to the input size; centre crop, bicubic), with a warning.
 */
export async function prepareVerificationSet(file: string, inputSize: number, opts: PrepareOptions = {}): Promise<PreparedSet> {
  if (!Number.isInteger(inputSize) || inputSize < 1) throw new ArcfaceError(`input size must be a positive integer, got ${inputSize}`, file);
  const set = readBin(file); // ArcfaceError naming the file: unreadable, not a pickle of (images, issame), counts
  const pairs = set.issame.length;
  if (pairs === 0) throw new ArcfaceError('not a verification .bin: it holds no pairs', file);
  const px = inputSize * inputSize * 3;
  const pixels = new Uint8Array(set.images.length * px);
  const otherSizes = new Map<string, number>();
  let resized = 0;
  for (let i = 0; i < set.images.length; i++) {
    const where = `${file} image ${i}`;
    let img;
    try {
      img = await decodeImage(set.images[i], where);
      if (img.width !== inputSize || img.height !== inputSize) {
        const key = `${img.width}x${img.height}`;
        otherSizes.set(key, (otherSizes.get(key) ?? 0) + 1);
        img = await resizeRgb(img, inputSize, where);
        resized++;
      }
    } catch (e) {
      if (e instanceof ArcfaceError) throw e;
      throw new ArcfaceError((e as Error).message, file);
    }
    pixels.set(img.data.subarray(0, px), i * px);
  }
  if (resized > 0) {
    const sizes = [...otherSizes].map(([k, n]) => `${n} x ${k}`).join(', ');
    const warn = opts.warn ?? ((m: string) => process.stderr.write(`arcface: warning: ${m}\n`));
    warn(`${file}: ${resized} of ${set.images.length} images are not ${inputSize}x${inputSize} (${sizes}); resized to the model's input (shorter side to ${inputSize}, as insightface does)`);
  }
  const name = opts.name ?? path.basename(file).replace(/\.bin$/i, '');
  return { name, file, size: inputSize, pairs, issame: set.issame, pixels, resized };
}

export interface EvaluateOptions {
  /** Images per forward pass (the reference's callback uses 10). */
  batchSize?: number;
  folds?: number;
  /** FAR for the squared-L2 TAR@FAR of the reference's protocol (default 1e-3). */
  farTarget?: number;
  /** FARs at which to calibrate cosine thresholds (default [1e-3, 1e-4]). */
  farTargets?: readonly number[];
  /**
   * The model's compiled onnxruntime form to run (src/ort/infer.ts; the caller disposes it), or
   * null for model.predict. Default: compiled for this call where the active backend is an ort engine.
   */
  compiled?: CompiledBackbone | null;
}

export interface SetEvaluation {
  name: string;
  pairs: number;
  accuracyMean: number;
  accuracyStd: number;
  xnorm: number;
  /** Threshold with the best accuracy over all pairs (ties to the smallest). */
  bestThreshold: number;
  tarAtFar: { tar: number; far: number; threshold: number; farTarget: number };
  /** TAR and the cosine threshold (same iff cosine > threshold) at each FAR target, over all pairs. */
  calibration: CosineAtFar[];
  /** The exact ROC over all pairs, for plotting on a log FPR axis. */
  roc: Roc;
  result: VerificationResult;
}

/** The model's square input side, or an error when it does not take [N, S, S, 3]. */
export function modelInputSize(model: tf.LayersModel): number {
  const shape = model.inputs[0]?.shape;
  if (!shape || shape.length !== 4 || shape[3] !== 3 || !shape[1] || shape[1] !== shape[2]) {
    throw new ArcfaceError(`the model's input is ${JSON.stringify(shape)}; expected [batch, S, S, 3] (square RGB, NHWC)`);
  }
  return shape[1];
}

/**
 * Raw embeddings of every image, original (`flip` false) or mirrored. Batches as the reference's
 * callback: the last partial batch re-runs the final full window and keeps its tail, so every forward
 * pass has the same batch size. `compiled`: the model's compiled onnxruntime form, run instead of
 * model.predict (src/ort/infer.ts).
 */
export async function embedSet(
  model: tf.LayersModel,
  set: PreparedSet,
  flip: boolean,
  batchSize = 10,
  compiled?: CompiledBackbone | null,
): Promise<{ embeddings: Float32Array; dim: number }> {
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new ArcfaceError(`batch size must be a positive integer, got ${batchSize}`);
  const size = modelInputSize(model);
  if (size !== set.size) throw new ArcfaceError(`images were prepared at ${set.size}x${set.size} but the model takes ${size}x${size}`, set.file);
  const n = 2 * set.pairs;
  const px = size * size * 3;
  const input = new Float32Array(Math.min(batchSize, n) * px);
  // A model made for another convention (raw pixels, BGR, other mean/std) gets what it expects.
  const convention = inputConventionOf(model);
  let out: Float32Array | undefined;
  let dim = 0;
  for (let ba = 0; ba < n; ) {
    const bb = Math.min(ba + batchSize, n);
    const start = Math.max(0, bb - batchSize);
    const count = bb - start;
    for (let i = 0; i < count; i++) writeNormalised(set.pixels.subarray((start + i) * px, (start + i + 1) * px), size, size, input, i * px, flip);
    adaptStandardInput(input, convention, count * px);
    let values: Float32Array;
    if (compiled) {
      values = compiled.run(input.subarray(0, count * px), count);
      dim = compiled.outputSize;
    } else {
      const y = tf.tidy(() => {
        const r = model.predict(tf.tensor4d(input.subarray(0, count * px), [count, size, size, 3]), { batchSize: count });
        return Array.isArray(r) ? r[0] : r;
      });
      try {
        if (y.shape.length !== 2) throw new ArcfaceError(`the model's output is ${JSON.stringify(y.shape)}; expected [batch, embedding]`);
        values = (await y.data()) as Float32Array;
      } finally {
        y.dispose();
      }
      dim = y.shape[1]!;
    }
    out ??= new Float32Array(n * dim);
    out.set(values.subarray((ba - start) * dim), ba * dim);
    ba = bb;
  }
  return { embeddings: out!, dim };
}

export const DEFAULT_FAR_TARGETS: readonly number[] = [1e-3, 1e-4];

/** Accuracy-Flip (10-fold mean and std), XNorm, best threshold and TAR@FAR of a model on a prepared set. */
export async function evaluateModel(model: tf.LayersModel, set: PreparedSet, opts: EvaluateOptions = {}): Promise<SetEvaluation> {
  const folds = opts.folds ?? 10;
  if (set.pairs < folds) throw new ArcfaceError(`${set.pairs} pairs cannot be split into ${folds} folds`, set.file);
  // On the ort engines: one compiled onnxruntime graph for both passes, compiled from the weights as they
  // are now (never cached: training evaluates the same model object after every few hundred steps).
  const own = opts.compiled === undefined ? compileIfEnabled(model, { cache: false }) : null;
  const compiled = opts.compiled ?? own;
  let original: { embeddings: Float32Array; dim: number };
  let flipped: { embeddings: Float32Array; dim: number };
  try {
    original = await embedSet(model, set, false, opts.batchSize, compiled);
    flipped = await embedSet(model, set, true, opts.batchSize, compiled);
  } finally {
    own?.dispose();
  }
  const { embeddings, xnorm } = flipSumEmbeddings(original.embeddings, flipped.embeddings, original.dim);
  const result = evaluateVerification(embeddings, original.dim, set.issame, { folds, farTarget: opts.farTarget });
  const { tar, far, threshold, farTarget } = result.tarAtFar;
  const cosines = pairCosines(embeddings, original.dim);
  return {
    name: set.name,
    pairs: set.pairs,
    accuracyMean: result.accuracyMean,
    accuracyStd: result.accuracyStd,
    xnorm,
    bestThreshold: result.bestThreshold,
    tarAtFar: { tar, far, threshold, farTarget },
    calibration: cosineThresholdsAtFar(cosines, set.issame, opts.farTargets ?? DEFAULT_FAR_TARGETS),
    roc: exactRoc(cosines, set.issame),
    result,
  };
}
