// Backend selection: explicit names, the environment override, clear errors, one stderr line, clean stdout.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { spawnSync } from 'node:child_process';
import * as tf from '@tensorflow/tfjs';
import { initBackend, BACKEND_ORDER } from '../src/backend/select.ts';
import { setupWebgpu } from '../src/backend/webgpu.ts';
import { REPO_ROOT, sharedFixture, skipUnlessFixture } from './helpers/fixtures.ts';

const require = createRequire(import.meta.url);
const hasTfjsNode = ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node'].some((p) => {
  try {
    require.resolve(p);
    return true;
  } catch {
    return false;
  }
});

// A hardware WebGPU adapter (not SwiftShader/lavapipe) comes right after tensorflow in auto.
const gpu = await setupWebgpu();
const hardwareGpu = gpu.ok && !gpu.adapter.software;

test('explicit names select that backend; unknown names and absent native bindings are errors', async () => {
  assert.equal(await initBackend('cpu', { quiet: true }), 'cpu');
  assert.equal(tf.getBackend(), 'cpu');
  assert.equal(await initBackend('wasm', { quiet: true }), 'wasm');
  assert.equal(tf.getBackend(), 'wasm');
  await assert.rejects(initBackend('gpu', { quiet: true }), /unknown backend "gpu": choose one of tensorflow, webgpu, /);
  if (!gpu.ok) await assert.rejects(initBackend('webgpu', { quiet: true }), /backend "webgpu" is not available: /);
  if (!hasTfjsNode) {
    await assert.rejects(initBackend('tensorflow', { quiet: true }), /backend "tensorflow" is not available \(install @tensorflow\/tfjs-node/);
  }
  assert.deepEqual(BACKEND_ORDER.slice(0, 1), ['tensorflow']);
  assert.ok(BACKEND_ORDER.indexOf('wasm') < BACKEND_ORDER.indexOf('cpu'));
});

test('auto picks the best present backend per workload (never the slow cpu one when wasm loads)', async () => {
  const infer = await initBackend('auto', { quiet: true });
  assert.equal(infer, hasTfjsNode ? 'tensorflow' : hardwareGpu ? 'webgpu' : 'wasm');
  assert.equal(tf.getBackend(), infer);
  const trainer = await initBackend('auto', { quiet: true, workload: 'train' });
  assert.equal(trainer, hasTfjsNode ? 'tensorflow' : hardwareGpu ? 'webgpu' : 'ort');
  assert.equal(tf.getBackend(), trainer);
});

test('ARCFACE_BACKEND and --backend choose it in the CLI; announced once on stderr, stdout stays JSON', { skip: skipUnlessFixture('mbf') }, () => {
  const out = path.join(os.tmpdir(), `arcface-backend-test-${process.pid}`);
  const run = (args: string[], env: Record<string, string>) =>
    spawnSync(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'src/cli/main.ts'), ...args], {
      cwd: REPO_ROOT,
      encoding: 'utf8',
      env: { ...process.env, ...env },
    });
  try {
    const args = ['export', '--format', 'tfjs', '--model', sharedFixture('mbf', 'backbone.pth')!, '--out', out];
    const viaEnv = run(args, { ARCFACE_BACKEND: 'cpu' });
    assert.equal(viaEnv.status, 0, viaEnv.stderr);
    assert.equal(viaEnv.stderr.match(/using the \w[\w-]* backend/g)?.length, 1);
    assert.match(viaEnv.stderr, /using the cpu backend/);
    assert.equal(JSON.parse(viaEnv.stdout).format, 'tfjs');
    const viaFlag = run([...args, '--backend', 'wasm'], { ARCFACE_BACKEND: 'cpu' });
    assert.equal(viaFlag.status, 0, viaFlag.stderr);
    assert.match(viaFlag.stderr, /using the wasm backend/);
    const bad = run([...args, '--backend', 'gpu'], {});
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /arcface: error: unknown backend "gpu"/);
  } finally {
    spawnSync('rm', ['-rf', out]);
  }
});
