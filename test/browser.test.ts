// The browser entry (`arcface-ts/browser`, src/browser.ts): esbuild bundles it for the browser platform, where
// any Node import (node:fs, sharp, onnxruntime-node, worker_threads, ...) cannot resolve and fails the build;
// the bundle then runs in a bare JS context with no `process`, `require` or `Buffer`: builds a model, trains
// it two steps on the cpu backend with progress and a stop signal, and round-trips it through ONNX bytes,
// torch .pth bytes and tfjs artifacts in memory. Its byte-level .rec/.bin codecs match the file-based ones.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import vm from 'node:vm';
import * as esbuild from 'esbuild';
import { RecordIOReader, RecordIOWriter } from '../src/data/recordio.ts';
import { readBin } from '../src/data/bin-set.ts';
import { encodeRecordIO, parseRecordIO } from '../src/data/recordio-bytes.ts';
import { parseBin, serialiseBin, type VerificationSet } from '../src/data/bin-bytes.ts';
import { REPO_ROOT, sharedFixture } from './helpers/fixtures.ts';

const NODE_ONLY = /^(node:|fs$|path$|os$|module$|worker_threads$|child_process$|crypto$|url$|sharp$|onnxruntime-node$|@vladmandic\/face-api|@cwasm\/|cli-progress$|yargs)/;
let bundle: string;
let inputs: string[];

before(async () => {
  const entry = path.join(REPO_ROOT, 'test', 'fixtures', 'browser-entry.ts');
  const r = await esbuild.build({
    entryPoints: [entry],
    bundle: true,
    platform: 'browser',
    format: 'iife',
    globalName: 'arcface',
    write: false,
    metafile: true,
    logLevel: 'silent',
  });
  bundle = r.outputFiles[0]!.text;
  inputs = Object.keys(r.metafile.inputs);
});

