// The training loop: config validation, exact resume, fine-tuning from the imported fixture, and the
// failure modes (missing data, NaN loss) with their messages.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/select.ts';
import { loadConfig } from '../src/train/config.ts';
import { train } from '../src/train/loop.ts';
import { loadModel } from '../src/models/io.ts';
import { importTorch } from '../src/convert/import-torch.ts';
import { REPO_ROOT, sharedFixture, skipUnlessFixture } from './helpers/fixtures.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'arcface-train-'));
const REC = sharedFixture('rec_insightface');
const noRec = skipUnlessFixture('rec_insightface');

// A small network on the 12-identity fixture pack, resized to 32x32.
const small = (output: string, extra: Record<string, unknown> = {}) =>
  loadConfig('tiny', {
    rec: REC ?? 'missing',
    output,
    layers: [1, 1, 1, 1],
    widths: [4, 8, 8, 16],
    input_size: 32,
    embedding_size: 16,
    batch_size: 8,
    num_epoch: 2,
    val_targets: [],
    frequent: 1,
    verbose: 1000,
    save_every: 1000,
    num_workers: 0,
    lr: 0.05,
    ...extra,
  });

function weightsOf(dir: string): Promise<Float32Array[]> {
  return loadModel(dir).then((m) => {
    const w = m.getWeights().map((t) => t.dataSync() as Float32Array);
    m.dispose();
    return w;
  });
}

before(async () => {
  await initBackend('cpu', { quiet: true });
});

test('config: typo, wrong type, bad value and missing file are errors before any work', () => {
  assert.throws(() => loadConfig('tiny', { learning_rate: 0.1 }), /unknown key "learning_rate"/);
  assert.throws(() => loadConfig('tiny', { lrr: 0.1 }), /unknown key "lrr" \(did you mean "lr"\?\)/);
  assert.throws(() => loadConfig('tiny', { batch_size: '64' }), /batch_size must be an integer, got "64"/);
  assert.throws(() => loadConfig('tiny', { optimizer: 'adam' }), /optimizer must be one of sgd, adamw/);
  assert.throws(() => loadConfig('tiny', { margin_list: [1, 0.5] }), /margin_list must have 3 entries/);
  assert.throws(() => loadConfig(path.join(tmp, 'nope.json')), /config not found/);
  const bad = path.join(tmp, 'bad.json');
  fs.writeFileSync(bad, JSON.stringify({ extends: 'base', netwrok: 'r50' }));
  assert.throws(() => loadConfig(bad), (e: Error) => e.message.includes(bad) && /unknown key "netwrok" \(did you mean "network"\?\)/.test(e.message));
  const cfg = loadConfig('ms1mv3_r50');
  assert.deepEqual([cfg.network, cfg.lr, cfg.weight_decay, cfg.num_epoch, cfg.batch_size, cfg.margin_list], ['r50', 0.1, 5e-4, 20, 128, [1, 0.5, 0]]);
  assert.equal(loadConfig('glint360k_r100').margin_list[2], 0.4);
});

