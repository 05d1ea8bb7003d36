// Image files -> L2-normalised face embeddings: decode, find the face (detector, or landmarks given,
// or no alignment at all), align onto the ArcFace template at the model's input size, embed in batches.
import { ArcfaceError } from '../errors.ts';
import { normCrop, type Landmarks5 } from './align.ts';
import { detectFaces } from './detect.ts';
import type { Embedder } from './embedder.ts';
import { readImage, resizeImage, type RgbImage } from './image.ts';
import { l2Normalise } from './similarity.ts';

export interface PrepareOptions {
  /** Use these five points instead of running the detector. */
  landmarks?: Landmarks5;
  /** Resize the whole image to the model input instead of detecting and aligning. */
  noAlign?: boolean;
  /** Detector confidence threshold (default 0.5). */
  minConfidence?: number;
}

export interface EmbedOptions extends PrepareOptions {
  /** Images per model call (default 32). */
  batchSize?: number;
  /** Report images without a face as skipped instead of failing. */
  skipMissing?: boolean;
}

/** A face crop ready for the model, with where it came from. */
export interface PreparedFace {
  file: string;
  crop: RgbImage;
  /** The five points used for alignment (detected or given). */
  landmarks?: Landmarks5;
  /** Detector confidence, when the detector found them. */
  score?: number;
}

export type EmbedResult =
  | { file: string; embedding: Float32Array; landmarks?: Landmarks5; score?: number }
  | { file: string; skipped: string };

export class NoFaceError extends ArcfaceError {
  constructor(file: string) {
    super('no face found in the image (the `noAlign` option takes pre-cropped faces; the `landmarks` option gives the points)', file);
    this.name = 'NoFaceError';
  }
}

/** Decodes `file` and makes the `size` x `size` model crop. An image without a face throws NoFaceError. */
export async function prepareFace(file: string, size: number, opts: PrepareOptions = {}): Promise<PreparedFace> {
  const img = await readImage(file);
  if (opts.noAlign) return { file, crop: await resizeImage(img, size) };
  if (opts.landmarks) return { file, crop: normCrop(img, opts.landmarks, size).crop, landmarks: opts.landmarks };
  const [best] = await detectFaces(img, { minConfidence: opts.minConfidence });
  if (!best) throw new NoFaceError(file);
  return { file, crop: normCrop(img, best.landmarks, size).crop, landmarks: best.landmarks, score: best.score };
}

/** L2-normalised embeddings of prepared crops, `batchSize` per model call. */
export async function embedCrops(embedder: Embedder, crops: RgbImage[], batchSize = 32): Promise<Float32Array[]> {
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new ArcfaceError(`batch size must be a positive integer, got ${batchSize}`);
  const out: Float32Array[] = [];
  for (let i = 0; i < crops.length; i += batchSize) {
    for (const e of await embedder.embed(crops.slice(i, i + batchSize))) out.push(l2Normalise(e));
  }
  return out;
}

/** Embeds image files in order, one result per file; batches the model calls. */
export async function* embedFiles(embedder: Embedder, files: string[], opts: EmbedOptions = {}): AsyncGenerator<EmbedResult> {
  const batchSize = opts.batchSize ?? 32;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new ArcfaceError(`batch size must be a positive integer, got ${batchSize}`);
  // Results leave in input order: skipped files wait behind the faces queued before them.
  let queue: (PreparedFace | { file: string; skipped: string })[] = [];
  let faces = 0;
  const flush = async function* (): AsyncGenerator<EmbedResult> {
    const ready = queue.filter((q): q is PreparedFace => 'crop' in q);
    const embs = await embedCrops(embedder, ready.map((q) => q.crop), batchSize);
    let k = 0;
    for (const q of queue) {
      if ('crop' in q) {
        const e = embs[k++];
        yield { file: q.file, embedding: e, ...(q.landmarks ? { landmarks: q.landmarks } : {}), ...(q.score !== undefined ? { score: q.score } : {}) };
      } else {
        yield q;
      }
    }
    queue = [];
    faces = 0;
  };
  for (const file of files) {
    try {
      queue.push(await prepareFace(file, embedder.inputSize, opts));
      faces++;
    } catch (e) {
      if (!(e instanceof NoFaceError) || !opts.skipMissing) {
        yield* flush(); // the images before the bad one still come out
        throw e;
      }
      queue.push({ file, skipped: 'no face found' });
    }
    if (faces >= batchSize) yield* flush();
  }
  yield* flush();
}

/** One image's embedding (L2-normalised) with its landmarks and score. */
export async function embedFile(embedder: Embedder, file: string, opts: PrepareOptions = {}): Promise<EmbedResult & { embedding: Float32Array }> {
  for await (const r of embedFiles(embedder, [file], { ...opts, batchSize: 1 })) {
    if ('embedding' in r) return r;
  }
  throw new NoFaceError(file);
}
