// Embeddings saved as `arcface embed` prints them: JSON lines {file, embedding: [...], ...}.
import fs from 'node:fs';
import { ArcfaceError } from '../errors.ts';
import type { EmbedResult } from './embed.ts';

/** True for paths that hold saved embeddings rather than an image. */
export function isEmbeddingFile(file: string): boolean {
  return /\.jsonl?$/i.test(file);
}

/** The first embedding in a JSON-lines file written by `arcface embed` (or a single JSON object). */
export function readEmbeddingFile(file: string): { source: string; embedding: Float32Array } {
  if (!fs.existsSync(file)) throw new ArcfaceError('no such file', file);
  const lines = fs.readFileSync(file, 'utf8').split('\n').map((l) => l.trim()).filter(Boolean);
  for (const [i, line] of lines.entries()) {
    let obj: { file?: unknown; embedding?: unknown };
    try {
      obj = JSON.parse(line);
    } catch (e) {
      throw new ArcfaceError(`line ${i + 1} is not JSON (${(e as Error).message})`, file);
    }
    if (obj.embedding === undefined) continue; // a skipped-image line
    const emb = obj.embedding;
    if (!Array.isArray(emb) || emb.length === 0 || !emb.every((v) => typeof v === 'number' && Number.isFinite(v))) {
      throw new ArcfaceError(`line ${i + 1}: "embedding" must be a non-empty array of finite numbers`, file);
    }
    return { source: typeof obj.file === 'string' ? obj.file : file, embedding: Float32Array.from(emb as number[]) };
  }
  throw new ArcfaceError('holds no embedding (expected JSON lines from `arcface embed`)', file);
}

/** One `arcface embed` output line. Floats keep 9 significant digits: enough to restore every float32. */
export function formatEmbedResult(r: EmbedResult): string {
  if ('skipped' in r) return JSON.stringify({ file: r.file, skipped: r.skipped });
  const round = (v: number, p: number): number => Number(v.toPrecision(p));
  return JSON.stringify({
    file: r.file,
    embedding: Array.from(r.embedding, (v) => round(v, 9)),
    ...(r.landmarks ? { landmarks: r.landmarks.map(([x, y]) => [round(x, 7), round(y, 7)]) } : {}),
    ...(r.score !== undefined ? { score: round(r.score, 6) } : {}),
  });
}
