// The training data loader: per-epoch seeded permutation of the whole dataset (like PyTorch's
// DistributedSampler, not a shuffle buffer), drop_last, seeded flips, batches decoded by a worker pool
// with prefetch. The order is a pure function of (seed, epoch, batch index), so a run resumes exactly
// from (epoch, batch) and does not depend on the number of workers.
import os from 'node:os';
import { ArcfaceError } from '../errors.ts';
import { DecodePool } from './decode-pool.ts';
import { fillSlots, type FillOptions, type SkipNote } from './fill.ts';
import { Rng } from './random.ts';
import type { ImageSource } from './source.ts';

export interface LoaderOptions {
  source: ImageSource;
  batchSize: number;
  /** Seed of the permutation and flips (insightface's default config uses 2048). */
  seed?: number;
  /** Permute each epoch (default true). False: dataset order, for evaluation. */
  shuffle?: boolean;
  /** Random horizontal flip with p = 0.5 (default true). */
  flip?: boolean;
  /** Side of the square model input; other sizes are resized (default 112). */
  inputSize?: number;
  /** Drop the last partial batch (default true, as insightface trains). */
  dropLast?: boolean;
  /** Decoding threads; 0 decodes in the calling thread (default: number of cores). */
  workers?: number;
  /** Batches decoded ahead of the consumer (default 2 x workers + 2). */
  prefetch?: number;
  /** Replace undecodable images instead of failing (default false: fail with the key). */
  skipCorrupt?: boolean;
  /** Called for each replaced image (default: one line on stderr). */
  onSkip?: (note: SkipNote) => void;
}

export interface Batch {
  epoch: number;
  /** Batch index within the epoch. */
  index: number;
  /** Number of images (batchSize, or less for a last partial batch). */
  size: number;
  /** [size, inputSize, inputSize, 3] normalised to [-1, 1]. */
  images: Float32Array;
  labels: Int32Array;
  /** Dataset index of each image, before any corrupt-image substitution. */
  indices: Int32Array;
  /**
   * Optional: hands `images` and `labels` back to the loader for reuse by a later batch (call it once they
   * have been copied, e.g. into a wasm-backend tensor). Saves the page faults of fresh 19 MB buffers,
   * which otherwise cost about as much as normalising. Never use the arrays after calling it.
   */
  release(): void;
}

const PERM_TAG = 0x7065726d; // "perm"
const FLIP_TAG = 0x666c6970; // "flip"
/** Images per worker task: large enough to amortise messaging, small enough to balance workers. */
const TASK_IMAGES = 32;

export class DataLoader {
  readonly source: ImageSource;
  readonly batchSize: number;
  readonly seed: number;
  readonly shuffle: boolean;
  readonly flip: boolean;
  readonly inputSize: number;
  readonly dropLast: boolean;
  readonly workers: number;
  readonly prefetch: number;
  /** Corrupt images replaced so far. */
  skipped = 0;
  private readonly fillOpts: FillOptions;
  private readonly onSkip: (note: SkipNote) => void;
  private pool: DecodePool | null = null;
  private cachedPerm: { epoch: number; perm: Int32Array } | null = null;
  private scratch: Uint8Array;
  /** Released full-size batch buffers, reused before allocating new ones. */
  private spare: { images: Float32Array; labels: Int32Array }[] = [];

  private constructor(o: LoaderOptions) {
    this.source = o.source;
    this.batchSize = o.batchSize;
    this.seed = o.seed ?? 2048;
    this.shuffle = o.shuffle ?? true;
    this.flip = o.flip ?? true;
    this.inputSize = o.inputSize ?? 112;
    this.dropLast = o.dropLast ?? true;
    this.workers = o.workers ?? os.availableParallelism();
    this.prefetch = o.prefetch ?? 2 * this.workers + 2;
    const check = (name: string, v: number, min: number): void => {
      if (!Number.isInteger(v) || v < min) throw new ArcfaceError(`${name} must be an integer >= ${min}, got ${v}`);
    };
    check('batch size', this.batchSize, 1);
    check('seed', this.seed, 0);
    check('input size', this.inputSize, 1);
    check('workers', this.workers, 0);
    check('prefetch', this.prefetch, 1);
    if (this.source.length === 0) throw new ArcfaceError('the dataset has no images', this.source.path);
    if (!(this.source.numClasses >= 1)) throw new ArcfaceError(`the dataset has no classes (${this.source.numClasses})`, this.source.path);
    if (this.dropLast && this.source.length < this.batchSize) {
      throw new ArcfaceError(`the dataset has ${this.source.length} images, fewer than one batch of ${this.batchSize} (drop_last)`, this.source.path);
    }
    this.fillOpts = { inputSize: this.inputSize, skipCorrupt: o.skipCorrupt ?? false };
    this.onSkip = o.onSkip ?? ((n) => process.stderr.write(`arcface: skipped corrupt image ${n.where} (${n.reason}); used dataset image ${n.substitute} instead\n`));
    this.scratch = new Uint8Array(this.inputSize * this.inputSize * 3);
  }

  static async create(o: LoaderOptions): Promise<DataLoader> {
    const loader = new DataLoader(o);
    if (loader.workers > 0) loader.pool = await DecodePool.create(loader.source.spec(), loader.workers, loader.fillOpts);
    return loader;
  }

