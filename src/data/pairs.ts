// Pair lists for building verification sets.
// LFW `pairs.txt`: a header line ("10 300" = folds, pairs per fold, or just "300"), then
//   `name n1 n2`          same person, images <root>/name/name_000n1.<ext> and ..._000n2
//   `name1 n1 name2 n2`   different people
// Simple format: `pathA pathB 1|0` per line (1 = same person), paths relative to the root.
// Blank lines and lines starting with # are ignored in both.
import fs from 'node:fs';
import path from 'node:path';
import { ArcfaceError } from '../errors.ts';
import { prepareImage } from './prepare-image.ts';
import type { VerificationSet } from './bin-set.ts';
import { ImageFolderSource } from './folder-source.ts';
import { Rng } from './random.ts';

export interface Pair {
  a: string;
  b: string;
  same: boolean;
  /** 1-based line number in the pairs file. */
  line: number;
}

export type PairsFormat = 'lfw' | 'simple';

const INT = /^\d+$/;

export function lfwImagePath(root: string, name: string, n: number, ext: string): string {
  return path.join(root, name, `${name}_${String(n).padStart(4, '0')}.${ext}`);
}

/** Parses a pairs file; `format` is detected from the first line when not given. */
export function parsePairs(file: string, opts: { root?: string; ext?: string; format?: PairsFormat } = {}): { pairs: Pair[]; format: PairsFormat } {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new ArcfaceError(`cannot read: ${(e as Error).message}`, file);
  }
  const root = opts.root ?? path.dirname(file);
  const ext = opts.ext ?? 'jpg';
  const lines = text.split(/\r?\n/).map((l, i) => ({ f: l.trim().split(/\s+/), n: i + 1, raw: l.trim() })).filter((l) => l.raw && !l.raw.startsWith('#'));
  if (!lines.length) throw new ArcfaceError('no pairs in the file', file);
  const first = lines[0].f;
  const looksLfw = first.every((x) => INT.test(x)) && first.length <= 2;
  const format = opts.format ?? (looksLfw ? 'lfw' : 'simple');
  const body = format === 'lfw' && looksLfw ? lines.slice(1) : lines;
  const pairs: Pair[] = [];
  for (const { f, n, raw } of body) {
    const bad = (why: string): never => {
      throw new ArcfaceError(`line ${n}: ${why}: ${JSON.stringify(raw.slice(0, 80))}`, file);
    };
    if (format === 'lfw') {
      if (f.length === 3 && INT.test(f[1]) && INT.test(f[2])) {
        pairs.push({ a: lfwImagePath(root, f[0], Number(f[1]), ext), b: lfwImagePath(root, f[0], Number(f[2]), ext), same: true, line: n });
      } else if (f.length === 4 && INT.test(f[1]) && INT.test(f[3])) {
        pairs.push({ a: lfwImagePath(root, f[0], Number(f[1]), ext), b: lfwImagePath(root, f[2], Number(f[3]), ext), same: false, line: n });
      } else {
        bad('expected "name n1 n2" or "name1 n1 name2 n2"');
      }
    } else {
      if (f.length !== 3 || (f[2] !== '0' && f[2] !== '1')) bad('expected "pathA pathB 1|0"');
      pairs.push({ a: path.resolve(root, f[0]), b: path.resolve(root, f[1]), same: f[2] === '1', line: n });
    }
  }
  if (format === 'lfw' && looksLfw) {
    const declared = first.length === 2 ? Number(first[0]) * Number(first[1]) * 2 : Number(first[0]) * 2;
    // Header "10 300" means 10 folds of 300 same + 300 different pairs; "300" (pairsDevTrain) is per kind.
    if (declared !== pairs.length) {
      process.stderr.write(`arcface: warning: ${file}: header "${first.join(' ')}" announces ${declared} pairs, found ${pairs.length}\n`);
    }
  }
  return { pairs, format };
}

/** Reads, checks and (where needed) re-encodes every pair's images into a verification set. */
export async function buildVerificationSet(
  pairs: readonly Pair[],
  file: string,
  opts: { size?: number; quality?: number; onProgress?: (done: number, total: number) => void } = {},
): Promise<{ set: VerificationSet; reencoded: number }> {
  const size = opts.size ?? 112;
  const cache = new Map<string, Uint8Array>();
  let reencoded = 0;
  const load = async (p: string, line: number): Promise<Uint8Array> => {
    const hit = cache.get(p);
    if (hit) return hit;
    let bytes: Uint8Array;
    try {
      bytes = fs.readFileSync(p);
    } catch (e) {
      throw new ArcfaceError(`line ${line}: cannot read image ${p}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, file);
    }
    try {
      const r = await prepareImage(bytes, p, size, opts.quality ?? 95);
      if (r.reencoded) reencoded++;
      cache.set(p, r.jpeg);
      return r.jpeg;
    } catch (e) {
      throw new ArcfaceError(`line ${line}: ${(e as Error).message}`, file);
    }
  };
  const images: Uint8Array[] = [];
  const issame: boolean[] = [];
  for (let i = 0; i < pairs.length; i++) {
    const p = pairs[i];
    images.push(await load(p.a, p.line), await load(p.b, p.line));
    issame.push(p.same);
    opts.onProgress?.(i + 1, pairs.length);
  }
  return { set: { images, issame }, reencoded };
}

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

/** Pairs from a labelled folder (a sub-folder of photos per person): `drawPairs` over its photos. */
export function pairsFromFolder(root: string, opts: DrawPairsOptions = {}): Pair[] {
  const src = new ImageFolderSource(root);
  return drawPairs(src.labels, root, opts).map(([a, b, same], k) => ({ a: src.files[a]!, b: src.files[b]!, same, line: k + 1 }));
}
