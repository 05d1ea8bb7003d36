// Builds the web page (web/) into dist-web/: web/main.ts bundled by esbuild from the browser entry (one
// tfjs instance: face-api's no-bundle ESM build imports the same tfjs modules), the page, the tfjs wasm
// binaries and face-api's detector and landmark weights, so the page runs offline from its own files.
// Run by `npm run build` (the published package ships dist-web/) and `npm run build:web`.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** The face-api nets the page loads: SSD-MobileNet v1 and the 68-point landmark net. */
export const FACE_API_WEIGHTS = [
  'ssd_mobilenetv1_model-weights_manifest.json',
  'ssd_mobilenetv1_model.bin',
  'face_landmark_68_model-weights_manifest.json',
  'face_landmark_68_model.bin',
];
// Threaded wasm needs a cross-origin-isolated page; the server does not isolate it, so tfjs asks for these two.
const WASM_FILES = ['tfjs-backend-wasm.wasm', 'tfjs-backend-wasm-simd.wasm'];

/** Builds dist-web (or `outDir`); returns the bytes of JavaScript and of weights/wasm it wrote. */
export async function buildWeb({ outDir = path.join(ROOT, 'dist-web'), minify = true } = {}) {
  const esbuild = await import('esbuild');
  fs.rmSync(outDir, { recursive: true, force: true });
  fs.mkdirSync(path.join(outDir, 'model'), { recursive: true });
  const built = await esbuild.build({
    entryPoints: [path.join(ROOT, 'web', 'main.ts')],
    outfile: path.join(outDir, 'app.js'),
    bundle: true,
    platform: 'browser',
    format: 'esm',
    target: 'es2022',
    minify,
    sourcemap: false,
    legalComments: 'none',
    logLevel: 'warning',
    metafile: true,
  });
  for (const f of ['index.html', 'style.css']) fs.copyFileSync(path.join(ROOT, 'web', f), path.join(outDir, f));
  const faceApiModels = path.join(path.dirname(require.resolve('@vladmandic/face-api/package.json')), 'model');
  for (const f of FACE_API_WEIGHTS) fs.copyFileSync(path.join(faceApiModels, f), path.join(outDir, 'model', f));
  const wasmDir = path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm'));
  for (const f of WASM_FILES) fs.copyFileSync(path.join(wasmDir, f), path.join(outDir, f));
  const size = (f) => fs.statSync(path.join(outDir, f)).size;
  return {
    outDir,
    inputs: Object.keys(built.metafile.inputs),
    javascriptBytes: size('app.js'),
    wasmBytes: WASM_FILES.reduce((n, f) => n + size(f), 0),
    detectorWeightsBytes: FACE_API_WEIGHTS.reduce((n, f) => n + size(path.join('model', f)), 0),
  };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const r = await buildWeb();
  console.log(`dist-web: app.js ${r.javascriptBytes} bytes, wasm ${r.wasmBytes} bytes, detector weights ${r.detectorWeightsBytes} bytes`);
}
