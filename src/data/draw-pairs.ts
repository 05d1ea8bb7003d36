// Genuine and impostor pairs drawn from labels (no files): shared by folder pair lists, small-data
// hold-out sets and the web page.
import { ArcfaceError } from '../errors.ts';
import { Rng } from './random.ts';

export interface DrawPairsOptions {
  /** Genuine pairs to draw: 'all' (every two photos of one person) or at most N of them. */
  genuine?: 'all' | number;
  /** Impostor pairs per genuine pair (default 1: balanced, as LFW). */
  impostorRatio?: number;
  seed?: number;
}

/**
 * Genuine and impostor pairs of items by their labels, seeded: [i, j, same] with i, j indices into
 * `labels`. Genuine and impostor pairs alternate, so every sequential fold of the 10-fold protocol holds
 * both. `where` names the data in errors.
 */
export function drawPairs(labels: ArrayLike<number>, where: string, opts: DrawPairsOptions = {}): [number, number, boolean][] {
  const rng = new Rng([opts.seed ?? 0, 0x9a125]);
  const groups = new Map<number, number[]>();
  for (let i = 0; i < labels.length; i++) {
    const g = groups.get(labels[i]!);
    if (g) g.push(i);
    else groups.set(labels[i]!, [i]);
  }
  const byClass = [...groups.values()];
  const genuineAll: [number, number][] = [];
  for (const items of byClass) for (let i = 0; i < items.length; i++) for (let j = i + 1; j < items.length; j++) genuineAll.push([items[i]!, items[j]!]);
  if (!genuineAll.length) throw new ArcfaceError('no genuine pairs: every person has a single photo (need two or more of someone)', where);
  if (byClass.length < 2) throw new ArcfaceError('no impostor pairs: the data holds one person (need two or more)', where);
  const want = opts.genuine ?? 'all';
  if (want !== 'all' && (!Number.isInteger(want) || want < 1)) throw new ArcfaceError(`the number of genuine pairs must be a positive integer or "all", got ${want}`);
  const genuine = want === 'all' || want >= genuineAll.length ? genuineAll : rng.shuffle(genuineAll.slice()).slice(0, want);
  const ratio = opts.impostorRatio ?? 1;
  if (!(ratio > 0)) throw new ArcfaceError(`the impostor ratio must be positive, got ${ratio}`);
  // Impostors: two different people, one photo each, drawn without repeating a pair.
  const people = byClass.length;
  let possible = 0;
  for (let a = 0; a < people; a++) for (let b = a + 1; b < people; b++) possible += byClass[a]!.length * byClass[b]!.length;
  const nImpostor = Math.min(possible, Math.round(genuine.length * ratio));
  const seen = new Set<number>();
  const impostor: [number, number][] = [];
  while (impostor.length < nImpostor) {
    const a = rng.nextInt(people);
    let b = rng.nextInt(people - 1);
    if (b >= a) b++;
    const ia = byClass[a]![rng.nextInt(byClass[a]!.length)]!;
    const ib = byClass[b]![rng.nextInt(byClass[b]!.length)]!;
    const key = Math.min(ia, ib) * labels.length + Math.max(ia, ib);
    if (seen.has(key)) continue;
    seen.add(key);
    impostor.push([ia, ib]);
  }
  const out: [number, number, boolean][] = [];
  for (let i = 0; i < Math.max(genuine.length, impostor.length); i++) {
    if (i < genuine.length) out.push([genuine[i]![0], genuine[i]![1], true]);
    if (i < impostor.length) out.push([impostor[i]![0], impostor[i]![1], false]);
  }
  return out;
}
