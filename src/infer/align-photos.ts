// Raw photos -> aligned face crops, as insightface prepares training data: detect faces and five landmarks,
// warp each kept face onto the ArcFace template (norm_crop). Folders keep their layout (one sub-folder per
// identity stays one), crops that already have the output size pass through untouched, and every photo
// that needs a look (no face, several faces, a low score) is reported.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { ArcfaceError } from '../errors.ts';
import { IMAGE_EXTENSIONS } from '../data/folder-source.ts';
import * as tf from '@tensorflow/tfjs';
import { siblingModule, startWorker } from '../util/worker.ts';
import { normCrop, type Landmarks5 } from './align.ts';
import { detectFaces } from './detect.ts';
import { readImage, type RgbImage } from './image.ts';

export interface AlignOptions {
  /** Side of the square crops (default 112). */
  size?: number;
  /** Faces scoring below this are not detected at all (default 0.5). */
  minConfidence?: number;
  /** A kept face scoring below this is reported as low confidence (default 0.8). */
  lowConfidence?: number;
  /** Keep every face (name_0, name_1, ...) instead of the largest. */
  allFaces?: boolean;
  /** Worker threads (default: the CPU count, at most 4). */
  workers?: number;
  onProgress?: (done: number, total: number) => void;
}

export type AlignStatus = 'aligned' | 'passthrough' | 'no-face' | 'unreadable';

export interface AlignRecord {
  file: string;
  status: AlignStatus;
  /** Crops written, relative to the output folder. */
  outputs: string[];
  /** Faces the detector found. */
  faces: number;
  /** The kept faces' scores and five points. */
  kept?: { score: number; landmarks: Landmarks5; box: { x: number; y: number; width: number; height: number } }[];
  /** Why it is in the report: several faces, low confidence, or the error. */
  notes: string[];
}

export interface AlignReport {
  input: string[];
  out: string;
  size: number;
  photos: number;
  aligned: number;
  passthrough: number;
  noFace: number;
  unreadable: number;
  multipleFaces: number;
  lowConfidence: number;
  seconds: number;
  /** Every photo with a note (no face, several faces, low confidence, unreadable). */
  flagged: AlignRecord[];
  /** Every photo, in input order, with the faces kept. */
  records: AlignRecord[];
}

export interface AlignJob {
  file: string;
  /** Output path without extension, relative to the output folder. */
  rel: string;
}

const isImage = (f: string) => IMAGE_EXTENSIONS.includes(path.extname(f).toLowerCase());

/** Photos under the inputs (files, or folders walked recursively), each with its path under the output folder. */
export function listPhotos(inputs: readonly string[]): AlignJob[] {
  const jobs: AlignJob[] = [];
  const walk = (dir: string, base: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      if (e.name.startsWith('.')) continue;
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p, base);
      else if (isImage(e.name)) jobs.push({ file: p, rel: path.relative(base, p).replace(/\.[^.]+$/, '') });
    }
  };
  for (const input of inputs) {
    if (!fs.existsSync(input)) throw new ArcfaceError('no such file or folder', input);
    if (fs.statSync(input).isDirectory()) walk(input, input);
    else jobs.push({ file: input, rel: path.parse(input).name });
  }
  if (!jobs.length) throw new ArcfaceError(`no photos (${IMAGE_EXTENSIONS.join(' ')}) found`, inputs.join(', '));
  return jobs;
}

const area = (b: { width: number; height: number }) => b.width * b.height;

async function encode(img: RgbImage, ext: string): Promise<Buffer> {
  const s = sharp(img.data, { raw: { width: img.width, height: img.height, channels: 3 } });
  return ext === '.png' ? s.png().toBuffer() : s.jpeg({ quality: 95 }).toBuffer();
}

/** Aligns one photo into `out` (the caller's worker or the main thread). */
export async function alignOne(job: AlignJob, out: string, opts: AlignOptions = {}): Promise<AlignRecord> {
  const size = opts.size ?? 112;
  const ext = path.extname(job.file).toLowerCase() === '.png' ? '.png' : '.jpg';
  const rec: AlignRecord = { file: job.file, status: 'aligned', outputs: [], faces: 0, notes: [] };
  let img: RgbImage;
  try {
    img = await readImage(job.file);
  } catch (e) {
    return { ...rec, status: 'unreadable', notes: [(e as Error).message] };
  }
  const write = async (rel: string, bytes: Uint8Array | Buffer) => {
    const dest = path.join(out, rel);
    fs.mkdirSync(path.dirname(dest), { recursive: true });
    fs.writeFileSync(dest, bytes);
    rec.outputs.push(rel);
  };
  if (img.width === size && img.height === size) {
    // Already a crop of the right size: insightface's packs are such crops; detecting again would only move it.
    await write(job.rel + path.extname(job.file).toLowerCase(), fs.readFileSync(job.file));
    return { ...rec, status: 'passthrough' };
  }
  const faces = await detectFaces(img, { minConfidence: opts.minConfidence ?? 0.5 });
  rec.faces = faces.length;
  if (!faces.length) return { ...rec, status: 'no-face', notes: ['no face found'] };
  const kept = opts.allFaces ? faces : [faces.reduce((a, b) => (area(b.box) > area(a.box) ? b : a))];
  if (faces.length > 1) rec.notes.push(opts.allFaces ? `${faces.length} faces, all kept` : `${faces.length} faces, the largest kept`);
  const low = opts.lowConfidence ?? 0.8;
  rec.kept = [];
  for (const [i, f] of kept.entries()) {
    if (f.score < low) rec.notes.push(`face ${i} scores ${f.score.toFixed(3)} (< ${low})`);
    const { crop } = normCrop(img, f.landmarks, size);
    await write(opts.allFaces ? `${job.rel}_${i}${ext}` : job.rel + ext, await encode(crop, ext));
    rec.kept.push({ score: f.score, landmarks: f.landmarks, box: f.box });
  }
  return rec;
}

