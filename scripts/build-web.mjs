// Builds the web page (web/) into dist-web/: web/main.ts bundled by esbuild from the browser entry (one
// tfjs instance: face-api's no-bundle ESM build imports the same tfjs modules) with the page and its style.
// The files the page loads from other packages (face-api's detector and landmark weights, the tfjs wasm
// binaries) are listed in dist-web/assets.json: `arcface serve` serves them from the installed packages, so
// the published package does not carry a second copy; `--standalone` copies them in instead, for any static
// web server. Either way the page fetches nothing but these files. Run by `npm run build` and `build:web`.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** URL path in the page -> the package file it is. Threaded wasm needs a cross-origin-isolated page; tfjs asks for these two. */
export const ASSETS = {
  'model/ssd_mobilenetv1_model-weights_manifest.json': '@vladmandic/face-api/model/ssd_mobilenetv1_model-weights_manifest.json',
  'model/ssd_mobilenetv1_model.bin': '@vladmandic/face-api/model/ssd_mobilenetv1_model.bin',
  'model/face_landmark_68_model-weights_manifest.json': '@vladmandic/face-api/model/face_landmark_68_model-weights_manifest.json',
  'model/face_landmark_68_model.bin': '@vladmandic/face-api/model/face_landmark_68_model.bin',
  'tfjs-backend-wasm.wasm': '@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm',
  'tfjs-backend-wasm-simd.wasm': '@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-simd.wasm',
};

/**
 * Builds dist-web (or `outDir`). Returns the bytes of the page's JavaScript, of the detector weights and of
 * the wasm binaries, and the bundle's input files.
 */
export async function buildWeb({ outDir = path.join(ROOT, 'dist-web'), minify = true, standalone = false } = {}) {
  const esbuild = await import('esbuild');
  fs.rmSync(outDir, { recursive: true, force: true });
  fs.mkdirSync(outDir, { recursive: true });
  const built = await esbuild.build({
    entryPoints: [path.join(ROOT, 'web', 'main.ts')],
    outfile: path.join(outDir, 'app.js'),
    bundle: true,
    platform: 'browser',
    format: 'esm',
    target: 'es2022',
    minify,
    legalComments: 'none',
    logLevel: 'warning',
    metafile: true,
  });
  for (const f of ['index.html', 'style.css']) fs.copyFileSync(path.join(ROOT, 'web', f), path.join(outDir, f));
  fs.writeFileSync(path.join(outDir, 'assets.json'), `${JSON.stringify(ASSETS, null, 2)}\n`);
  let weightsBytes = 0;
  let wasmBytes = 0;
  for (const [url, pkgFile] of Object.entries(ASSETS)) {
    const src = require.resolve(pkgFile);
    const n = fs.statSync(src).size;
    if (url.endsWith('.wasm')) wasmBytes += n;
    else weightsBytes += n;
    if (standalone) {
      fs.mkdirSync(path.dirname(path.join(outDir, url)), { recursive: true });
      fs.copyFileSync(src, path.join(outDir, url));
    }
  }
  return {
    outDir,
    javascriptBytes: fs.statSync(path.join(outDir, 'app.js')).size,
    weightsBytes,
    wasmBytes,
    inputs: Object.keys(built.metafile.inputs),
  };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const out = args.find((a) => !a.startsWith('--'));
  const r = await buildWeb({ standalone: args.includes('--standalone'), ...(out ? { outDir: path.resolve(out) } : {}) });
  console.log(`${path.relative(process.cwd(), r.outDir) || '.'}: app.js ${r.javascriptBytes} bytes; detector weights ${r.weightsBytes} and wasm ${r.wasmBytes} bytes ${args.includes('--standalone') ? 'copied in' : 'served from their packages'}`);
}
