// insightface's face-verification protocol (arcface_torch/eval/verification.py):
// flip-sum embeddings, XNorm, squared L2 distance, thresholds 0..3.99, sequential 10-fold accuracy,
// ROC curves; plus TAR at a FAR target over all pairs.
import { ArcfaceError } from '../errors.ts';

export interface FlipSumResult {
  /** L2-normalised raw(original) + raw(flipped), row-major n x dim (float32, as the reference's numpy arrays). */
  embeddings: Float32Array;
  /** Mean L2 norm of all 2n raw embeddings (original and flipped). */
  xnorm: number;
}

/**
 * Combines the raw (un-normalised) embeddings of the original and the horizontally flipped images the
 * way the reference does: XNorm over both copies, then sum before normalising (x / max(||x||, 1e-12)).
 */
export function flipSumEmbeddings(original: Float32Array, flipped: Float32Array, dim: number): FlipSumResult {
  if (original.length !== flipped.length || original.length % dim !== 0) {
    throw new ArcfaceError(`verification: original (${original.length}) and flipped (${flipped.length}) embeddings must both be n x ${dim}`);
  }
  const n = original.length / dim;
  const out = new Float32Array(original.length);
  let normSum = 0;
  for (let i = 0; i < n; i++) {
    let so = 0;
    let sf = 0;
    let ss = 0;
    for (let j = i * dim; j < (i + 1) * dim; j++) {
      so += original[j] * original[j];
      sf += flipped[j] * flipped[j];
      out[j] = original[j] + flipped[j]; // float32 sum, as numpy adds two float32 arrays
      ss += out[j] * out[j];
    }
    normSum += Math.sqrt(so) + Math.sqrt(sf);
    const norm = Math.max(Math.sqrt(ss), 1e-12);
    for (let j = i * dim; j < (i + 1) * dim; j++) out[j] /= norm;
  }
  return { embeddings: out, xnorm: n > 0 ? normSum / (2 * n) : 0 };
}

export interface TarAtFar {
  farTarget: number;
  /** Largest threshold whose FAR (negatives with dist < threshold) does not exceed the target. */
  threshold: number;
  tar: number;
  far: number;
}

export interface VerificationResult {
  /** Pairs in each sequential fold (the first P % folds get one extra). */
  foldSizes: number[];
  accuracyPerFold: number[];
  accuracyMean: number;
  /** Population std (ddof 0). */
  accuracyStd: number;
  /** Threshold chosen on the other folds, per held-out fold. */
  bestThresholds: number[];
  /** Threshold with the best accuracy over all pairs (ties to the smallest); for display. */
  bestThreshold: number;
  thresholds: Float64Array;
  /** Mean over folds of each fold's TPR / FPR at each threshold. */
  tpr: Float64Array;
  fpr: Float64Array;
  tarAtFar: TarAtFar;
}

export interface VerificationOptions {
  folds?: number;
  /** FAR target for TAR@FAR over all pairs (default 1e-3). */
  farTarget?: number;
}

/** numpy.arange(0, 4, 0.01): start + i * step in float64. */
export function referenceThresholds(): Float64Array {
  const t = new Float64Array(400);
  for (let i = 0; i < 400; i++) t[i] = i * 0.01;
  return t;
}

/** numpy's pairwise summation (8 accumulators up to 128 values, halving above), so means/stds match it exactly. */
export function numpySum(a: ArrayLike<number>, start = 0, n = a.length - start, f32 = false): number {
  const r = f32 ? Math.fround : (x: number) => x;
  if (n < 8) {
    let s = f32 ? 0 : -0;
    for (let i = 0; i < n; i++) s = r(s + a[start + i]);
    return s;
  }
  if (n <= 128) {
    const acc = new Array<number>(8);
    for (let k = 0; k < 8; k++) acc[k] = a[start + k];
    let i = 8;
    for (; i < n - (n % 8); i += 8) for (let k = 0; k < 8; k++) acc[k] = r(acc[k] + a[start + i + k]);
    let s = r(r(r(acc[0] + acc[1]) + r(acc[2] + acc[3])) + r(r(acc[4] + acc[5]) + r(acc[6] + acc[7])));
    for (; i < n; i++) s = r(s + a[start + i]);
    return s;
  }
  let n2 = Math.floor(n / 2);
  n2 -= n2 % 8;
  return r(numpySum(a, start, n2, f32) + numpySum(a, start + n2, n - n2, f32));
}

