// Training, evaluation and embedding on the webgpu backend: train() on the tiny config follows the ort
// engine's loss curve for 20 steps; a checkpoint written on webgpu resumes on ort and the reverse, landing
// where ort alone lands; `arcface eval` and `arcface embed` on webgpu print the wasm backend's numbers;
// `--backend webgpu` without an adapter exits 1 naming what is missing. Small shapes: on SwiftShader
// every step costs seconds.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { initBackend } from '../src/backend/select.ts';
import { writeBin } from '../src/data/bin-set.ts';
import { loadModel, saveModel } from '../src/models/io.ts';
import { buildBackbone } from '../src/models/factory.ts';
import { loadConfig } from '../src/train/config.ts';
import { train } from '../src/train/loop.ts';
import { REPO_ROOT, sharedFixture, skipUnlessFixture } from './helpers/fixtures.ts';
import { prng, randomizeWeights } from './helpers/random-weights.ts';
import { skipUnlessWebgpu, webgpuEnv } from './helpers/webgpu.ts';

const skipGpu = await skipUnlessWebgpu();
const REC = sharedFixture('rec_insightface');
const skipTrain = skipGpu || skipUnlessFixture('rec_insightface');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'arcface-webgpu-'));

const tiny = (output: string, steps: number) =>
  loadConfig('tiny', {
    rec: REC ?? 'missing',
    output,
    layers: [1, 1, 1, 1],
    widths: [8, 16, 16, 32],
    input_size: 32,
    embedding_size: 16,
    // test/ort-train.test.ts's shape (batch 4 with half the widths puts one step near a margin threshold,
    // where round-off alone moves that step's loss by 2e-3).
    batch_size: 8,
    num_epoch: 20,
    max_steps: steps,
    val_targets: [],
    frequent: 1,
    verbose: 1000,
    save_every: 1000,
    num_workers: 0,
    // Small steps: float32 round-off differs between any two backends and grows along the trajectory.
    lr: 0.01,
    seed: 7,
  });

async function run(backend: string, output: string, steps: number, resume?: string): Promise<number[]> {
  await initBackend(backend, { quiet: true });
  await train(tiny(output, steps), { quiet: true, resume });
  const log = fs.readFileSync(path.join(output, 'train.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  return log.filter((e) => e.type === 'train').map((e) => e.loss as number);
}

async function weightsOf(dir: string): Promise<Float32Array[]> {
  await initBackend('wasm', { quiet: true });
  const m = await loadModel(path.join(dir, 'model'));
  const w = m.getWeights().map((t) => t.dataSync() as Float32Array);
  m.dispose();
  return w;
}

function assertCurve(got: number[], want: number[], what: string): void {
  assert.equal(got.length, want.length, what);
  got.forEach((l, i) => assert.ok(Math.abs(l - want[i]!) <= 1e-3 * Math.abs(want[i]!), `${what} step ${i + 1}: ${l} vs ${want[i]}`));
}

test('train() on the tiny config: the webgpu loss curve follows the ort engine\'s (20 steps, 1e-3 relative)', { skip: skipTrain }, async () => {
  const ort = await run('ort', path.join(tmp, 'curve-ort'), 20);
  const gpu = await run('webgpu', path.join(tmp, 'curve-webgpu'), 20);
  assert.equal(ort.length, 20);
  assertCurve(gpu, ort, 'webgpu vs ort');
  assert.ok(Math.abs(ort[19]! - ort[0]!) > 0.1 * Math.abs(ort[0]!), `the loss moved: ${ort[0]} -> ${ort[19]}`);
  // numTensors is logged per step: flat on webgpu.
  const counts = fs.readFileSync(path.join(tmp, 'curve-webgpu', 'train.jsonl'), 'utf8').trim().split('\n')
    .map((l) => JSON.parse(l)).filter((e) => e.type === 'train').map((e) => e.numTensors as number);
  assert.deepEqual(counts.slice(1), new Array(19).fill(counts[1]), `numTensors per step: ${counts}`);
});

test('a checkpoint written on webgpu resumes on ort, and one written on ort resumes on webgpu', { skip: skipTrain }, async () => {
  const straight = path.join(tmp, 'straight-ort');
  const want = await run('ort', straight, 4);
  const cases = [['webgpu', 'ort'], ['ort', 'webgpu']] as const;
  for (const [first, second] of cases) {
    const dir = path.join(tmp, `${first}-then-${second}`);
    await run(first, dir, 2);
    const losses = await run(second, dir, 4, dir);
    // train.jsonl gets the resumed steps appended: steps 1-4, two from each backend.
    assertCurve(losses, want, `${first} then ${second}`);
    const a = await weightsOf(dir);
    const b = await weightsOf(straight);
    assert.equal(a.length, b.length);
    let maxDiff = 0;
    let maxRef = 0;
    a.forEach((w, i) => w.forEach((v, j) => {
      maxDiff = Math.max(maxDiff, Math.abs(v - b[i]![j]!));
      maxRef = Math.max(maxRef, Math.abs(b[i]![j]!));
    }));
    assert.ok(maxDiff <= 1e-4 * maxRef, `${first} then ${second}: weights max|Δ| ${maxDiff} vs max|w| ${maxRef}`);
  }
});

function arcface(args: string[], env: Record<string, string | undefined>): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'src/cli/main.ts'), ...args], {
    cwd: REPO_ROOT,
    encoding: 'utf8',
    env: { ...process.env, ...env },
    // dawn.node must not keep the process alive after the command is done.
    timeout: 300_000,
  });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** A smooth per-identity pattern with per-image noise, as PNG bytes. */
