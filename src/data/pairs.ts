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
import { drawPairs, type DrawPairsOptions } from './draw-pairs.ts';

export { drawPairs, type DrawPairsOptions };

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

/** Pairs from a labelled folder (a sub-folder of photos per person): `drawPairs` over its photos. */
export function pairsFromFolder(root: string, opts: DrawPairsOptions = {}): Pair[] {
  const src = new ImageFolderSource(root);
  return drawPairs(src.labels, root, opts).map(([a, b, same], k) => ({ a: src.files[a]!, b: src.files[b]!, same, line: k + 1 }));
}