/** Messages to an align worker thread (src/infer/align-worker.ts). */
export type AlignRequest = { type: 'init'; backend: string } | { type: 'job'; job: AlignJob; out: string; opts: AlignOptions } | { type: 'close' };

const WORKER_URL = siblingModule(import.meta.url, 'align-worker');

/** Runs `jobs` over worker threads, each with its own detector, results in input order. */
async function alignInWorkers(jobs: AlignJob[], out: string, opts: AlignOptions, n: number): Promise<AlignRecord[]> {
  const results: AlignRecord[] = new Array(jobs.length);
  let next = 0;
  let done = 0;
  const { onProgress, ...plain } = opts;
  const run = (w: number) =>
    new Promise<void>((resolve, reject) => {
      const worker = startWorker(WORKER_URL);
      worker.postMessage({ type: 'init', backend: tf.getBackend() } satisfies AlignRequest);
      let current = -1;
      const send = () => {
        if (next >= jobs.length) {
          worker.postMessage({ type: 'close' } satisfies AlignRequest);
          return;
        }
        current = next++;
        worker.postMessage({ type: 'job', job: jobs[current]!, out, opts: plain } satisfies AlignRequest);
      };
      worker.on('message', (m: { type: 'ready' } | { type: 'done'; record: AlignRecord } | { type: 'error'; message: string; arcface: boolean }) => {
        if (m.type === 'ready') return send();
        if (m.type === 'error') {
          worker.postMessage({ type: 'close' });
          return reject(m.arcface ? new ArcfaceError(m.message) : new Error(`align worker ${w}: ${m.message}`));
        }
        results[current] = m.record;
        onProgress?.(++done, jobs.length);
        send();
      });
      worker.once('error', (e) => reject(new Error(`align worker ${w} crashed: ${e.message}`)));
      worker.once('exit', (code) => (code === 0 && (next >= jobs.length || current < 0) ? resolve() : reject(new Error(`align worker ${w} exited with code ${code}`))));
    });
  await Promise.all(Array.from({ length: n }, (_, w) => run(w)));
  return results;
}

/** Aligns every photo under `inputs` into `out`; returns the report (also what the CLI writes as JSON). */
export async function alignPhotos(inputs: readonly string[], out: string, opts: AlignOptions = {}): Promise<AlignReport> {
  const size = opts.size ?? 112;
  if (!Number.isInteger(size) || size < 16) throw new ArcfaceError(`the crop size must be an integer >= 16, got ${size}`);
  const jobs = listPhotos(inputs);
  const n = Math.max(1, Math.min(opts.workers ?? Math.min(4, os.availableParallelism()), jobs.length));
  if (!Number.isInteger(n)) throw new ArcfaceError(`the \`workers\` option must be a positive integer, got ${opts.workers}`);
  fs.mkdirSync(out, { recursive: true });
  const t0 = performance.now();
  let records: AlignRecord[];
  if (n === 1) {
    records = [];
    for (const job of jobs) {
      records.push(await alignOne(job, out, opts));
      opts.onProgress?.(records.length, jobs.length);
    }
  } else {
    records = await alignInWorkers(jobs, out, opts, n);
  }
  const count = (s: AlignStatus) => records.filter((r) => r.status === s).length;
  return {
    input: [...inputs],
    out,
    size,
    photos: records.length,
    aligned: count('aligned'),
    passthrough: count('passthrough'),
    noFace: count('no-face'),
    unreadable: count('unreadable'),
    multipleFaces: records.filter((r) => r.faces > 1).length,
    lowConfidence: records.filter((r) => r.notes.some((x) => x.includes('scores'))).length,
    seconds: Number(((performance.now() - t0) / 1000).toFixed(2)),
    flagged: records.filter((r) => r.notes.length),
    records,
  };
}
