// Data pipeline throughput: read + decode + flip + normalise + batch from a generated RecordIO pack of
// 112x112 JPEGs (quality 95), with 1 worker and with all workers, and the bare single-thread decode rate
// of the same JPEGs. One JSON line per measurement on stdout; load1 is the 1-minute load average (the
// machine's other users) when the line was written.
// Usage: node --import tsx bench/data.ts [--images 6400] [--batch 128] [--epochs 1] [--rounds 3] [--dir /tmp/...]
// Each round runs every configuration for `epochs` epochs; the summary gives the best and median round.
// cpu_busy: fraction of all cores busy (anyone) during the round; own_cores: cores this process used —
// about 2 for all workers on an otherwise idle 2-core machine, less when others compete.
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
const EPOCHS = arg('epochs', 1);
const ROUNDS = arg('rounds', 3);
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

/** Busy fraction of all cores over the last interval, from /proc/stat (Linux), so a noisy run shows. */
function cpuSampler(): () => number | null {
  const read = (): [number, number] | null => {
    try {
      const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
      return [f.reduce((a, b) => a + b, 0), f[3] + f[4]];
    } catch {
      return null;
    }
  };
  let last = read();
  return () => {
    const now = read();
    if (!now || !last) return null;
    const busy = 1 - (now[1] - last[1]) / Math.max(1, now[0] - last[0]);
    last = now;
    return Number(busy.toFixed(2));
  };
}

async function pipelines(src: RecordIOSource, configs: { workers: number; release: boolean }[], rounds: number): Promise<void> {
  const loaders = [];
  for (const c of configs) {
    const t0 = performance.now();
    const loader = await createTrainLoader({ source: src, batchSize: BATCH, workers: c.workers, seed: 1 });
    // Warm-up: a few batches (JIT, page cache), not timed.
    let k = 0;
    for await (const b of loader.batches(100)) {
      b.release();
      if (++k >= 4) break;
    }
    loaders.push({ ...c, loader, startup: (performance.now() - t0) / 1000, rates: [] as number[] });
  }
  const cpu = cpuSampler();
  // Rounds interleave the configurations, so that a burst of load from elsewhere hits them alike.
  for (let r = 0; r < rounds; r++) {
    for (const l of loaders) {
      cpu();
      const own0 = process.cpuUsage();
      let images = 0;
      let checksum = 0;
      const t = performance.now();
      for (let e = 0; e < EPOCHS; e++) {
        for await (const b of l.loader.batches(r * EPOCHS + e)) {
          images += b.size;
          checksum += b.images[0] + b.labels[b.size - 1];
          // What a trainer on the wasm backend does once tf.tensor has copied the batch.
          if (l.release) b.release();
        }
      }
      const s = (performance.now() - t) / 1000;
      const own = process.cpuUsage(own0);
      l.rates.push(images / s);
      emit({ case: 'pipeline', workers: l.workers, release: l.release, round: r, batch: BATCH, images, seconds: +s.toFixed(3), img_per_s: Math.round(images / s), cpu_busy: cpu(), own_cores: +((own.user + own.system) / 1e6 / s).toFixed(2), checksum: +checksum.toFixed(3) });
    }
  }
  for (const l of loaders) {
    const sorted = [...l.rates].sort((a, b) => a - b);
    emit({ case: 'pipeline-summary', workers: l.workers, release: l.release, rounds, best_img_per_s: Math.round(sorted.at(-1)!), median_img_per_s: Math.round(sorted[Math.floor(sorted.length / 2)]), startup_s: +l.startup.toFixed(2) });
    await l.loader.close();
  }
}

await ensurePack();
const src = RecordIOSource.open(DIR);
await bareDecode(src);
const cores = os.availableParallelism();
// --quick: only the two figures of the goal (1 worker, all workers), for short quiet windows.
const quick = process.argv.includes('--quick');
await pipelines(
  src,
  [
    { workers: 1, release: true },
    { workers: cores, release: true },
    ...(quick
      ? []
      : [
          { workers: 0, release: true },
          { workers: cores, release: false },
        ]),
  ],
  ROUNDS,
);
await bareDecode(src);
src.close();