test('resume: N steps straight equals N/2, stop, --resume, N/2 (cpu backend, 1e-6)', { skip: noRec }, async () => {
  const straight = await train(small(path.join(tmp, 'straight'), { max_steps: 6 }), { quiet: true });
  assert.equal(straight.steps, 6);
  await train(small(path.join(tmp, 'split'), { max_steps: 3 }), { quiet: true });
  const resumed = await train(small(path.join(tmp, 'split'), { max_steps: 6 }), { quiet: true, resume: path.join(tmp, 'split') });
  assert.equal(resumed.steps, 6);
  const a = await weightsOf(straight.modelDir);
  const b = await weightsOf(resumed.modelDir);
  assert.equal(a.length, b.length);
  let maxDiff = 0;
  a.forEach((w, i) => w.forEach((v, j) => (maxDiff = Math.max(maxDiff, Math.abs(v - b[i]![j]!)))));
  assert.ok(maxDiff <= 1e-6, `max |Δ| ${maxDiff}`);
  // The weights did change from their initialisation: resume is not trivially equal.
  const log = fs.readFileSync(path.join(tmp, 'straight', 'train.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  const losses = log.filter((e) => e.type === 'train').map((e) => e.loss as number);
  assert.equal(losses.length, 6);
  assert.ok(losses.every(Number.isFinite));
  const steps = fs.readFileSync(path.join(tmp, 'split', 'train.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((e) => e.type === 'train').map((e) => e.step);
  assert.deepEqual(steps, [1, 2, 3, 4, 5, 6]);
  assert.deepEqual(
    log.filter((e) => e.type === 'train').map((e) => e.loss),
    fs.readFileSync(path.join(tmp, 'split', 'train.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((e) => e.type === 'train').map((e) => e.loss),
    'the same loss at every step',
  );
});

test('fine-tune from the imported iresnet_tiny fixture with a new class count and embedding size', { skip: skipUnlessFixture('iresnet_tiny') || noRec }, async () => {
  await initBackend('wasm', { quiet: true });
  try {
    const pth = sharedFixture('iresnet_tiny', 'backbone.pth')!;
    const cfg = small(path.join(tmp, 'finetune'), {
      init: pth,
      layers: [1, 1, 1, 1],
      widths: [64, 128, 256, 512],
      input_size: 112,
      embedding_size: 32, // the fixture is 64-d: fc and features start fresh, everything else from the fixture
      batch_size: 4,
      max_steps: 2,
      freeze_bn: true,
      backbone_lr_scale: 0.1,
    });
    const result = await train(cfg, { quiet: true });
    assert.equal(result.steps, 2);
    assert.ok(Number.isFinite(result.finalLoss));
    const tuned = await loadModel(result.modelDir);
    const { model: fixture } = importTorch(pth);
    // Frozen BN statistics are exactly the fixture's; convolutions moved only a little (lr x 0.1).
    const stats = (m: tf.LayersModel) => m.getLayer('layer2.0.bn2').getWeights()[2]!.dataSync();
    assert.deepEqual(Array.from(stats(tuned)), Array.from(stats(fixture)));
    const conv = (m: tf.LayersModel) => m.getLayer('layer3.0.conv1').getWeights()[0]!.dataSync();
    const a = conv(tuned);
    const b = conv(fixture);
    let d = 0;
    let n = 0;
    for (let i = 0; i < a.length; i++) {
      d = Math.max(d, Math.abs(a[i]! - b[i]!));
      n = Math.max(n, Math.abs(b[i]!));
    }
    assert.ok(d > 0 && d < 0.05 * n, `conv moved by ${d} (weights up to ${n})`);
    assert.deepEqual(tuned.getLayer('fc').getWeights()[0]!.shape, [512 * 49, 32]);
    tuned.dispose();
    fixture.dispose();
  } finally {
    await initBackend('cpu', { quiet: true });
  }
});

function cli(args: string[]) {
  return spawnSync(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'src/cli/main.ts'), ...args], {
    cwd: REPO_ROOT,
    encoding: 'utf8',
    env: { ...process.env, ARCFACE_BACKEND: 'cpu' },
  });
}

test('CLI: a missing .rec and a typo in the config fail with the file named and exit 1', () => {
  const r1 = cli(['train', '--config', 'tiny', '--rec', path.join(tmp, 'no-such-data'), '--output', path.join(tmp, 'o1')]);
  assert.equal(r1.status, 1);
  assert.match(r1.stderr, /no-such-data: no such file or folder/);
  const bad = path.join(tmp, 'typo.json');
  fs.writeFileSync(bad, JSON.stringify({ extends: 'tiny', weight_dacay: 0.1 }));
  const r2 = cli(['train', '--config', bad]);
  assert.equal(r2.status, 1);
  assert.match(r2.stderr, /typo\.json: invalid config:\n\s+unknown key "weight_dacay" \(did you mean "weight_decay"\?\)/);
  assert.equal(fs.existsSync(path.join(tmp, 'o1')), false);
});

test('a NaN loss stops with the step and the last good checkpoint, and overwrites nothing', { skip: noRec }, async () => {
  const out = path.join(tmp, 'nan');
  // An absurd lr makes the weights overflow after a few updates; checkpoints every 2 steps.
  const cfg = small(out, { lr: 1e30, save_every: 2, max_steps: 40, clip_grad_norm: 0 });
  await assert.rejects(train(cfg, { quiet: true }), (e: Error) => {
    assert.match(e.message, /loss is (NaN|Infinity|-Infinity) at step (\d+) \(epoch \d+, batch \d+\); stopped\. Last good checkpoint: .*(nan\/checkpoint|none yet); nothing was overwritten/);
    return true;
  });
  assert.equal(fs.existsSync(path.join(out, 'model')), false, 'no final model written');
  if (fs.existsSync(path.join(out, 'checkpoint'))) {
    const state = JSON.parse(fs.readFileSync(path.join(out, 'checkpoint', 'state.json'), 'utf8'));
    const w = await weightsOf(path.join(out, 'checkpoint', 'backbone'));
    assert.ok(w.every((a) => a.every(Number.isFinite)), `checkpoint at step ${state.position.step} holds finite weights`);
  }
});

test('gradient accumulation: the optimiser steps every gradient_acc iterations, the schedule every iteration', { skip: noRec }, async () => {
  const out = path.join(tmp, 'acc');
  const result = await train(small(out, { gradient_acc: 2, max_steps: 4 }), { quiet: true });
  assert.equal(result.steps, 4);
  const state = JSON.parse(fs.readFileSync(path.join(out, 'checkpoint', 'state.json'), 'utf8'));
  assert.equal(state.optimizer.step, 2, 'two optimiser updates for four micro-batches');
  assert.equal(state.position.step, 4);
  const lrs = fs.readFileSync(path.join(out, 'train.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((e) => e.type === 'train').map((e) => e.lr);
  // 72 images / batch 8 = 9 iterations per epoch, 2 epochs: lr after k scheduler steps = 0.05 (1 - k/18).
  lrs.forEach((lr: number, i: number) => assert.ok(Math.abs(lr - 0.05 * (1 - (i + 1) / 18)) < 1e-12, `lr at step ${i + 1}: ${lr}`));
});