/** Squared L2 distance of each pair (rows 2k, 2k+1), in float32 as numpy computes it for float32 embeddings. */
export function pairDistances(embeddings: Float32Array, dim: number): Float32Array {
  const pairs = Math.floor(embeddings.length / dim / 2);
  const dist = new Float32Array(pairs);
  const sq = new Float32Array(dim);
  for (let k = 0; k < pairs; k++) {
    const a = 2 * k * dim;
    const b = a + dim;
    for (let j = 0; j < dim; j++) {
      const d = Math.fround(embeddings[a + j] - embeddings[b + j]);
      sq[j] = Math.fround(d * d);
    }
    dist[k] = numpySum(sq, 0, dim, true);
  }
  return dist;
}

/** sklearn KFold(n_splits, shuffle=False) fold boundaries: contiguous, the first n % k folds one larger. */
export function sequentialFolds(n: number, k: number): number[] {
  const sizes = new Array<number>(k).fill(Math.floor(n / k));
  for (let i = 0; i < n % k; i++) sizes[i]++;
  return sizes;
}

/**
 * insightface's `evaluate` on L2-normalised embeddings (rows 2k and 2k+1 are pair k): a pair is "same"
 * iff dist < threshold (strict; the float64 threshold is rounded to float32 as numpy 1.x compares a
 * float32 array with a float64 scalar). Accuracy per fold uses the threshold that is best on the other
 * folds (argmax: ties to the smallest).
 */
