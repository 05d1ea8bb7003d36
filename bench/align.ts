// Face alignment on real photos (face-api's six demo group photos, 1920 px, and the astronaut fixture):
//  - which detector aligns best: face-api's SSD-MobileNet v1 + 68-point landmarks (what `arcface align` uses)
//    against its TinyFaceDetector + tiny 68-point landmarks. No photo here has hand-labelled points, so the
//    figure is mirror consistency: detect on the photo and on its mirror image, map the mirror's five points
//    back, and measure how far they land from the first ones, in % of the inter-ocular distance (a detector
//    whose points do not move with the face cannot align it). Also faces found and ms per photo.
//  - `arcface align` throughput (photos/s) with 1 and 2 worker threads.
// One JSON line per row. Usage: node --import tsx bench/align.ts [--photos 6]
import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/select.ts';
import { alignPhotos } from '../src/infer/align-photos.ts';
import type { Landmarks5, Point } from '../src/infer/align.ts';
import { faceApiModelDir, fivePointsFrom68 } from '../src/infer/detect.ts';
import { readImage, type RgbImage } from '../src/infer/image.ts';
import { arg, emit } from './common.ts';

const require = createRequire(import.meta.url);

interface Found {
  box: { x: number; y: number; width: number; height: number };
  five: Landmarks5;
}

interface FaceApiBench {
  nets: Record<'ssdMobilenetv1' | 'faceLandmark68Net' | 'tinyFaceDetector' | 'faceLandmark68TinyNet', { loadFromDisk(dir: string): Promise<void> }>;
  SsdMobilenetv1Options: new (o: object) => object;
  TinyFaceDetectorOptions: new (o: object) => object;
  detectAllFaces(input: tf.Tensor3D, o: object): {
    withFaceLandmarks(tiny?: boolean): Promise<{ detection: { box: Found['box'] }; landmarks: { positions: { x: number; y: number }[] } }[]>;
  };
}

const photos = (): string[] => {
  const demo = path.join(path.dirname(require.resolve('@vladmandic/face-api/package.json')), 'demo');
  const list = fs.readdirSync(demo).filter((f) => /^sample\d\.jpg$/.test(f)).sort().map((f) => path.join(demo, f));
  const astronaut = path.resolve(import.meta.dirname, '../../shared/fixtures/faces/astronaut.png');
  return [...(fs.existsSync(astronaut) ? [astronaut] : []), ...list].slice(0, Number(arg('photos', '7')));
};

function mirror(img: RgbImage): RgbImage {
  const out = new Uint8Array(img.data.length);
  for (let y = 0; y < img.height; y++) {
    for (let x = 0; x < img.width; x++) {
      const a = (y * img.width + x) * 3;
      const b = (y * img.width + (img.width - 1 - x)) * 3;
      out[b] = img.data[a]!;
      out[b + 1] = img.data[a + 1]!;
      out[b + 2] = img.data[a + 2]!;
    }
  }
  return { ...img, data: out };
}

async function detect(api: FaceApiBench, kind: 'ssd' | 'tiny', img: RgbImage): Promise<Found[]> {
  const input = tf.tensor3d(Int32Array.from(img.data), [img.height, img.width, 3], 'int32');
  try {
    const opts = kind === 'ssd' ? new api.SsdMobilenetv1Options({ minConfidence: 0.5 }) : new api.TinyFaceDetectorOptions({ inputSize: 608, scoreThreshold: 0.5 });
    const r = await api.detectAllFaces(input, opts).withFaceLandmarks(kind === 'tiny');
    return r.map((f) => ({ box: { x: f.detection.box.x, y: f.detection.box.y, width: f.detection.box.width, height: f.detection.box.height }, five: fivePointsFrom68(f.landmarks.positions.map((p) => [p.x, p.y] as Point)) }));
  } finally {
    input.dispose();
  }
}

/** The mirror's five points in the original photo: x flipped, left and right swapped. */
const unmirror = (p: Landmarks5, width: number): Landmarks5 => {
  const f = (q: Point): Point => [width - 1 - q[0], q[1]];
  return [f(p[1]), f(p[0]), f(p[2]), f(p[4]), f(p[3])];
};

const iou = (a: Found['box'], b: Found['box']): number => {
  const x = Math.max(0, Math.min(a.x + a.width, b.x + b.width) - Math.max(a.x, b.x));
  const y = Math.max(0, Math.min(a.y + a.height, b.y + b.height) - Math.max(a.y, b.y));
  return (x * y) / (a.width * a.height + b.width * b.height - x * y);
};

async function compareDetectors(): Promise<void> {
  await initBackend('wasm', { quiet: true });
  const api = require('@vladmandic/face-api/dist/face-api.node-wasm.js') as FaceApiBench;
  const dir = faceApiModelDir();
  for (const n of ['ssdMobilenetv1', 'faceLandmark68Net', 'tinyFaceDetector', 'faceLandmark68TinyNet'] as const) await api.nets[n].loadFromDisk(dir);
  const list = photos();
  for (const kind of ['ssd', 'tiny'] as const) {
    const errors: number[] = [];
    let faces = 0;
    let ms = 0;
    for (const file of list) {
      const img = await readImage(file);
      const t = performance.now();
      const a = await detect(api, kind, img);
      ms += performance.now() - t;
      const b = (await detect(api, kind, mirror(img))).map((f) => ({
        box: { ...f.box, x: img.width - f.box.x - f.box.width },
        five: unmirror(f.five, img.width),
      }));
      faces += a.length;
      for (const f of a) {
        const m = b.reduce<Found | undefined>((best, g) => (iou(f.box, g.box) > (best ? iou(f.box, best.box) : 0.3) ? g : best), undefined);
        if (!m) continue;
        const eyes = Math.hypot(f.five[1][0] - f.five[0][0], f.five[1][1] - f.five[0][1]);
        const d = f.five.reduce((s, p, i) => s + Math.hypot(p[0] - m.five[i]![0], p[1] - m.five[i]![1]), 0) / 5;
        errors.push((100 * d) / eyes);
      }
    }
    errors.sort((x, y) => x - y);
    emit({
      bench: 'align-detector',
      detector: kind === 'ssd' ? 'face-api SSD-MobileNetV1 + 68 landmarks' : 'face-api TinyFaceDetector(608) + tiny 68 landmarks',
      photos: list.length,
      faces,
      mirrorMatched: errors.length,
      mirrorErrorMedianPctIOD: +errors[Math.floor(errors.length / 2)]!.toFixed(2),
      mirrorErrorMeanPctIOD: +(errors.reduce((s, e) => s + e, 0) / errors.length).toFixed(2),
      msPerPhoto: Math.round(ms / list.length),
      load1: +os.loadavg()[0]!.toFixed(2),
    });
  }
}

async function throughput(): Promise<void> {
  const list = photos();
  for (const workers of [1, 2]) {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-align-'));
    try {
      const t = performance.now();
      const r = await alignPhotos(list, out, { workers });
      const s = (performance.now() - t) / 1000;
      emit({ bench: 'align', workers, photos: r.photos, aligned: r.aligned, photosPerSec: +(r.photos / s).toFixed(2), seconds: +s.toFixed(1), load1: +os.loadavg()[0]!.toFixed(2) });
    } finally {
      fs.rmSync(out, { recursive: true, force: true });
    }
  }
}

await compareDetectors();
await throughput();