test('the browser entry bundles for the browser platform with no Node module in it', () => {
  // esbuild.build rejects (failing before()) on any import it cannot resolve for browsers, node:* included.
  assert.ok(inputs.some((i) => i.endsWith('src/browser.ts')));
  assert.deepEqual(inputs.filter((i) => NODE_ONLY.test(i) || /node_modules\/(sharp|onnxruntime-node|@vladmandic|@cwasm|yargs)\//.test(i)), []);
  assert.ok(!inputs.some((i) => /src\/(cli|infer\/(detect|image|embed)|data\/(decode|loader|recordio)\.ts)/.test(i)), 'Node-side modules were bundled');
});

test('in a bare JS context (no process, require, Buffer): train with progress and stop, round-trip ONNX, .pth and tfjs artifacts', async () => {
  const context = vm.createContext({
    console,
    setTimeout,
    clearTimeout,
    setInterval,
    clearInterval,
    queueMicrotask,
    TextEncoder,
    TextDecoder,
    URL,
    performance,
    AbortController,
    Date,
  });
  // A web worker's globals, as far as tfjs looks (it then runs its browser platform).
  vm.runInContext('globalThis.self = globalThis; globalThis.WorkerGlobalScope = function WorkerGlobalScope() {};', context);
  vm.runInContext(bundle, context, { filename: 'arcface-browser.js' });
  const run = vm.runInContext(`(async () => {
    if (typeof process !== 'undefined' || typeof require !== 'undefined' || typeof Buffer !== 'undefined') throw new Error('not a bare context');
    const { tf } = arcface;
    await tf.setBackend('cpu');
    const spec = { network: 'iresnet', layers: [1, 1, 1, 1], widths: [8, 8, 16, 16], inputSize: 32, embeddingSize: 16 };
    const model = arcface.buildBackbone(spec, { seed: 1 });
    const head = new arcface.PartialFC({ numClasses: 4, embeddingSize: 16, margin: { s: 32, m1: 1, m2: 0, m3: 0.35 }, seed: 1 });
    const images = new Float32Array(4 * 32 * 32 * 3).map((_, i) => Math.sin(i * 0.37));
    const batch = { images, labels: new Int32Array([0, 1, 2, 3]) };
    const stop = new AbortController();
    const progress = [];
    const fitted = await arcface.fit({ backbone: model, head, batches: [batch, batch, batch, batch], lr: 0.05, signal: stop.signal,
      onProgress: (p) => { progress.push(p); if (p.step === 2) stop.abort(); } });
    head.dispose();
    const x = tf.tensor4d(images, [4, 32, 32, 3]);
    const want = model.predict(x).dataSync();
    const maxDiff = (m) => { const got = m.predict(x).dataSync(); let d = 0; for (let i = 0; i < got.length; i++) d = Math.max(d, Math.abs(got[i] - want[i])); return d; };
    const onnx = arcface.exportOnnx(model);
    const fromOnnx = await arcface.importOnnx(onnx, { label: 'memory.onnx' });
    const pth = arcface.serialiseTorchStateDict(arcface.toStateDict(model));
    const fromPth = arcface.importTorch(pth, { label: 'memory.pth' });
    const fromArtifacts = await arcface.modelFromArtifacts(await arcface.modelToArtifacts(model, spec));
    let badBytes = '';
    try { arcface.importTorch(new Uint8Array([1, 2, 3]), { label: 'junk.pth' }); } catch (e) { badBytes = (e instanceof arcface.ArcfaceError) + ' ' + e.message; }
    return JSON.stringify({
      fitted, progress, backend: tf.getBackend(),
      onnxBytes: onnx.length, onnxDiff: maxDiff(fromOnnx.model),
      pthSpec: fromPth.spec, pthDiff: maxDiff(fromPth.model),
      artifactsSpec: arcface.specOf(fromArtifacts), artifactsDiff: maxDiff(fromArtifacts),
      badBytes,
    });
  })()`, context) as Promise<string>;
  // Plain data across the realm boundary (the context's arrays have another Array.prototype).
  const r = JSON.parse(await run) as {
    fitted: { steps: number; finalLoss: number; stopped: boolean };
    progress: { step: number; totalSteps: number; loss: number; lr: number }[];
    backend: string;
    onnxBytes: number;
    onnxDiff: number;
    pthSpec: { network: string; embeddingSize: number; inputSize: number; layers?: number[] };
    pthDiff: number;
    artifactsSpec: unknown;
    artifactsDiff: number;
    badBytes: string;
  };
  assert.equal(r.backend, 'cpu');
  // Stopped after step 2 of 4: the signal is checked before each step.
  assert.deepEqual({ ...r.fitted, finalLoss: 0 }, { steps: 2, finalLoss: 0, stopped: true });
  assert.deepEqual(r.progress.map((p) => [p.step, p.totalSteps]), [[1, 4], [2, 4]]);
  assert.ok(r.progress.every((p) => Number.isFinite(p.loss) && p.loss > 0), JSON.stringify(r.progress));
  assert.equal(r.fitted.finalLoss, r.progress[1]!.loss);
  assert.equal(r.progress[0]!.lr, 0.05); // no warm-up: the first step runs at the base lr
  assert.ok(r.onnxBytes > 10_000);
  assert.ok(r.onnxDiff < 1e-4, `ONNX round trip differs by ${r.onnxDiff}`);
  assert.deepEqual([r.pthSpec.network, r.pthSpec.embeddingSize, r.pthSpec.inputSize], ['iresnet', 16, 32]);
  assert.ok(r.pthDiff < 1e-5, `.pth round trip differs by ${r.pthDiff}`);
  assert.deepEqual(r.artifactsSpec, { network: 'iresnet', layers: [1, 1, 1, 1], widths: [8, 8, 16, 16], inputSize: 32, embeddingSize: 16 });
  assert.equal(r.artifactsDiff, 0);
  assert.match(r.badBytes, /^true junk\.pth: not a PyTorch zip checkpoint/);
});

test('parseRecordIO / encodeRecordIO agree with the file reader and writer, magic-word splits included', () => {
  const magic = [0x0a, 0x23, 0xd7, 0xce];
  const payloads = [
    new Uint8Array([1, 2, 3]),
    new Uint8Array([...magic, 9, 9, 9, 9, ...magic, 5]), // split twice
    new Uint8Array(0),
    Uint8Array.from({ length: 1001 }, (_, i) => (i * 7) & 255),
  ];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'arcface-recbytes-'));
  const file = path.join(dir, 'x.rec');
  const w = new RecordIOWriter(file);
  const fileOffsets = payloads.map((p) => w.write(p));
  w.close();
  const { bytes, offsets } = encodeRecordIO(payloads);
  assert.deepEqual(bytes, new Uint8Array(fs.readFileSync(file)));
  assert.deepEqual(offsets, fileOffsets);
  const parsed = parseRecordIO(bytes);
  assert.deepEqual(parsed.map((r) => r.offset), fileOffsets);
  const reader = new RecordIOReader(file);
  parsed.forEach((r, i) => {
    assert.deepEqual(r.payload, payloads[i]);
    assert.deepEqual(r.payload, new Uint8Array(reader.readAt(r.offset).payload));
  });
  reader.close();
  assert.throws(() => parseRecordIO(bytes.subarray(0, bytes.length - 5), 'cut.rec'), /cut\.rec: .*byte offset \d+: truncated record/);
  fs.rmSync(dir, { recursive: true, force: true });
});

const INSIGHTFACE_REC = sharedFixture('rec_insightface', 'train.rec');
test('parseRecordIO reads the insightface pack fixture as RecordIOReader does', { skip: !INSIGHTFACE_REC && 'needs ../shared/fixtures/rec_insightface' }, () => {
  const parsed = parseRecordIO(new Uint8Array(fs.readFileSync(INSIGHTFACE_REC!)), INSIGHTFACE_REC);
  const reader = new RecordIOReader(INSIGHTFACE_REC!);
  assert.ok(parsed.length > 72);
  for (const r of parsed) assert.deepEqual(r.payload, new Uint8Array(reader.readAt(r.offset).payload));
  reader.close();
});

const PAIRS = sharedFixture('pairs_py2.bin');
test('parseBin on bytes equals readBin on the file; serialiseBin round-trips', { skip: !PAIRS && 'needs ../shared/fixtures/pairs_py2.bin' }, () => {
  const plain = (s: VerificationSet) => ({ images: s.images.map((b) => Array.from(b)), issame: s.issame });
  const fromBytes = parseBin(new Uint8Array(fs.readFileSync(PAIRS!)), PAIRS!);
  assert.ok(fromBytes.issame.length > 0);
  assert.deepEqual(plain(fromBytes), plain(readBin(PAIRS!)));
  assert.deepEqual(plain(parseBin(serialiseBin(fromBytes), 'copy.bin')), plain(fromBytes));
});
