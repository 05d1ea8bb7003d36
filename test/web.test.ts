// The web page end to end in headless Chromium (Debian's /usr/bin/chromium through puppeteer-core): build
// dist-web, serve it with `arcface serve`'s server, feed photos of six people and a tiny IResNet through the
// page's file inputs, fine-tune on the backend the page picks, and check: the loss fell, held-out
// verification beats the starting model, the threshold is calibrated, a pair of new photos is verified, and
// the downloaded tfjs and ONNX models load in Node with the page's outputs. Prints one JSON line with the
// fine-tuning speed per backend headless Chromium offers and the page's size; keeps a screenshot.
//
// Photos: face-api's demo group photos (shipped in its npm package) hold 22 faces of different people;
// six of them, each cropped six ways (test/web-photos.ts: framing, rotation, mirror, colour), make the people.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import { spawn, spawnSync } from 'node:child_process';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { unzipSync } from 'fflate';
import type { Browser, ElementHandle, Page } from 'puppeteer-core';
import { REPO_ROOT, sharedFixture } from './helpers/fixtures.ts';
import { packageFile } from './helpers/third-party-model.ts';
import { variant } from './helpers/web-photos.ts';
import { buildBackbone } from '../src/models/factory.ts';
import { countParameters } from '../src/models/params.ts';
import { writeModelFiles, loadModel } from '../src/models/io.ts';
import { importOnnx } from '../src/convert/onnx/index.ts';
import { readCard } from '../src/infer/card.ts';
import { importTorch } from '../src/convert/import-torch.ts';
import { startWebServer, type WebServer } from '../src/cli/commands/serve.ts';
// @ts-expect-error: a plain ES module script without types
import { buildWeb } from '../scripts/build-web.mjs';

const CHROMIUM = '/usr/bin/chromium';
const skip = !fs.existsSync(CHROMIUM) ? `needs ${CHROMIUM} (Debian package chromium; .ci/run installs it)` : false;
const DEMO = (i: number) => packageFile('@vladmandic/face-api', `demo/sample${i}.jpg`)!;
const ARTIFACTS = process.env.ARCFACE_ARTIFACTS ?? path.join(REPO_ROOT, 'test', '.artifacts');

/** Faces in face-api 1.7.15's demo photos (SSD boxes, x y w h), one person each. */
const PEOPLE: { name: string; photo: number; box: [number, number, number, number] }[] = [
  { name: 'ada', photo: 1, box: [414, 355, 177, 240] },
  { name: 'bea', photo: 1, box: [1476, 199, 203, 241] },
  { name: 'cleo', photo: 2, box: [1447, 153, 194, 242] },
  { name: 'dora', photo: 3, box: [585, 329, 199, 271] },
  { name: 'eve', photo: 6, box: [1180, 305, 188, 280] },
  { name: 'fay', photo: 5, box: [787, 109, 156, 212] },
];
const VARIANTS = 6;
// insightface's IResNet (r18 topology, one block per stage) as ONNX and .pth, where ../shared/fixtures is present.
const TINY_ONNX = sharedFixture('iresnet_tiny', 'backbone.onnx');
const TINY_PTH = sharedFixture('iresnet_tiny', 'backbone.pth');

let tmp: string;
let server: WebServer;
let browser: Browser;
let page: Page;
let build: { javascriptBytes: number; wasmBytes: number; weightsBytes: number };

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'arcface-web-'));
  build = await buildWeb();
  if (skip) return;
  server = await startWebServer({ port: 0 });
  const { launch } = await import('puppeteer-core');
  browser = await launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless=new', '--no-sandbox', '--enable-unsafe-swiftshader', '--enable-unsafe-webgpu', '--use-webgpu-adapter=swiftshader', '--use-angle=swiftshader', '--window-size=1000,1400'],
    defaultViewport: { width: 1000, height: 1400 },
  });
  page = await browser.newPage();
  page.on('pageerror', (e) => console.error('page error:', e));
});

