// Writes the demo's data: a training pack (train.rec/.idx/property, insightface layout) of synthetic
// identities, and `val.bin`, verification pairs drawn only from further identities that the pack never
// shows, so the demo measures recognition of unseen people as LFW does.
import path from 'node:path';
import { ArcfaceError } from '../errors.ts';
import { writeBin } from '../data/bin-set.ts';
import { encodeJpeg } from '../data/decode.ts';
import { PackWriter } from '../data/pack-writer.ts';
import { Rng } from '../data/random.ts';
import { SyntheticFaces, type NuisanceStrength } from './synthetic-faces.ts';

export interface DemoDatasetOptions {
  dir: string;
  /** Training identities (class ids 0..identities-1). */
  identities: number;
  imagesPerIdentity: number;
  /** Identities used only for the verification pairs. */
  heldOutIdentities: number;
  /** Pairs in val.bin: half same, half different (an odd count gets one more different pair). */
  pairs: number;
  /** Image side (default 64). */
  size?: number;
  seed?: number;
  /** JPEG quality (default 92). */
  quality?: number;
  /** Photos per held-out identity that pairs draw from (default imagesPerIdentity, at least 2). */
  heldOutImagesPerIdentity?: number;
  strength?: NuisanceStrength;
  /** Called after each batch of training images with (written, total). */
  onProgress?: (done: number, total: number) => void;
}

export interface DemoDatasetSummary {
  files: { rec: string; idx: string; property: string; bin: string };
  trainImages: number;
  trainIdentities: number;
  heldOutIdentities: number;
  pairs: number;
  samePairs: number;
  /** Generator identity index of both images of each pair (held-out indices start at `identities`). */
  pairIdentities: [number, number][];
  /** Wall seconds: pixel drawing (main thread), waiting for JPEG encoding beyond it, and everything. */
  seconds: { render: number; encodeWait: number; total: number };
  /** Images rendered and encoded per second (training and held-out together). */
  imagesPerSecond: number;
}

const BATCH = 64;

function checkCount(name: string, v: number, min: number): void {
  if (!Number.isInteger(v) || v < min) throw new ArcfaceError(`demo dataset: ${name} must be an integer >= ${min}, got ${v}`);
}

/** Generates, encodes and writes the pack and val.bin. Deterministic for a given seed and options. */
export async function makeDemoDataset(opts: DemoDatasetOptions): Promise<DemoDatasetSummary> {
  const size = opts.size ?? 64;
  const seed = opts.seed ?? 0;
  const quality = opts.quality ?? 92;
  const heldOutPer = opts.heldOutImagesPerIdentity ?? Math.max(2, opts.imagesPerIdentity);
  checkCount('identities', opts.identities, 1);
  checkCount('imagesPerIdentity', opts.imagesPerIdentity, 1);
  checkCount('heldOutIdentities', opts.heldOutIdentities, 2);
  checkCount('heldOutImagesPerIdentity', heldOutPer, 2);
  checkCount('pairs', opts.pairs, 2);
  const gen = new SyntheticFaces({ seed, size, strength: opts.strength });
  const t0 = performance.now();
  let render = 0;
  let encodeWait = 0;

  // Renders a batch synchronously, then encodes it in sharp's thread pool while the caller renders the next.
  const encodeBatch = (items: [number, number][]): Promise<Uint8Array[]> => {
    const r0 = performance.now();
    const pixels = items.map(([k, j]) => gen.image(k, j));
    render += performance.now() - r0;
    return Promise.all(pixels.map((data) => encodeJpeg({ data, width: size, height: size }, quality)));
  };
  const settle = async <T>(p: Promise<T>): Promise<T> => {
    const w0 = performance.now();
    const v = await p;
    encodeWait += performance.now() - w0;
    return v;
  };

  // Training pack: identity-major, as the insightface layout requires.
  const total = opts.identities * opts.imagesPerIdentity;
  const order: [number, number][] = [];
  for (let k = 0; k < opts.identities; k++) for (let j = 0; j < opts.imagesPerIdentity; j++) order.push([k, j]);
  const writer = new PackWriter(opts.dir, 'insightface', 'train');
  try {
    let pending = encodeBatch(order.slice(0, BATCH));
    for (let b = 0; b < total; b += BATCH) {
      const next = b + BATCH < total ? encodeBatch(order.slice(b + BATCH, b + 2 * BATCH)) : null;
      const encoded = await settle(pending);
      encoded.forEach((bytes, i) => writer.add(order[b + i][0], bytes));
      opts.onProgress?.(Math.min(b + BATCH, total), total);
      if (next) pending = next;
    }
  } catch (e) {
    writer.abort();
    throw e;
  }
  const pack = writer.finish({ numClasses: opts.identities, height: size, width: size });

  // Pairs from held-out identities: same pairs cycle through the identities in a shuffled order so each
  // is used about equally; different pairs take two distinct identities. Same and different alternate,
  // so every sequential fold of the protocol is balanced.
  const rng = Rng.derive(seed, 3);
  const first = opts.identities;
  const H = opts.heldOutIdentities;
  const cycle = rng.permutation(H);
  const pairIdentities: [number, number][] = [];
  const pairImages: [number, number][] = [];
  const samePairs = Math.floor(opts.pairs / 2);
  let sameDone = 0;
  for (let p = 0; p < opts.pairs; p++) {
    const same = p % 2 === 0 && sameDone < samePairs;
    let a: number;
    let b: number;
    const ja = rng.nextInt(heldOutPer);
    let jb: number;
    if (same) {
      a = b = cycle[sameDone % H];
      jb = (ja + 1 + rng.nextInt(heldOutPer - 1)) % heldOutPer;
      sameDone++;
    } else {
      a = rng.nextInt(H);
      b = (a + 1 + rng.nextInt(H - 1)) % H;
      jb = rng.nextInt(heldOutPer);
    }
    pairIdentities.push([first + a, first + b]);
    pairImages.push([ja, jb]);
  }
  const needed = new Map<string, [number, number]>();
  pairIdentities.forEach(([a, b], p) => {
    needed.set(`${a}:${pairImages[p][0]}`, [a, pairImages[p][0]]);
    needed.set(`${b}:${pairImages[p][1]}`, [b, pairImages[p][1]]);
  });
  const keys = [...needed.keys()];
  const bytesOf = new Map<string, Uint8Array>();
  for (let b = 0; b < keys.length; b += BATCH) {
    const slice = keys.slice(b, b + BATCH);
    const encoded = await settle(encodeBatch(slice.map((k) => needed.get(k)!)));
    slice.forEach((k, i) => bytesOf.set(k, encoded[i]));
  }
  const images: Uint8Array[] = [];
  const issame: boolean[] = [];
  pairIdentities.forEach(([a, b], p) => {
    images.push(bytesOf.get(`${a}:${pairImages[p][0]}`)!, bytesOf.get(`${b}:${pairImages[p][1]}`)!);
    issame.push(a === b);
  });
  const bin = path.join(opts.dir, 'val.bin');
  writeBin(bin, { images, issame });

  const seconds = (performance.now() - t0) / 1000;
  return {
    files: { ...pack.files, bin },
    trainImages: pack.images,
    trainIdentities: opts.identities,
    heldOutIdentities: H,
    pairs: opts.pairs,
    samePairs,
    pairIdentities,
    seconds: { render: render / 1000, encodeWait: encodeWait / 1000, total: seconds },
    imagesPerSecond: (pack.images + keys.length) / seconds,
  };
}