async function png(size: number, id: number, noise: number): Promise<Buffer> {
  const rand = prng(noise);
  const px = new Uint8Array(size * size * 3);
  for (let i = 0; i < px.length; i++) {
    const x = (i / 3) % size;
    const y = Math.floor(i / 3 / size);
    px[i] = Math.max(0, Math.min(255, Math.round(128 + 100 * Math.sin((1 + (id % 4)) * x / size * 3 + id + (i % 3)) * Math.cos((1 + (id % 3)) * y / size * 3) + 40 * (rand() - 0.5))));
  }
  return sharp(px, { raw: { width: size, height: size, channels: 3 } }).png().toBuffer();
}

test('arcface eval and arcface embed on webgpu print the wasm backend\'s numbers', { skip: skipGpu }, async () => {
  await initBackend('wasm', { quiet: true });
  const spec = { network: 'iresnet', layers: [1, 1, 1, 1], widths: [8, 16, 16, 32], inputSize: 32, embeddingSize: 16 };
  const modelDir = path.join(tmp, 'model');
  const m = buildBackbone(spec, { seed: 5 });
  randomizeWeights(m, { seed: 9 });
  await saveModel(m, modelDir, spec);
  m.dispose();
  // 10 pairs (one per fold), even pairs the same identity.
  const images: Uint8Array[] = [];
  const issame: boolean[] = [];
  for (let k = 0; k < 10; k++) {
    images.push(new Uint8Array(await png(32, k, 2 * k + 1)), new Uint8Array(await png(32, k % 2 === 0 ? k : k + 1, 2 * k + 2)));
    issame.push(k % 2 === 0);
  }
  const files = images.slice(0, 3).map((img, i) => {
    const file = path.join(tmp, `face${i}.png`);
    fs.writeFileSync(file, img);
    return file;
  });
  const bin = path.join(tmp, 'pairs.bin');
  writeBin(bin, { images, issame });

  const evalArgs = ['eval', '--model', modelDir, '--bin', bin, '--json', '--roc', path.join(tmp, 'roc.png')];
  const ref = arcface([...evalArgs, '--backend', 'wasm'], {});
  assert.equal(ref.code, 0, ref.stderr);
  const gpu = arcface([...evalArgs, '--backend', 'webgpu'], webgpuEnv());
  assert.equal(gpu.code, 0, gpu.stderr);
  assert.match(gpu.stderr, /using the webgpu backend \(.+\)/);
  const [a, b] = [JSON.parse(gpu.stdout.trim()), JSON.parse(ref.stdout.trim())];
  assert.equal(a.pairs, 10);
  assert.deepEqual([a.accuracyMean, a.accuracyPerFold, a.bestThreshold], [b.accuracyMean, b.accuracyPerFold, b.bestThreshold]);
  assert.ok(Math.abs(a.xnorm - b.xnorm) <= 1e-4 * Math.abs(b.xnorm), `xnorm ${a.xnorm} vs ${b.xnorm}`);

  const embedArgs = ['embed', '--model', modelDir, '--no-align', ...files];
  const e1 = arcface([...embedArgs, '--backend', 'wasm'], {});
  assert.equal(e1.code, 0, e1.stderr);
  const e2 = arcface([...embedArgs, '--backend', 'webgpu'], webgpuEnv());
  assert.equal(e2.code, 0, e2.stderr);
  const rows1 = e1.stdout.trim().split('\n').map((l) => JSON.parse(l));
  const rows2 = e2.stdout.trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(rows2.length, 3);
  rows2.forEach((r, i) => {
    assert.equal(r.file, rows1[i].file);
    const d = Math.max(...(r.embedding as number[]).map((v, j) => Math.abs(v - rows1[i].embedding[j])));
    assert.ok(d <= 1e-4, `${r.file}: embedding max|Δ| ${d}`);
  });

  // With detection: face-api reads tensors synchronously, so on webgpu it runs on wasm; same face, same landmarks.
  const face = sharedFixture('faces', 'astronaut.png');
  if (face) {
    const d1 = arcface(['embed', '--model', modelDir, face, '--backend', 'wasm'], {});
    assert.equal(d1.code, 0, d1.stderr);
    const d2 = arcface(['embed', '--model', modelDir, face, '--backend', 'webgpu'], webgpuEnv());
    assert.equal(d2.code, 0, d2.stderr);
    const [w, g] = [JSON.parse(d1.stdout.trim()), JSON.parse(d2.stdout.trim())];
    assert.deepEqual(g.landmarks, w.landmarks);
    assert.ok(g.score > 0.5);
    const d = Math.max(...(g.embedding as number[]).map((v, j) => Math.abs(v - w.embedding[j])));
    assert.ok(d <= 1e-4, `detected face: embedding max|Δ| ${d}`);
  }
});

test('--backend webgpu without a GPU driver exits 1 naming what is missing', { skip: process.platform !== 'linux' && 'Linux only (Dawn has Metal/D3D12 elsewhere)' }, () => {
  // No Vulkan loader on the library path, and a driver list that names nothing: no adapter either way.
  const r = arcface(['embed', '--model', path.join(tmp, 'absent'), '--no-align', path.join(tmp, 'absent.png'), '--backend', 'webgpu'],
    { LD_LIBRARY_PATH: '', VK_ICD_FILENAMES: path.join(tmp, 'no-such-icd.json') });
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /arcface: error: backend "webgpu" is not available: (no Vulkan loader \(libvulkan\.so\.1\)|no Vulkan driver registered|no WebGPU adapter)/);
  assert.equal(r.stderr.split('\n').filter((l) => l.startsWith('arcface: error')).length, 1);
});