after(async () => {
  await browser?.close();
  await server?.close();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

interface PageState {
  phase: string;
  backend: string;
  backends: Record<string, string>;
  aligned: number;
  people: number;
  photos: number;
  pending: number;
  model?: { source: string; network: string; parameters: number };
  loss: { step: number; value: number }[];
  accuracy: { step: number; value: number }[];
  initialAccuracy?: number;
  finalAccuracy?: number;
  trainSeconds?: number;
  steps?: number;
  batchSize?: number;
  thresholds?: { far: number; cosine: number; tar: number; pairs: number }[];
  verify?: { cosine: number; threshold: number; match: boolean; nearest?: { person: string; cosine: number } };
  downloads: string[];
  error?: string;
}

const pageState = () => page.evaluate(() => JSON.parse(JSON.stringify((window as unknown as { arcfaceWeb: { state: unknown } }).arcfaceWeb.state))) as Promise<PageState>;

async function waitFor(what: string, ok: (s: PageState) => boolean, timeoutMs: number): Promise<PageState> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const s = await pageState();
    if (s.error) throw new Error(`page error while waiting for ${what}: ${s.error}`);
    if (ok(s)) return s;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}: ${JSON.stringify({ ...s, loss: s.loss.length })}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

async function waitForFile(dir: string, name: string, timeoutMs = 20_000): Promise<Buffer> {
  const file = path.join(dir, name);
  const end = Date.now() + timeoutMs;
  while (!fs.existsSync(file)) {
    if (Date.now() > end) throw new Error(`no download ${name} in ${dir}: ${fs.readdirSync(dir).join(', ')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return fs.readFileSync(file);
}

const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  assert.equal(a.length, b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
  return d;
};

test('`arcface serve` serves the page and the package files its assets.json names, nothing else; a busy port is an error', async () => {
  const cli = spawn(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'src', 'cli', 'main.ts'), 'serve', '--port', '0'], { cwd: REPO_ROOT });
  try {
    const url = await new Promise<string>((resolve, reject) => {
      let out = '';
      cli.stdout.on('data', (b: Buffer) => {
        out += b.toString();
        const m = /serving the web page at (http:\/\/127\.0\.0\.1:\d+\/)/.exec(out);
        if (m) resolve(m[1]!);
      });
      cli.once('exit', (code) => reject(new Error(`arcface serve exited with ${code}: ${out}`)));
    });
    const get = async (p: string) => {
      const r = await fetch(`${url}${p}`);
      return { status: r.status, type: r.headers.get('content-type'), bytes: new Uint8Array(await r.arrayBuffer()) };
    };
    const index = await get('');
    assert.deepEqual([index.status, index.type], [200, 'text/html; charset=utf-8']);
    assert.match(new TextDecoder().decode(index.bytes), /<script type="module" src="app.js">/);
    assert.equal((await get('app.js')).bytes.length, build.javascriptBytes);
    const wasm = await get('tfjs-backend-wasm-simd.wasm');
    assert.deepEqual([wasm.status, wasm.type], [200, 'application/wasm']);
    const weights = await get('model/ssd_mobilenetv1_model.bin');
    assert.deepEqual(weights.bytes, new Uint8Array(fs.readFileSync(packageFile('@vladmandic/face-api', 'model/ssd_mobilenetv1_model.bin')!)));
    // Only the four face-api files it names, and nothing outside dist-web.
    assert.equal((await get('model/age_gender_model.bin')).status, 404);
    assert.equal((await get('..%2fpackage.json')).status, 404);
    const port = new URL(url).port;
    const busy = spawnSync(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'src', 'cli', 'main.ts'), 'serve', '--port', port], { cwd: REPO_ROOT, encoding: 'utf8' });
    assert.equal(busy.status, 1);
    assert.match(busy.stderr, new RegExp(`port ${port} is in use`));
  } finally {
    cli.kill();
  }
});

test('the web page detects, aligns, fine-tunes, calibrates, verifies and downloads a model that Node loads', { skip, timeout: 360_000 }, async (t) => {
  const t0 = Date.now();
  // Photos: six people x six variants, named person_k.jpg (a name per photo); two more of ada to verify.
  const photoDir = path.join(tmp, 'photos');
  fs.mkdirSync(photoDir);
  const files: string[] = [];
  for (const p of PEOPLE) {
    for (let k = 0; k < VARIANTS; k++) {
      const f = path.join(photoDir, `${p.name}_${k + 1}.jpg`);
      await variant(DEMO(p.photo), p.box, k, f);
      files.push(f);
    }
  }
  const verifyA = path.join(tmp, 'verify-a.jpg');
  const verifyB = path.join(tmp, 'verify-b.jpg');
  await variant(DEMO(PEOPLE[0]!.photo), PEOPLE[0]!.box, 6, verifyA);
  await variant(DEMO(PEOPLE[0]!.photo), PEOPLE[0]!.box, 7, verifyB);
  // The starting model: a tiny IResNet at 112x112, saved as a tfjs layers model.
  await tf.setBackend('cpu');
  const start = buildBackbone({ network: 'iresnet', layers: [1, 1, 1, 1], widths: [8, 16, 16, 32], inputSize: 112, embeddingSize: 64 }, { seed: 3 });
  const startDir = path.join(tmp, 'start');
  await writeModelFiles(start, startDir, { network: 'iresnet', layers: [1, 1, 1, 1], widths: [8, 16, 16, 32], inputSize: 112, embeddingSize: 64 });
  start.dispose();

  const downloads = path.join(tmp, 'downloads');
  fs.mkdirSync(downloads);
  const cdp = await page.createCDPSession();
  await cdp.send('Browser.setDownloadBehavior', { behavior: 'allow', downloadPath: downloads });
  const requests: string[] = [];
  page.on('request', (r) => requests.push(r.url()));
  await page.goto(server.url, { waitUntil: 'load' });
  const ready = await waitFor('the page to start', (s) => s.phase === 'ready', 30_000);
  t.diagnostic(`backends: ${JSON.stringify(ready.backends)}; picked ${ready.backend}`);
  assert.ok(['webgpu', 'webgl', 'wasm'].includes(ready.backend), ready.backend);

  const input = async (sel: string, paths: string[]) => ((await page.$(sel)) as ElementHandle<HTMLInputElement>).uploadFile(...paths);
  await input('#model', [path.join(startDir, 'model.json'), path.join(startDir, 'weights.bin')]);
  await input('#photos', files);
  const aligned = await waitFor('faces to be aligned', (s) => s.photos === files.length && s.pending === 0 && s.phase === 'ready' && !!s.model, 120_000);
  const alignSeconds = (Date.now() - t0) / 1000;
  assert.equal(aligned.people, PEOPLE.length);
  assert.ok(aligned.aligned >= files.length - 2, `only ${aligned.aligned} of ${files.length} photos had a face`);

  await page.$eval('#steps', (e) => ((e as HTMLInputElement).value = '30'));
  await page.click('#train');
  const done = await waitFor('fine-tuning', (s) => s.phase === 'trained', 150_000);
  const loss = done.loss.map((p) => p.value);
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  t.diagnostic(`loss ${loss.map((l) => l.toFixed(2)).join(' ')}; accuracy ${done.accuracy.map((a) => `${a.step}:${a.value.toFixed(3)}`).join(' ')}`);
  assert.equal(done.steps, 30);
  assert.ok(mean(loss.slice(-5)) < 0.8 * mean(loss.slice(0, 5)), `loss did not fall: ${loss.join(', ')}`);
  assert.ok(done.finalAccuracy! > done.initialAccuracy!, `held-out verification ${done.finalAccuracy} does not beat the starting model's ${done.initialAccuracy}`);
  assert.deepEqual(done.thresholds!.map((x) => x.far), [0.1, 0.01]);
  for (const th of done.thresholds!) assert.ok(th.cosine >= -1 && th.cosine <= 1 && th.tar >= 0 && th.tar <= 1 && th.pairs >= 10, JSON.stringify(th));

  // Verify two new photos.
  await input('#verify-a', [verifyA]);
  await input('#verify-b', [verifyB]);
  await page.click('#verify');
  const verified = await waitFor('verification', (s) => !!s.verify, 30_000);
  const v = verified.verify!;
  assert.ok(Number.isFinite(v.cosine) && v.cosine <= 1 + 1e-6);
  assert.equal(v.threshold, done.thresholds!.find((x) => x.far === 0.01)!.cosine);
  assert.equal(v.match, v.cosine > v.threshold);
  assert.equal(await page.$eval('#verify-result', (e) => /same person|different people/.test(e.textContent ?? '')), true);

  // Downloads: the tfjs zip and the ONNX file, loaded in Node, give the page's embedding of the same crop.
  await page.click('#dl-tfjs');
  const zip = unzipSync(new Uint8Array(await waitForFile(downloads, 'arcface-finetuned-tfjs.zip')));
  await page.click('#dl-onnx');
  const onnxFile = path.join(downloads, 'arcface-finetuned.onnx');
  await waitForFile(downloads, 'arcface-finetuned.onnx');
  assert.deepEqual(Object.keys(zip).sort(), ['model-card.json', 'model.json', 'weights.bin']);
  const tfjsDir = path.join(tmp, 'downloaded');
  fs.mkdirSync(tfjsDir);
  for (const [name, bytes] of Object.entries(zip)) fs.writeFileSync(path.join(tfjsDir, name), bytes);
  const probe = (await page.evaluate(() => (window as unknown as { arcfaceWeb: { probe(): Promise<unknown> } }).arcfaceWeb.probe())) as { crop: number[]; size: number; embedding: number[] };
  const x = tf.tensor4d(Float32Array.from(probe.crop, (v) => (v - 127.5) / 127.5), [1, probe.size, probe.size, 3]);
  const fromTfjs = await loadModel(tfjsDir);
  const fromOnnx = (await importOnnx(onnxFile)).model;
  const scale = Math.max(1, ...probe.embedding.map(Math.abs));
  const dTfjs = maxAbsDiff((fromTfjs.predict(x) as tf.Tensor).dataSync(), probe.embedding);
  const dOnnx = maxAbsDiff((fromOnnx.predict(x) as tf.Tensor).dataSync(), probe.embedding);
  t.diagnostic(`Node vs page embedding: tfjs ${dTfjs.toExponential(2)}, onnx ${dOnnx.toExponential(2)} (scale ${scale.toFixed(2)})`);
  assert.ok(dTfjs <= 1e-4 * scale, `the downloaded tfjs model differs from the page by ${dTfjs}`);
  assert.ok(dOnnx <= 1e-4 * scale, `the downloaded ONNX model differs from the page by ${dOnnx}`);
  // The card travels with both: thresholds as calibrated on the page.
  const tfjsCard = readCard(tfjsDir)!;
  const onnxCard = readCard(onnxFile)!;
  assert.deepEqual(tfjsCard.thresholds.map((c) => c.cosine), done.thresholds!.map((c) => c.cosine));
  assert.deepEqual(onnxCard.thresholds, tfjsCard.thresholds);
  assert.deepEqual([tfjsCard.embeddingSize, tfjsCard.inputSize], [64, 112]);
  tf.dispose([x]);
  fromTfjs.dispose();
  fromOnnx.dispose();

  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const shot = path.join(ARTIFACTS, 'web-page.png');
  await page.screenshot({ path: shot as `${string}.png`, fullPage: true });
  t.diagnostic(`screenshot: ${shot}`);

  // Nothing but the page's own files was requested.
  const origin = new URL(server.url).origin;
  assert.deepEqual(requests.filter((u) => !u.startsWith(origin) && !u.startsWith('blob:') && !u.startsWith('data:')), []);

  // Fine-tuning speed per backend: a copy of the model, batches of 8, one warm-up step, then timed steps
  // for about 4 s (at least one; software WebGPU takes ~30 s a step).
  const speed: Record<string, { steps?: number; stepsPerSecond?: number; imagesPerSecond?: number; error?: string }> = {};
  for (const b of ['wasm', 'webgl', 'webgpu']) {
    const r = (await page.evaluate(
      (name) => (window as unknown as { arcfaceWeb: { benchmark(b: string, o: object): Promise<unknown> } }).arcfaceWeb.benchmark(name, { maxSteps: 5, budgetMs: 4000, batchSize: 8 }),
      b,
    )) as { steps?: number; stepsPerSecond?: number; imagesPerSecond?: number; error?: string };
    speed[b] = r.error ? { error: r.error } : { steps: r.steps, stepsPerSecond: +r.stepsPerSecond!.toFixed(3), imagesPerSecond: +r.imagesPerSecond!.toFixed(2) };
  }
  assert.ok(Object.values(speed).some((s) => s.stepsPerSecond! > 0), JSON.stringify(speed));

  // Starting models in the other formats: insightface's ONNX export and .pth of one network, read by the
  // page's importers, embed the page's crop as the Node importers' models do.
  const imported: Record<string, number> = {};
  for (const file of [TINY_ONNX, TINY_PTH].filter((f): f is string => !!f)) {
    await input('#model', [file]);
    const name = path.basename(file);
    const s = await waitFor(`${name} to load`, (x) => x.model?.source === name, 60_000);
    const p = (await page.evaluate(() => (window as unknown as { arcfaceWeb: { probe(): Promise<unknown> } }).arcfaceWeb.probe())) as typeof probe;
    const node = file.endsWith('.onnx') ? (await importOnnx(file)).model : importTorch(file).model;
    // 6,511,232 in the .pth; the ONNX export folded the BatchNorms that follow convolutions.
    assert.equal(s.model!.parameters, countParameters(node));
    assert.ok(s.model!.parameters > 6_500_000, `${s.model!.parameters}`);
    const xi = tf.tensor4d(Float32Array.from(p.crop, (v) => (v - 127.5) / 127.5), [1, p.size, p.size, 3]);
    imported[name] = maxAbsDiff((node.predict(xi) as tf.Tensor).dataSync(), p.embedding) / Math.max(1, ...p.embedding.map(Math.abs));
    assert.ok(imported[name]! <= 1e-4, `${name}: the page's embedding differs from Node's by ${imported[name]} (relative)`);
    tf.dispose(xi);
    node.dispose();
  }
  t.diagnostic(`imported starting models, page vs Node (relative): ${JSON.stringify(imported)}`);
  const figures = {
    test: 'web',
    browser: await browser.version(),
    backend: done.backend,
    backends: done.backends,
    photos: files.length,
    people: PEOPLE.length,
    alignSeconds: +alignSeconds.toFixed(1),
    fineTune: { steps: done.steps, batch: done.batchSize, seconds: +done.trainSeconds!.toFixed(2), stepsPerSecond: +((done.steps! - 1) / done.trainSeconds!).toFixed(3) },
    lossFirst: +loss[0]!.toFixed(3),
    lossLast: +loss.at(-1)!.toFixed(3),
    accuracyBefore: done.initialAccuracy,
    accuracyAfter: done.finalAccuracy,
    speed,
    pageBytes: { javascript: build.javascriptBytes, wasm: build.wasmBytes, detectorWeights: build.weightsBytes },
    seconds: +((Date.now() - t0) / 1000).toFixed(1),
  };
  console.log(JSON.stringify(figures));
});