export function evaluateVerification(
  embeddings: Float32Array,
  dim: number,
  issame: readonly boolean[],
  opts: VerificationOptions = {},
): VerificationResult {
  const folds = opts.folds ?? 10;
  const pairs = issame.length;
  if (embeddings.length !== 2 * pairs * dim) {
    throw new ArcfaceError(`verification: ${embeddings.length / dim} embeddings of size ${dim} for ${pairs} pairs (need ${2 * pairs})`);
  }
  if (pairs < folds) throw new ArcfaceError(`verification: ${pairs} pairs cannot be split into ${folds} folds`);
  const dist = pairDistances(embeddings, dim);
  const thresholds = referenceThresholds();
  const T = thresholds.length;
  const sizes = sequentialFolds(pairs, folds);
  const starts = sizes.map((_, f) => sizes.slice(0, f).reduce((a, b) => a + b, 0));

  // Per fold and threshold: true and false positives; per fold: positives and negatives.
  const tp = new Int32Array(folds * T);
  const fp = new Int32Array(folds * T);
  const pos = new Int32Array(folds);
  const foldOf = new Int32Array(pairs);
  for (let f = 0; f < folds; f++) for (let i = starts[f]; i < starts[f] + sizes[f]; i++) foldOf[i] = f;
  const thr32 = thresholds.map(Math.fround);
  for (let i = 0; i < pairs; i++) {
    const f = foldOf[i];
    if (issame[i]) pos[f]++;
    const counts = issame[i] ? tp : fp;
    for (let t = 0; t < T; t++) if (dist[i] < thr32[t]) counts[f * T + t]++;
  }
  const sum = (a: Int32Array, f: number, t: number) => a[f * T + t];
  const totTp = new Int32Array(T);
  const totFp = new Int32Array(T);
  for (let f = 0; f < folds; f++) for (let t = 0; t < T; t++) {
    totTp[t] += sum(tp, f, t);
    totFp[t] += sum(fp, f, t);
  }
  const totPos = pos.reduce((a, b) => a + b, 0);
  const totNeg = pairs - totPos;
  // accuracy = (tp + tn) / n with tn = negatives - fp
  const acc = (p: number, fpos: number, tpos: number, n: number) => (tpos + (n - p - fpos)) / n;
  const argmaxAcc = (accAt: (t: number) => number) => {
    let best = 0;
    let bestAcc = -1;
    for (let t = 0; t < T; t++) {
      const a = accAt(t);
      if (a > bestAcc) {
        bestAcc = a;
        best = t;
      }
    }
    return best;
  };

  const accuracyPerFold: number[] = [];
  const bestThresholds: number[] = [];
  const tprs = new Float64Array(T);
  const fprs = new Float64Array(T);
  for (let f = 0; f < folds; f++) {
    const n = pairs - sizes[f];
    const p = totPos - pos[f];
    const best = argmaxAcc((t) => acc(p, totFp[t] - sum(fp, f, t), totTp[t] - sum(tp, f, t), n));
    bestThresholds.push(thresholds[best]);
    accuracyPerFold.push(acc(pos[f], sum(fp, f, best), sum(tp, f, best), sizes[f]));
    const neg = sizes[f] - pos[f];
    // numpy.mean over axis 0 adds fold rows in order, then divides.
    for (let t = 0; t < T; t++) {
      tprs[t] += pos[f] === 0 ? 0 : sum(tp, f, t) / pos[f];
      fprs[t] += neg === 0 ? 0 : sum(fp, f, t) / neg;
    }
  }
  for (let t = 0; t < T; t++) {
    tprs[t] /= folds;
    fprs[t] /= folds;
  }
  const accuracyMean = numpySum(accuracyPerFold) / folds;
  const sq = accuracyPerFold.map((a) => (a - accuracyMean) * (a - accuracyMean));
  const accuracyStd = Math.sqrt(numpySum(sq) / folds);
  const bestAll = argmaxAcc((t) => acc(totPos, totFp[t], totTp[t], pairs));

  return {
    foldSizes: sizes,
    accuracyPerFold,
    accuracyMean,
    accuracyStd,
    bestThresholds,
    bestThreshold: thresholds[bestAll],
    thresholds,
    tpr: tprs,
    fpr: fprs,
    tarAtFar: tarAtFar(dist, issame, opts.farTarget ?? 1e-3, totPos, totNeg),
  };
}

/**
 * TAR at FAR <= target over all pairs, no folds. With "same iff dist < t", the largest threshold whose
 * FAR stays within the target is the (k+1)-th smallest negative distance, k = floor(target * negatives).
 */
function tarAtFar(dist: Float32Array, issame: readonly boolean[], farTarget: number, totPos: number, totNeg: number): TarAtFar {
  const negs = Float64Array.from(dist.filter((_, i) => !issame[i])).sort();
  const k = Math.floor(farTarget * totNeg + 1e-9); // guard against 1e-3 * 3000 = 2.9999999999999996
  const threshold = k < negs.length ? negs[k] : Infinity;
  let tp = 0;
  let fp = 0;
  for (let i = 0; i < dist.length; i++) {
    if (dist[i] < threshold) {
      if (issame[i]) tp++;
      else fp++;
    }
  }
  return { farTarget, threshold, tar: totPos ? tp / totPos : 0, far: totNeg ? fp / totNeg : 0 };
}

/** The reference's `%1.5f+-%1.5f`. */
export const accuracyFlip = (r: Pick<VerificationResult, 'accuracyMean' | 'accuracyStd'>): string =>
  `${r.accuracyMean.toFixed(5)}+-${r.accuracyStd.toFixed(5)}`;

/** The reference's log line: `[name][step]Accuracy-Flip: 0.99500+-0.00300` (no `[step]` outside training). */
export function formatAccuracyFlip(name: string, step: number | undefined, r: Pick<VerificationResult, 'accuracyMean' | 'accuracyStd'>): string {
  return `[${name}]${step === undefined ? '' : `[${step}]`}Accuracy-Flip: ${accuracyFlip(r)}`;
}
