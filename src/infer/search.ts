// 1:N search: a probe embedding against a gallery of known identities (a folder with a subfolder of
// photos per person, or saved embeddings), ranked by each identity's best cosine similarity.
import fs from 'node:fs';
import path from 'node:path';
import { ArcfaceError } from '../errors.ts';
import { IMAGE_EXTENSIONS } from '../data/folder-source.ts';
import { cosineSimilarity } from './similarity.ts';

export interface GalleryEntry {
  identity: string;
  file: string;
  embedding: Float32Array;
}

export interface SearchMatch {
  identity: string;
  /** The identity's best cosine similarity to the probe, and the gallery image that gave it. */
  score: number;
  file: string;
  /** score > threshold */
  match: boolean;
}

const isImage = (f: string) => IMAGE_EXTENSIONS.includes(path.extname(f).toLowerCase());

/**
 * The gallery's photos with their identities: each subfolder is one person (its name the identity);
 * a photo directly in the folder is a person named by the file's stem.
 */
export function listGallery(dir: string): { identity: string; file: string }[] {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new ArcfaceError('gallery: no such folder', dir);
  const out: { identity: string; file: string }[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) {
      for (const f of fs.readdirSync(p).sort()) if (isImage(f)) out.push({ identity: e.name, file: path.join(p, f) });
    } else if (isImage(e.name)) {
      out.push({ identity: path.parse(e.name).name, file: p });
    }
  }
  if (!out.length) throw new ArcfaceError(`gallery: no photos (${IMAGE_EXTENSIONS.join(' ')}) in the folder or its subfolders`, dir);
  return out;
}

/** Saved gallery embeddings: JSON lines {identity, file, embedding} as `writeGallery` writes them. */
export function readGallery(file: string): GalleryEntry[] {
  if (!fs.existsSync(file)) throw new ArcfaceError('gallery: no such file', file);
  const out: GalleryEntry[] = [];
  fs.readFileSync(file, 'utf8').split('\n').forEach((line, i) => {
    if (!line.trim()) return;
    let o: { identity?: unknown; file?: unknown; embedding?: unknown };
    try {
      o = JSON.parse(line);
    } catch (e) {
      throw new ArcfaceError(`gallery line ${i + 1} is not JSON (${(e as Error).message})`, file);
    }
    if (o.embedding === undefined) return; // an image `arcface embed` skipped
    const emb = o.embedding;
    if (!Array.isArray(emb) || !emb.length || !emb.every((v) => typeof v === 'number' && Number.isFinite(v))) {
      throw new ArcfaceError(`gallery line ${i + 1}: "embedding" must be a non-empty array of finite numbers`, file);
    }
    const src = typeof o.file === 'string' ? o.file : `${file}:${i + 1}`;
    // Lines from `arcface embed` carry no identity: the photo's folder names it.
    const identity = typeof o.identity === 'string' ? o.identity : path.basename(path.dirname(src));
    out.push({ identity, file: src, embedding: Float32Array.from(emb as number[]) });
  });
  if (!out.length) throw new ArcfaceError('gallery holds no embeddings', file);
  return out;
}

export function formatGalleryLine(e: GalleryEntry): string {
  return JSON.stringify({ identity: e.identity, file: e.file, embedding: Array.from(e.embedding, (v) => Number(v.toPrecision(9))) });
}

/** The top `k` identities by best cosine similarity to the probe, best first. */
export function searchGallery(probe: Float32Array, gallery: readonly GalleryEntry[], k: number, threshold: number): SearchMatch[] {
  if (!Number.isInteger(k) || k < 1) throw new ArcfaceError(`top-k must be a positive integer, got ${k}`);
  const best = new Map<string, { score: number; file: string }>();
  for (const g of gallery) {
    const s = cosineSimilarity(probe, g.embedding, ['the probe', g.file]);
    const cur = best.get(g.identity);
    if (!cur || s > cur.score) best.set(g.identity, { score: s, file: g.file });
  }
  return [...best.entries()]
    .map(([identity, b]) => ({ identity, score: b.score, file: b.file, match: b.score > threshold }))
    .sort((a, b) => b.score - a.score || a.identity.localeCompare(b.identity))
    .slice(0, k);
}
