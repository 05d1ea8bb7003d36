// L2 normalisation and cosine similarity of embeddings, and the same/different verdict.
import { ArcfaceError } from '../errors.ts';

/** x / max(||x||, 1e-12), as torch.nn.functional.normalize. */
export function l2Normalise(v: ArrayLike<number>): Float32Array {
  let s = 0;
  for (let i = 0; i < v.length; i++) s += v[i] * v[i];
  const n = Math.max(Math.sqrt(s), 1e-12);
  const out = new Float32Array(v.length);
  for (let i = 0; i < v.length; i++) out[i] = v[i] / n;
  return out;
}

/** Cosine similarity in [-1, 1]. Embeddings of different sizes (different models) are an error. */
export function cosineSimilarity(a: ArrayLike<number>, b: ArrayLike<number>, labels: [string, string] = ['first', 'second']): number {
  if (a.length !== b.length) {
    throw new ArcfaceError(`embedding sizes differ: ${labels[0]} has ${a.length}, ${labels[1]} has ${b.length} (made by different models?)`);
  }
  if (a.length === 0) throw new ArcfaceError('empty embeddings cannot be compared');
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return dot / Math.max(Math.sqrt(na) * Math.sqrt(nb), 1e-12);
}

/**
 * Default decision threshold on cosine similarity: a common operating point for ArcFace-type models.
 * The right value depends on the model and the false-accept rate wanted; calibrate it on labelled pairs.
 */
export const DEFAULT_THRESHOLD = 0.35;

/** Same person iff cosine > threshold: the rule calibrated thresholds are chosen for (src/eval/calibrate.ts). */
export function verdict(cosine: number, threshold = DEFAULT_THRESHOLD): 'same' | 'different' {
  return cosine > threshold ? 'same' : 'different';
}
