// End-to-end embedding throughput on aligned 112x112 faces: PNG decode -> normalise -> model -> L2
// normalise, as `arcface embed --no-align` runs it, at batch 1 and 32. r50 and mbf (random weights:
// speed does not depend on them) via tfjs on each backend present, and via onnxruntime-node on the
// ONNX export of the same model. Also the detector + alignment cost per photo. JSON lines on stdout.
// Usage: node --import tsx bench/infer.ts [--models r50,mbf] [--backends wasm,cpu] [--images 32] [--no-onnx]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { initBackend } from '../src/backend/select.ts';
import { exportOnnx } from '../src/onnx/export.ts';
import { buildBackbone } from '../src/models/factory.ts';
import { normCrop } from '../src/infer/align.ts';
import { detectFaces, loadDetector } from '../src/infer/detect.ts';
import { embedFiles } from '../src/infer/embed.ts';
import type { Embedder } from '../src/infer/embedder.ts';
import { tfjsEmbedder } from '../src/infer/embedder-tfjs.ts';
import { readImage } from '../src/infer/image.ts';
import { loadEmbedder } from '../src/infer/load-embedder.ts';
import { emit as emitRow, presentBackends } from './common.ts';

// Load average beside each figure: the machine may be shared, and the figures scale with it.
const emit = (row: Record<string, unknown>): void => emitRow({ ...row, cores: os.availableParallelism(), load1: Number(os.loadavg()[0].toFixed(2)) });

const opt = (name: string, def: string): string => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : def;
};
const MODELS = opt('models', 'r50,mbf').split(',');
const BATCHES = [1, 32];
const N = Number(opt('images', '32'));
const WITH_ONNX = !process.argv.includes('--no-onnx');
const ASTRONAUT = path.resolve(import.meta.dirname, '..', '..', 'shared', 'fixtures', 'faces', 'astronaut.png');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'arcface-bench-infer-'));

/** N different aligned 112x112 PNG crops: the astronaut's face, jittered (or a synthetic pattern without the fixture). */
async function makeCrops(): Promise<string[]> {
  const files: string[] = [];
  const have = fs.existsSync(ASTRONAUT);
  const img = have ? await readImage(ASTRONAUT) : undefined;
  for (let i = 0; i < N; i++) {
    const dx = (i % 5) - 2, dy = ((i / 5) | 0) % 5 - 2;
    let data: Uint8Array;
    if (img) {
      const lm = [[202.34, 101.03], [244.49, 103.18], [222.69, 128.77], [201.4, 141.09], [243.66, 142.41]].map(([x, y]) => [x + dx, y + dy] as const);
      data = normCrop(img, lm as never, 112).crop.data;
    } else {
      data = Uint8Array.from({ length: 112 * 112 * 3 }, (_, k) => (k * (i + 3)) % 256);
    }
    const f = path.join(dir, `face${i}.png`);
    await sharp(data, { raw: { width: 112, height: 112, channels: 3 } }).png().toFile(f);
    files.push(f);
  }
  return files;
}

/** Images per second through the whole pipeline, after one warm-up batch. */
async function throughput(e: Embedder, files: string[], batch: number): Promise<{ imgPerS: number; seconds: number; images: number }> {
  const run = async (list: string[]): Promise<void> => {
    for await (const r of embedFiles(e, list, { noAlign: true, batchSize: batch })) if (!('embedding' in r)) throw new Error('no embedding');
  };
  await run(files.slice(0, batch));
  const t = performance.now();
  await run(files);
  const seconds = (performance.now() - t) / 1000;
  return { imgPerS: Number((files.length / seconds).toFixed(2)), seconds: Number(seconds.toFixed(2)), images: files.length };
}

const files = await makeCrops();
const backends = await presentBackends(opt('backends', 'wasm,cpu'));

for (const network of MODELS) {
  for (const backend of backends) {
    if (backend === 'cpu' && network !== 'mbf') {
      emit({ bench: 'infer', model: network, runtime: 'tfjs-cpu', skipped: `${network} on the cpu backend is too slow (pure-JS kernels); use wasm or onnxruntime` });
      continue;
    }
    await initBackend(backend, { quiet: true });
    const e = tfjsEmbedder(buildBackbone({ network }, { seed: 1 }), network);
    for (const batch of BATCHES) emit({ bench: 'infer', model: network, runtime: `tfjs-${backend}`, batch, ...(await throughput(e, files, batch)) });
    await e.dispose();
  }
  if (WITH_ONNX) {
    await initBackend('wasm', { quiet: true }); // only to build the model that gets exported
    const model = buildBackbone({ network }, { seed: 1 });
    const file = path.join(dir, `${network}.onnx`);
    fs.writeFileSync(file, exportOnnx(model, { foldBatchNorm: true }));
    model.dispose();
    const e = await loadEmbedder(file);
    for (const batch of BATCHES) emit({ bench: 'infer', model: network, runtime: 'onnxruntime-node', batch, ...(await throughput(e, files, batch)) });
    await e.dispose();
  }
}

// Detection + five points + alignment on a 512x512 photo (wasm), the part `arcface embed` adds per image.
if (fs.existsSync(ASTRONAUT) && backends.includes('wasm')) {
  await initBackend('wasm', { quiet: true });
  await loadDetector();
  const img = await readImage(ASTRONAUT);
  await detectFaces(img);
  const runs = 5;
  const t = performance.now();
  for (let i = 0; i < runs; i++) normCrop(img, (await detectFaces(img))[0].landmarks, 112);
  emit({ bench: 'infer', stage: 'detect+align', runtime: 'tfjs-wasm', image: '512x512', msPerImage: Number(((performance.now() - t) / runs).toFixed(1)) });
}
fs.rmSync(dir, { recursive: true, force: true });
