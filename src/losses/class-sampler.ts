// Partial FC class sampling (arcface_torch/partial_fc_v2.py's `sample`) with its own seeded random stream.
import { ArcfaceError } from '../errors.ts';

/** Small seeded PRNG (mulberry32) whose whole state is one uint32, so checkpoints can restore it. */
export class SamplerRng {
  constructor(public state: number) {
    this.state = state >>> 0;
  }

  private nextUint32(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** Uniform integer in [0, n), from 53 random bits so large class counts are unbiased in practice. */
  int(n: number): number {
    const u = (this.nextUint32() * 2 ** 21 + (this.nextUint32() >>> 11)) / 2 ** 53;
    return Math.floor(u * n);
  }
}

export interface ClassSample {
  /** Sorted class ids whose centres are used this step (all positives plus the drawn negatives). */
  index: Int32Array;
  /** Labels remapped to positions in `index`. */
  labels: Int32Array;
}

/**
 * The reference's sampling: num_sample = floor(sampleRate * numClasses); if it is at least the number of
 * distinct positives, take all positives plus (num_sample - |positives|) negatives drawn uniformly without
 * replacement, sorted ascending; otherwise (including sampleRate 0) positives only. The reference draws
 * u ~ U[0,1) per class, pins positives to 2 and takes the top num_sample; that is a uniformly random subset
 * of the negatives, which we draw directly with Floyd's algorithm in O(num_sample) (same distribution,
 * different random stream). Labels must lie in [0, numClasses).
 */
export function sampleClasses(labels: ArrayLike<number>, numClasses: number, sampleRate: number, rng: SamplerRng): ClassSample {
  validateLabels(labels, numClasses);
  const positives = Int32Array.from(new Set(Array.from(labels))).sort();
  const numSample = Math.floor(sampleRate * numClasses);
  let index = positives;
  const k = numSample - positives.length;
  if (k > 0) {
    const m = numClasses - positives.length;
    // Floyd: k distinct ranks among the m negatives.
    const chosen = new Set<number>();
    for (let j = m - k; j < m; j++) {
      const t = rng.int(j + 1);
      chosen.add(chosen.has(t) ? j : t);
    }
    const ranks = Int32Array.from(chosen).sort();
    // The r-th negative class is r plus the number of positives at or below it.
    const negatives = new Int32Array(k);
    let p = 0;
    for (let i = 0; i < k; i++) {
      while (p < positives.length && positives[p] <= ranks[i] + p) p++;
      negatives[i] = ranks[i] + p;
    }
    index = new Int32Array(numSample);
    index.set(positives);
    index.set(negatives, positives.length);
    index.sort();
  }
  const remapped = new Int32Array(labels.length);
  for (let i = 0; i < labels.length; i++) remapped[i] = lowerBound(index, labels[i]);
  return { index, labels: remapped };
}

/** Throws unless every label is an integer in [0, numClasses). */
export function validateLabels(labels: ArrayLike<number>, numClasses: number): void {
  for (let i = 0; i < labels.length; i++) {
    const l = labels[i];
    if (!Number.isInteger(l) || l < 0 || l >= numClasses) {
      throw new ArcfaceError(`partial fc: label ${l} at batch row ${i} is outside [0, ${numClasses})`);
    }
  }
}

function lowerBound(sorted: Int32Array, v: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid] < v) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