  /** Images in the dataset. */
  get length(): number {
    return this.source.length;
  }

  get numClasses(): number {
    return this.source.numClasses;
  }

  get batchesPerEpoch(): number {
    const n = this.source.length / this.batchSize;
    return this.dropLast ? Math.floor(n) : Math.ceil(n);
  }

  /** The dataset order of epoch `epoch`: a pure function of (seed, epoch). */
  permutation(epoch: number): Int32Array {
    if (this.cachedPerm?.epoch === epoch) return this.cachedPerm.perm;
    let perm: Int32Array;
    if (this.shuffle) {
      perm = Rng.derive(this.seed, epoch, PERM_TAG).permutation(this.source.length);
    } else {
      perm = new Int32Array(this.source.length);
      for (let i = 0; i < perm.length; i++) perm[i] = i;
    }
    this.cachedPerm = { epoch, perm };
    return perm;
  }

  /** Flip decisions of one batch (1 = mirror): a pure function of (seed, epoch, batch index). */
  flips(epoch: number, index: number, n: number): Uint8Array {
    const out = new Uint8Array(n);
    if (!this.flip) return out;
    const rng = Rng.derive(this.seed, epoch, index, FLIP_TAG);
    for (let i = 0; i < n; i++) out[i] = rng.nextUint32() >= 0x80000000 ? 1 : 0;
    return out;
  }

  /**
   * The batches of one epoch, in order, from batch `startBatch` (to resume). Decoding runs ahead by
   * `prefetch` batches; stopping early (break) is fine.
   */
  async *batches(epoch: number, opts: { startBatch?: number } = {}): AsyncGenerator<Batch, void, undefined> {
    const start = opts.startBatch ?? 0;
    if (!Number.isInteger(epoch) || epoch < 0) throw new ArcfaceError(`epoch must be a non-negative integer, got ${epoch}`);
    if (!Number.isInteger(start) || start < 0 || start > this.batchesPerEpoch) {
      throw new ArcfaceError(`start batch ${start} is outside 0..${this.batchesPerEpoch} for this dataset`);
    }
    const total = this.batchesPerEpoch;
    const inflight: Promise<Batch>[] = [];
    // Look-ahead batches may never be awaited: the consumer breaks, or drops the generator without
    // returning it (tf.data's take()), and close() then rejects them. Marking them handled keeps such a
    // rejection from becoming an unhandled one; the batches awaited below still throw.
    const ahead = (index: number): Promise<Batch> => {
      const p = this.makeBatch(epoch, index);
      p.catch(() => {});
      return p;
    };
    let next = start;
    while (next < total && inflight.length < this.prefetch) inflight.push(ahead(next++));
    while (inflight.length) {
      const batch = await inflight.shift()!;
      if (next < total) inflight.push(ahead(next++));
      yield batch;
    }
  }

  /** Same as `batches(0)`: `for await (const b of loader)` walks epoch 0. */
  [Symbol.asyncIterator](): AsyncGenerator<Batch, void, undefined> {
    return this.batches(0);
  }

  async close(): Promise<void> {
    await this.pool?.close();
    this.pool = null;
  }

  /** Decodes batch `index` of `epoch`. */
  async makeBatch(epoch: number, index: number): Promise<Batch> {
    const perm = this.permutation(epoch);
    const from = index * this.batchSize;
    const size = Math.min(this.batchSize, perm.length - from);
    const indices = perm.slice(from, from + size);
    const flips = this.flips(epoch, index, size);
    const per = this.inputSize * this.inputSize * 3;
    const pool = this.pool;
    const full = size === this.batchSize;
    const reused = full ? this.spare.pop() : undefined;
    // Shared memory so that workers write pixels in place.
    const images = reused?.images ?? new Float32Array(new SharedArrayBuffer(4 * size * per));
    const labels = reused?.labels ?? new Int32Array(new SharedArrayBuffer(4 * size));
    let notes: SkipNote[];
    if (pool) {
      const jobs: Promise<SkipNote[]>[] = [];
      const step = Math.max(1, Math.min(TASK_IMAGES, Math.ceil(size / pool.size)));
      for (let s = 0; s < size; s += step) {
        const e = Math.min(size, s + step);
        jobs.push(pool.run({ indices: indices.subarray(s, e), flips: flips.subarray(s, e), start: s }, images, labels));
      }
      notes = (await Promise.all(jobs)).flat();
    } else {
      notes = await fillSlots(this.source, { indices, flips, start: 0 }, images, labels, this.fillOpts, this.scratch);
    }
    for (const n of notes) {
      this.skipped++;
      this.onSkip(n);
    }
    let released = false;
    const release = (): void => {
      if (released || !full) return;
      released = true;
      if (this.spare.length < this.prefetch + 2) this.spare.push({ images, labels });
    };
    return { epoch, index, size, images, labels, indices, release };
  }
}

/** A loader with training defaults: shuffle, flip, drop_last. */
export function createTrainLoader(o: LoaderOptions): Promise<DataLoader> {
  return DataLoader.create({ shuffle: true, flip: true, dropLast: true, ...o });
}

/** A loader with evaluation defaults: dataset order, no flip, keep the last partial batch. */
export function createEvalLoader(o: LoaderOptions): Promise<DataLoader> {
  return DataLoader.create({ shuffle: false, flip: false, dropLast: false, ...o });
}
