// Operating points in the unit `compare` uses: cosine similarity of L2-normalised embeddings, with
// "same person iff cosine > threshold". For unit vectors cos = 1 - d/2 (d the squared L2 distance), so a
// threshold here is the reference's squared-L2 threshold t seen as 1 - t/2 ("same iff d < t").
import { ArcfaceError } from '../errors.ts';

export interface CosineAtFar {
  /** The FAR asked for. */
  farTarget: number;
  /** Smallest cosine whose FAR (impostor pairs with cosine > threshold) stays within the target. */
  threshold: number;
  /** Genuine pairs accepted at that threshold. */
  tar: number;
  /** Impostor pairs accepted at that threshold. */
  far: number;
}

/** Cosine of each pair (rows 2k, 2k+1) of L2-normalised embeddings, in float64. */
export function pairCosines(embeddings: Float32Array, dim: number): Float64Array {
  const pairs = Math.floor(embeddings.length / dim / 2);
  const out = new Float64Array(pairs);
  for (let k = 0; k < pairs; k++) {
    const a = 2 * k * dim;
    let dot = 0;
    for (let j = 0; j < dim; j++) dot += embeddings[a + j] * embeddings[a + dim + j];
    out[k] = dot;
  }
  return out;
}

function split(cosines: ArrayLike<number>, issame: readonly boolean[]): { genuine: Float64Array; impostor: Float64Array } {
  if (cosines.length !== issame.length) throw new ArcfaceError(`calibration: ${cosines.length} scores for ${issame.length} labels`);
  const genuine: number[] = [];
  const impostor: number[] = [];
  for (let i = 0; i < issame.length; i++) (issame[i] ? genuine : impostor).push(cosines[i]);
  if (!genuine.length || !impostor.length) {
    throw new ArcfaceError(`calibration needs genuine and impostor pairs; got ${genuine.length} genuine and ${impostor.length} impostor`);
  }
  return { genuine: Float64Array.from(genuine), impostor: Float64Array.from(impostor) };
}

/**
 * TAR and the cosine threshold at each FAR target, over all pairs (no folds). With k = floor(target x
 * impostors), the threshold is the (k+1)-th largest impostor cosine: at most k impostors lie strictly above.
 * When every impostor may be accepted (k >= impostors) the threshold is -1.
 */
export function cosineThresholdsAtFar(cosines: ArrayLike<number>, issame: readonly boolean[], farTargets: readonly number[]): CosineAtFar[] {
  for (const f of farTargets) {
    if (!(f > 0 && f <= 1)) throw new ArcfaceError(`a FAR target must be in (0, 1], got ${f}`);
  }
  const { genuine, impostor } = split(cosines, issame);
  const desc = Float64Array.from(impostor).sort().reverse();
  return farTargets.map((farTarget) => {
    const k = Math.floor(farTarget * desc.length + 1e-9); // 1e-3 * 3000 = 2.9999999999999996
    const threshold = k < desc.length ? desc[k] : -1;
    let tp = 0;
    for (const g of genuine) if (g > threshold) tp++;
    let fp = 0;
    for (const s of impostor) if (s > threshold) fp++;
    return { farTarget, threshold, tar: tp / genuine.length, far: fp / impostor.length };
  });
}

export interface Roc {
  /** Increasing false-accept rates, from 0 to 1. */
  fpr: Float64Array;
  tpr: Float64Array;
}

/** The exact ROC over all pairs (every distinct score a threshold): what a log-scale FPR axis needs. */
export function exactRoc(cosines: ArrayLike<number>, issame: readonly boolean[]): Roc {
  const { genuine, impostor } = split(cosines, issame);
  const order = Array.from({ length: issame.length }, (_, i) => i).sort((a, b) => cosines[b] - cosines[a]);
  const fpr = [0];
  const tpr = [0];
  let tp = 0;
  let fp = 0;
  for (let i = 0; i < order.length; i++) {
    if (issame[order[i]]) tp++;
    else fp++;
    // One point per distinct score: tied pairs are accepted together.
    if (i + 1 < order.length && cosines[order[i + 1]] === cosines[order[i]]) continue;
    fpr.push(fp / impostor.length);
    tpr.push(tp / genuine.length);
  }
  return { fpr: Float64Array.from(fpr), tpr: Float64Array.from(tpr) };
}

/** "1e-3,1e-4" -> [0.001, 0.0001], each in (0, 1]. */
export function parseFarList(text: string): number[] {
  const out = text.split(',').map((s) => s.trim()).filter(Boolean).map(Number);
  if (!out.length || out.some((f) => !(f > 0 && f <= 1))) throw new ArcfaceError(`FAR targets must be numbers in (0, 1], got "${text}"`);
  return out;
}
