// Face detection and five landmarks with @vladmandic/face-api: SSD-MobileNet v1 finds faces, the
// 68-point landmark net places points, and these are reduced to the five ArcFace points.
//
// Which face-api build: `dist/face-api.node-wasm.js`. It is CommonJS and `require`s
// "@tensorflow/tfjs" and "@tensorflow/tfjs-backend-wasm" as peers instead of bundling its own
// copy, so it resolves to the same files (tfjs's `main`, dist/tf.node.js) that our
// `import * as tf from '@tensorflow/tfjs'` loads: one engine, one backend registry, the backend we
// selected. The other builds do not fit: `face-api.node.js` needs tfjs-node (not installable here),
// `face-api.js`/`face-api.esm.js` carry a second bundled tfjs (a second engine), and
// `esm-nobundle` imports tfjs's ESM entry plus tfjs-backend-webgl (a second module instance, and
// a package we do not have). The weights are read from the package's own `model/` folder.
import * as tf from '@tensorflow/tfjs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fivePointsFrom68, type Landmarks5, type Point } from './align.ts';

export { fivePointsFrom68 };
import type { RgbImage } from './image.ts';
import { withSyncReads } from '../backend/select.ts';

const require = createRequire(import.meta.url);

/** What we use of face-api (its own .d.ts re-exports a tree we do not need to type-check). */
interface FaceApi {
  nets: {
    ssdMobilenetv1: { loadFromDisk(dir: string): Promise<void>; isLoaded: boolean };
    faceLandmark68Net: { loadFromDisk(dir: string): Promise<void>; isLoaded: boolean };
  };
  SsdMobilenetv1Options: new (o: { minConfidence?: number; maxResults?: number }) => object;
  detectAllFaces(input: tf.Tensor3D, options: object): {
    withFaceLandmarks(): Promise<
      {
        detection: { score: number; box: { x: number; y: number; width: number; height: number } };
        landmarks: { positions: { x: number; y: number }[] };
      }[]
    >;
  };
}

export interface DetectedFace {
  /** Detector confidence, 0..1. */
  score: number;
  box: { x: number; y: number; width: number; height: number };
  /** Left eye, right eye, nose tip, left and right mouth corners (as seen in the image), in pixels. */
  landmarks: Landmarks5;
  /** The 68 points the five are made from. */
  landmarks68: Point[];
}

export interface DetectOptions {
  /** Faces scoring below this are dropped (face-api's SSD default, 0.5). */
  minConfidence?: number;
  maxResults?: number;
}

/** Folder holding the detector and landmark weights inside the installed package. */
export function faceApiModelDir(): string {
  return path.join(path.dirname(require.resolve('@vladmandic/face-api/package.json')), 'model');
}

let loading: Promise<FaceApi> | undefined;

/** Loads face-api and its two nets once per process (weights stay in memory as tfjs variables). */
export function loadDetector(): Promise<FaceApi> {
  loading ??= (async () => {
    const api = require('@vladmandic/face-api/dist/face-api.node-wasm.js') as FaceApi;
    const dir = faceApiModelDir();
    if (!api.nets.ssdMobilenetv1.isLoaded) await api.nets.ssdMobilenetv1.loadFromDisk(dir);
    if (!api.nets.faceLandmark68Net.isLoaded) await api.nets.faceLandmark68Net.loadFromDisk(dir);
    return api;
  })();
  loading.catch(() => {
    loading = undefined;
  });
  return loading;
}

/**
 * Every face in `img` with its five landmarks, best score first. Runs on the active tfjs backend (wasm
 * in place of webgpu); use wasm (the cpu backend takes ~20 s per image for the SSD).
 */
export async function detectFaces(img: RgbImage, opts: DetectOptions = {}): Promise<DetectedFace[]> {
  // face-api reads its tensors synchronously: on webgpu it runs on wasm (src/backend/select.ts).
  return withSyncReads(() => detectOnActiveBackend(img, opts));
}

async function detectOnActiveBackend(img: RgbImage, opts: DetectOptions): Promise<DetectedFace[]> {
  const api = await loadDetector();
  const input = tf.tensor3d(Int32Array.from(img.data), [img.height, img.width, 3], 'int32');
  try {
    const found = await api
      .detectAllFaces(input, new api.SsdMobilenetv1Options({ minConfidence: opts.minConfidence ?? 0.5, maxResults: opts.maxResults ?? 100 }))
      .withFaceLandmarks();
    return found
      .map((f) => {
        const pts = f.landmarks.positions.map((q) => [q.x, q.y] as Point);
        const { x, y, width, height } = f.detection.box;
        return { score: f.detection.score, box: { x, y, width, height }, landmarks: fivePointsFrom68(pts), landmarks68: pts };
      })
      .sort((a, b) => b.score - a.score);
  } finally {
    input.dispose();
  }
}
