// A run of ours through arcface_torch's files and back: out for 3 ranks from the last epoch boundary
// (a mid-epoch checkpoint falls back to it, or is refused), `--resume` of that folder continues exactly as
// resuming our own epoch-boundary checkpoint, and `arcface import --head` gathers the same centres.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { initBackend } from '../src/backend/select.ts';
import { loadConfig } from '../src/train/config.ts';
import { train } from '../src/train/loop.ts';
import { loadCheckpoint } from '../src/train/checkpoint.ts';
import { loadModel } from '../src/models/io.ts';
import { readNpy } from '../src/formats/npy.ts';
import { exportTorchrun } from '../src/convert/torchrun/export.ts';
import { REPO_ROOT, sharedFixture, skipUnlessFixture } from './helpers/fixtures.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'arcface-torchrun-train-'));
const REC = sharedFixture('rec_insightface');
const noRec = skipUnlessFixture('rec_insightface');

// 72 images in global batches of 12: six steps an epoch.
const small = (output: string, extra: Record<string, unknown> = {}) =>
  loadConfig('tiny', {
    rec: REC ?? 'missing',
    output,
    layers: [1, 1, 1, 1],
    widths: [4, 8, 8, 16],
    input_size: 32,
    embedding_size: 16,
    scale: 64, // arcface_torch hard-codes s = 64; a run that goes there and back trains with it
    batch_size: 12,
    num_epoch: 3,
    val_targets: [],
    frequent: 1,
    verbose: 1000,
    save_every: 1000,
    num_workers: 0,
    lr: 0.05,
    ...extra,
  });

before(async () => {
  await initBackend('cpu', { quiet: true });
});

async function weights(dir: string): Promise<Float32Array[]> {
  const m = await loadModel(dir);
  const w = m.getWeights().map((t) => t.dataSync() as Float32Array);
  m.dispose();
  return w;
}

test('ours -> torchrun (3 ranks, from the epoch boundary) -> --resume continues exactly as our own checkpoint', { skip: noRec }, async () => {
  const runA = path.join(tmp, 'a');
  await train(small(runA, { max_steps: 8 }), { quiet: true });
  const mid = await loadCheckpoint(path.join(runA, 'checkpoint'));
  assert.deepEqual([mid.position.step, mid.position.epoch, mid.position.batch], [8, 1, 2]);
  mid.backbone.dispose();
  const atEpoch = await loadCheckpoint(path.join(runA, 'checkpoint_epoch'));
  assert.deepEqual([atEpoch.position.step, atEpoch.position.epoch, atEpoch.position.batch], [6, 1, 0]);
  atEpoch.backbone.dispose();

  // mid-epoch: the epoch-boundary checkpoint is exported, with a warning
  const out = path.join(tmp, 'torch3');
  const warnings: string[] = [];
  const r = await exportTorchrun(runA, out, { worldSize: 3, warn: (m) => warnings.push(m) });
  assert.deepEqual([r.epoch, r.globalStep, r.source], [1, 6, path.join(runA, 'checkpoint_epoch')]);
  assert.ok(warnings.some((w) => /mid-epoch at step 8 \(epoch 1, batch 2\).*epoch-boundary checkpoint .* \(step 6, epoch 1\) is exported instead/.test(w)), warnings.join('\n'));
  assert.ok(warnings.some((w) => /widths = \[4,8,8,16\]/.test(w)) && warnings.some((w) => /input_size = 32/.test(w)), warnings.join('\n'));
  assert.deepEqual(r.shards.map((s) => s.numLocal), [4, 4, 4]);
  assert.match(fs.readFileSync(path.join(out, 'config.py'), 'utf8'), /config\.batch_size = 4 +# per GPU: our global batch 12 \/ 3 ranks/);
  // a batch that does not split over the ranks, and a lone mid-epoch checkpoint, are refused
  await assert.rejects(exportTorchrun(runA, path.join(tmp, 'torch5'), { worldSize: 5 }), /global batch 12 does not split over 5 ranks/);
  const lone = path.join(tmp, 'lone');
  fs.cpSync(path.join(runA, 'checkpoint'), path.join(lone, 'checkpoint'), { recursive: true });
  await assert.rejects(exportTorchrun(lone, path.join(tmp, 'torch-lone'), { worldSize: 3 }), /mid-epoch at step 8 .*no epoch-boundary checkpoint/);

  // back: four more steps from the torchrun folder, and from our own epoch-boundary checkpoint
  const viaTorch = await train(small(path.join(tmp, 'b'), { max_steps: 10 }), { quiet: true, resume: out });
  const direct = await train(small(path.join(tmp, 'c'), { max_steps: 10 }), { quiet: true, resume: path.join(runA, 'checkpoint_epoch') });
  assert.deepEqual([viaTorch.steps, direct.steps], [10, 10]);
  assert.equal(viaTorch.finalLoss, direct.finalLoss);
  const a = await weights(viaTorch.modelDir);
  const b = await weights(direct.modelDir);
  let differing = 0;
  a.forEach((w, i) => w.forEach((v, j) => (differing += v === b[i]![j] ? 0 : 1)));
  assert.equal(differing, 0, 'bit-identical weights after resuming through arcface_torch files');
  const start = await weights(path.join(runA, 'checkpoint_epoch', 'backbone'));
  assert.ok(start.some((w, i) => w.some((v, j) => v !== a[i]![j])), 'the continuation trained');

  // import of the folder: rank 0's backbone, and with --head the centres gathered in rank order
  const imp = spawnSync(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'src/cli/main.ts'), 'import', '--from', out, '--head', '--out', path.join(tmp, 'imported')], {
    cwd: REPO_ROOT,
    encoding: 'utf8',
    env: { ...process.env, ARCFACE_BACKEND: 'cpu' },
  });
  assert.equal(imp.status, 0, imp.stderr);
  const summary = JSON.parse(imp.stdout.trim().split('\n').pop()!);
  assert.deepEqual([summary.worldSize, summary.epoch, summary.globalStep, summary.numClasses, summary.network], [3, 1, 6, 12, 'iresnet']);
  const epochCk = await loadCheckpoint(path.join(runA, 'checkpoint_epoch'));
  assert.deepEqual(Array.from(readNpy(path.join(tmp, 'imported', 'head.npy')).data as Float32Array), Array.from(epochCk.head.data));
  const imported = await weights(path.join(tmp, 'imported'));
  const ours = epochCk.backbone.getWeights().map((t) => t.dataSync() as Float32Array);
  assert.deepEqual(imported.map((w) => Array.from(w)), ours.map((w) => Array.from(w)));
  epochCk.backbone.dispose();

  // `arcface train --resume` of the folder alone: its config.py (per-GPU batch 4 x 3 ranks) supplies the rest
  const cliRun = path.join(tmp, 'cli');
  const tr = spawnSync(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'src/cli/main.ts'), 'train', '--resume', out, '--max-steps', '7', '--workers', '0', '--quiet', '--output', cliRun], {
    cwd: REPO_ROOT,
    encoding: 'utf8',
    env: { ...process.env, ARCFACE_BACKEND: 'cpu' },
  });
  assert.equal(tr.status, 0, tr.stderr);
  const firstLoss = (dir: string) => JSON.parse(fs.readFileSync(path.join(dir, 'train.jsonl'), 'utf8').split('\n').find((l) => l.includes('"type":"train"'))!);
  const viaCli = firstLoss(cliRun);
  assert.equal(viaCli.step, 7);
  assert.equal(viaCli.loss, firstLoss(path.join(tmp, 'b')).loss);
});
