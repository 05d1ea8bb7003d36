// Summaries of a training pack or a verification set, for `arcface inspect`.
import { createHash } from 'node:crypto';
import { ArcfaceError } from '../errors.ts';
import { readBin } from './bin-set.ts';
import { decodeImage, ImageDecodeError } from './decode.ts';
import { jpegSize } from './jpeg.ts';
import { RecordIOSource } from './rec-source.ts';

export interface SampleImage {
  /** Record key (packs) or image index (.bin). */
  key: number;
  label?: number;
  bytes: number;
  format: string;
  width?: number;
  height?: number;
  sha256: string;
}

export interface RecSummary {
  kind: 'recordio';
  file: string;
  layout: string;
  images: number;
  /** Declared by `property` (or the meta record). */
  classes: number;
  /** Distinct labels actually found in the image records. */
  labelsFound: number;
  imagesPerClass: { min: number; max: number; mean: number };
  property: { numClasses: number; height: number; width: number } | null;
  meta: { a: number; b: number } | null;
  sample: SampleImage[];
  /** With verify: images that failed to decode. */
  corrupt?: { key: number; reason: string }[];
}

export interface BinSummary {
  kind: 'bin';
  file: string;
  pairs: number;
  same: number;
  different: number;
  images: number;
  sizes: Record<string, number>;
  sample: SampleImage[];
  corrupt?: { key: number; reason: string }[];
}

function formatOf(b: Uint8Array): string {
  if (b[0] === 0xff && b[1] === 0xd8) return 'jpeg';
  if (b[0] === 0x89 && b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47) return 'png';
  if (b[0] === 0x52 && b[1] === 0x49 && b[8] === 0x57 && b[9] === 0x45) return 'webp';
  return 'unknown';
}

function describeImage(key: number, bytes: Uint8Array, label?: number): SampleImage {
  const dims = jpegSize(bytes);
  return {
    key,
    ...(label !== undefined ? { label } : {}),
    bytes: bytes.length,
    format: formatOf(bytes),
    ...(dims ? { width: dims.width, height: dims.height } : {}),
    sha256: createHash('sha256').update(bytes).digest('hex'),
  };
}

async function tryDecode(bytes: Uint8Array, where: string): Promise<string | null> {
  try {
    await decodeImage(bytes, where);
    return null;
  } catch (e) {
    if (e instanceof ImageDecodeError) return e.reason;
    throw e;
  }
}

/** Reads every record header (labels); with `verify`, decodes every image too. */
export async function inspectRec(p: string, opts: { sample?: number; verify?: boolean } = {}): Promise<RecSummary> {
  const src = RecordIOSource.open(p);
  try {
    // Nothing to summarise: say so rather than print counts of nothing (min Infinity).
    if (src.length === 0) throw new ArcfaceError('the pack holds no images', src.path);
    const counts = new Map<number, number>();
    const sample: SampleImage[] = [];
    const corrupt: { key: number; reason: string }[] = [];
    const nSample = opts.sample ?? 3;
    for (let i = 0; i < src.length; i++) {
      const key = src.keys[i];
      if (opts.verify || i < nSample) {
        const { label, bytes } = src.item(i);
        counts.set(label, (counts.get(label) ?? 0) + 1);
        if (i < nSample) sample.push(describeImage(key, bytes, label));
        if (opts.verify) {
          const reason = await tryDecode(bytes, src.describe(i));
          if (reason) corrupt.push({ key, reason });
        }
      } else {
        const label = src.label(i);
        counts.set(label, (counts.get(label) ?? 0) + 1);
      }
    }
    const per = [...counts.values()];
    return {
      kind: 'recordio',
      file: src.path,
      layout: src.layout,
      images: src.length,
      classes: src.numClasses,
      labelsFound: counts.size,
      imagesPerClass: { min: per.reduce((a, b) => Math.min(a, b), Infinity), max: per.reduce((a, b) => Math.max(a, b), 0), mean: src.length / Math.max(1, counts.size) },
      property: src.property,
      meta: src.meta,
      sample,
      ...(opts.verify ? { corrupt } : {}),
    };
  } finally {
    src.close();
  }
}

export async function inspectBin(file: string, opts: { sample?: number; verify?: boolean } = {}): Promise<BinSummary> {
  const set = readBin(file);
  if (set.issame.length === 0) throw new ArcfaceError('not a verification .bin: it holds no pairs', file);
  const sizes: Record<string, number> = {};
  const corrupt: { key: number; reason: string }[] = [];
  for (let i = 0; i < set.images.length; i++) {
    const d = jpegSize(set.images[i]);
    const k = d ? `${d.width}x${d.height}` : formatOf(set.images[i]);
    sizes[k] = (sizes[k] ?? 0) + 1;
    if (opts.verify) {
      const reason = await tryDecode(set.images[i], `${file} image ${i}`);
      if (reason) corrupt.push({ key: i, reason });
    }
  }
  const same = set.issame.filter(Boolean).length;
  return {
    kind: 'bin',
    file,
    pairs: set.issame.length,
    same,
    different: set.issame.length - same,
    images: set.images.length,
    sizes,
    sample: set.images.slice(0, opts.sample ?? 2).map((b, i) => describeImage(i, b)),
    ...(opts.verify ? { corrupt } : {}),
  };
}
