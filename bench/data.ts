// Data pipeline throughput: read + decode + flip + normalise + batch from a generated RecordIO pack of
// 112x112 JPEGs (quality 95), with 1 worker and with all workers, and the bare single-thread decode rate
// of the same JPEGs. One JSON line per measurement on stdout; load1 is the 1-minute load average (the
// machine's other users) when the line was written.
// Usage: node --import tsx bench/data.ts [--images 6400] [--batch 128] [--epochs 2] [--dir /tmp/...]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { decodeJpeg } from '../src/data/jpeg.ts';
import { createTrainLoader } from '../src/data/loader.ts';
import { writeNormalised } from '../src/data/normalise.ts';
import { PackWriter } from '../src/data/pack-writer.ts';
import { Rng } from '../src/data/random.ts';
import { RecordIOSource } from '../src/data/rec-source.ts';

const arg = (name: string, def: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : def;
};
const N = arg('images', 6400);
const BATCH = arg('batch', 128);
const EPOCHS = arg('epochs', 2);
const dirArg = process.argv.indexOf('--dir');
const DIR = dirArg > 0 ? process.argv[dirArg + 1] : path.join(os.tmpdir(), `arcface-bench-data-${N}`);
const SIZE = 112;

function emit(o: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify({ bench: 'data', ...o, load1: Number(os.loadavg()[0].toFixed(2)), cores: os.availableParallelism() })}\n`);
}

/** A smooth face-like pattern per identity, shifted and noisy per image (JPEGs of realistic size, ~8 KB). */
async function synthJpeg(id: number, k: number): Promise<Uint8Array> {
  const rng = new Rng([id, k]);
  const px = new Uint8Array(SIZE * SIZE * 3);
  const fx = 0.03 + 0.05 * ((id * 7919) % 97) / 97;
  const fy = 0.03 + 0.05 * ((id * 104729) % 89) / 89;
  const dx = rng.nextInt(9) - 4;
  const dy = rng.nextInt(9) - 4;
  const base = [(id * 53) % 200, (id * 97) % 200, (id * 151) % 200];
  for (let y = 0; y < SIZE; y++) {
    for (let x = 0; x < SIZE; x++) {
      const r2 = ((x - 56 - dx) ** 2 + (y - 60 - dy) ** 2) / 1600;
      const v = 60 * Math.sin(fx * (x + dx) * 6.28) * Math.cos(fy * (y + dy) * 6.28) + 80 * Math.exp(-r2);
      for (let c = 0; c < 3; c++) {
        const o = (y * SIZE + x) * 3 + c;
        px[o] = Math.max(0, Math.min(255, base[c] + v * (c === 1 ? 0.8 : 1) + rng.nextNormal(0, 4)));
      }
    }
  }
  const buf = await sharp(px, { raw: { width: SIZE, height: SIZE, channels: 3 } }).jpeg({ quality: 95 }).toBuffer();
  return new Uint8Array(buf);
}

async function ensurePack(): Promise<void> {
  if (fs.existsSync(path.join(DIR, 'property'))) return;
  process.stderr.write(`bench: generating ${N} JPEGs into ${DIR}\n`);
  const w = new PackWriter(DIR, 'insightface');
  const perId = 20;
  for (let i = 0; i < N; i += 32) {
    const jpegs = await Promise.all(Array.from({ length: Math.min(32, N - i) }, (_, j) => synthJpeg(Math.floor((i + j) / perId), (i + j) % perId)));
    jpegs.forEach((b, j) => w.add(Math.floor((i + j) / perId), b));
  }
  w.finish({ height: SIZE, width: SIZE });
}

async function bareDecode(src: RecordIOSource): Promise<void> {
  const jpegs = Array.from({ length: src.length }, (_, i) => src.bytes(i));
  const bytes = jpegs.reduce((n, b) => n + b.length, 0);
  const out = new Uint8Array(SIZE * SIZE * 3);
  for (let i = 0; i < 500; i++) decodeJpeg(jpegs[i % jpegs.length], out); // warm-up
  let t = performance.now();
  for (const b of jpegs) decodeJpeg(b, out);
  let s = (performance.now() - t) / 1000;
  emit({ case: 'decode-1thread', images: jpegs.length, mean_jpeg_bytes: Math.round(bytes / jpegs.length), seconds: +s.toFixed(3), img_per_s: Math.round(jpegs.length / s) });
  const f = new Float32Array(SIZE * SIZE * 3);
  t = performance.now();
  for (let i = 0; i < jpegs.length; i++) {
    decodeJpeg(jpegs[i], out);
    writeNormalised(out, SIZE, SIZE, f, 0, (i & 1) === 1);
  }
  s = (performance.now() - t) / 1000;
  emit({ case: 'decode+flip+normalise-1thread', images: jpegs.length, seconds: +s.toFixed(3), img_per_s: Math.round(jpegs.length / s) });
}

async function pipeline(src: RecordIOSource, workers: number, release = true): Promise<void> {
  const t0 = performance.now();
  const loader = await createTrainLoader({ source: src, batchSize: BATCH, workers, seed: 1 });
  const startup = (performance.now() - t0) / 1000;
  // Warm-up: a few batches of epoch 100 (JIT, page cache), not timed.
  let k = 0;
  for await (const _ of loader.batches(100)) if (++k >= 4) break;
  let images = 0;
  let checksum = 0;
  const t = performance.now();
  for (let e = 0; e < EPOCHS; e++) {
    for await (const b of loader.batches(e)) {
      images += b.size;
      checksum += b.images[0] + b.labels[b.size - 1];
      // What a trainer on the wasm backend does once tf.tensor has copied the batch.
      if (release) b.release();
    }
  }
  const s = (performance.now() - t) / 1000;
  await loader.close();
  emit({ case: 'pipeline', workers, release, batch: BATCH, images, epochs: EPOCHS, seconds: +s.toFixed(3), img_per_s: Math.round(images / s), startup_s: +startup.toFixed(2), checksum: +checksum.toFixed(3) });
}

await ensurePack();
const src = RecordIOSource.open(DIR);
await bareDecode(src);
const cores = os.availableParallelism();
for (const w of [0, 1, cores]) await pipeline(src, w);
await pipeline(src, cores, false);
src.close();
