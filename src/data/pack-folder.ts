// An image folder (one sub-folder per identity) -> train.rec/.idx/property. Unreadable images are skipped
// and listed; identities left with no image are dropped so class ids stay dense.
import fs from 'node:fs';
import path from 'node:path';
import { ArcfaceError } from '../errors.ts';
import { ImageDecodeError } from './decode.ts';
import { ImageFolderSource } from './folder-source.ts';
import { PackWriter, type PackLayout, type PackSummary } from './pack-writer.ts';
import { prepareImage, type PreparedImage } from './prepare-image.ts';

export interface PackFolderOptions {
  out: string;
  /** Side of the stored square images (default 112). */
  size?: number;
  /** JPEG quality for re-encoded images (default 95). */
  quality?: number;
  layout?: PackLayout;
  /** Replace an existing pack in `out` (default false). */
  force?: boolean;
  /** Images prepared concurrently (libvips work runs on its own threads). */
  concurrency?: number;
  onProgress?: (done: number, total: number) => void;
  onSkip?: (file: string, reason: string) => void;
  /** Stops the pack (temporary files are deleted, nothing is renamed). */
  signal?: AbortSignal;
}

export interface PackFolderResult extends PackSummary {
  skipped: { file: string; reason: string }[];
  reencoded: number;
  /** Class id -> identity (sub-folder) name. */
  classes: string[];
}

/** The first file of a pack already in `out` (train.rec, train.idx or property), if there is one. */
export function existingPack(out: string): string | undefined {
  return ['train.rec', 'train.idx', 'property'].map((f) => path.join(out, f)).find((f) => fs.existsSync(f));
}

export async function packFolder(root: string, o: PackFolderOptions): Promise<PackFolderResult> {
  const size = o.size ?? 112;
  const src = new ImageFolderSource(root);
  const writer = new PackWriter(o.out, o.layout ?? 'insightface');
  const existing = o.force ? undefined : existingPack(o.out);
  if (existing) {
    writer.abort();
    throw new ArcfaceError('already exists (the `force` option replaces it)', existing);
  }
  const skipped: PackFolderResult['skipped'] = src.ignored.map((file) => ({ file, reason: 'not an image file (extension)' }));
  for (const s of skipped) o.onSkip?.(s.file, s.reason);
  const classes: string[] = [];
  let reencoded = 0;
  const width = Math.max(1, o.concurrency ?? 8);
  const prepare = async (i: number): Promise<PreparedImage | Error> => {
    try {
      return await prepareImage(src.bytes(i), src.describe(i), size, o.quality ?? 95);
    } catch (e) {
      if (e instanceof ImageDecodeError || e instanceof ArcfaceError) return e;
      throw e;
    }
  };
  try {
    // A sliding window keeps `width` images in preparation while records are written in folder order.
    const window: Promise<PreparedImage | Error>[] = [];
    let next = 0;
    let lastClass = -1;
    for (let i = 0; i < src.length; i++) {
      if (o.signal?.aborted) throw new ArcfaceError('pack interrupted; no output written', o.out);
      while (next < src.length && window.length < width) window.push(prepare(next++));
      const r = await window.shift()!;
      if (r instanceof Error) {
        const reason = r instanceof ImageDecodeError ? r.reason : r.message;
        skipped.push({ file: src.describe(i), reason });
        o.onSkip?.(src.describe(i), reason);
      } else {
        const c = src.label(i);
        if (c !== lastClass) {
          classes.push(src.classes[c]);
          lastClass = c;
        }
        writer.add(classes.length - 1, r.jpeg);
        if (r.reencoded) reencoded++;
      }
      o.onProgress?.(i + 1, src.length);
    }
    const summary = writer.finish({ numClasses: classes.length, height: size, width: size });
    return { ...summary, skipped, reencoded, classes };
  } catch (e) {
    writer.abort();
    throw e;
  }
}

