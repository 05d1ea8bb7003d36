// Fine-tuning on a small folder (20 people x 7 photos) with the finetune_custom recipe: the plan adapts
// batch and epochs to the data and says so, two photos of each person are held out as verification pairs
// (a holdout.bin beside the run), accuracy is measured before and after, and the model card carries the
// held-out thresholds.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { readBin } from '../src/data/bin-set.ts';
import { SyntheticFaces } from '../src/demo/synthetic-faces.ts';
import { buildBackbone } from '../src/models/factory.ts';
import { saveModel } from '../src/models/io.ts';
import { initBackend } from '../src/backend/select.ts';
import { planSmallData } from '../src/train/small-data.ts';
import { REPO_ROOT } from './helpers/fixtures.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'arcface-small-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

test('planSmallData: two held out per person, balanced pairs, batch and epochs from the data', () => {
  const labels = Array.from({ length: 140 }, (_, i) => Math.floor(i / 7));
  const cfg = { batch_size: 32, num_epoch: 10, val_split: 0.25, min_steps: 200, seed: 1, gradient_acc: 1 };
  const p = planSmallData(labels, cfg, 'photos');
  assert.equal(p.holdout.length, 40);
  assert.equal(p.train.length, 100);
  assert.deepEqual([...new Set([...p.train, ...p.holdout])].length, 140, 'a split, nothing lost or shared');
  for (let k = 0; k < 20; k++) assert.equal(p.holdout.filter((i) => labels[i] === k).length, 2);
  // 20 genuine pairs (one per person), 20 impostors.
  assert.deepEqual([p.pairs.filter((x) => x[2]).length, p.pairs.filter((x) => !x[2]).length], [20, 20]);
  for (const [a, b, same] of p.pairs) {
    assert.ok(p.holdout.includes(a) && p.holdout.includes(b));
    assert.equal(labels[a] === labels[b], same);
  }
  // 100 photos: batch 16 (a quarter, a power of two), 6 steps an epoch, 34 epochs for >= 200 steps.
  assert.deepEqual([p.batchSize, p.numEpoch, p.verbose], [16, 34, 51]);
  assert.match(p.note, /140 photos of 20 people; 40 held out for verification \(20 genuine \+ 20 impostor pairs\); training on 100 with batch 16, 34 epochs \(204 steps\)/);
  assert.deepEqual(planSmallData(labels, cfg, 'photos'), p, 'seeded');
  // Three photos a person: nothing can be held out; everything trains.
  const few = planSmallData(Array.from({ length: 12 }, (_, i) => i % 4), cfg, 'photos');
  assert.deepEqual([few.holdout.length, few.train.length, few.batchSize], [0, 12, 2]);
  assert.match(few.note, /no verification set/);
});

test('arcface train --config finetune_custom on 20 people x 7 photos: runs, reports before/after, writes holdout.bin and the card', async () => {
  const photos = path.join(tmp, 'photos');
  const faces = new SyntheticFaces({ seed: 11, size: 32 });
  for (let k = 0; k < 20; k++) {
    fs.mkdirSync(path.join(photos, `person_${String(k).padStart(2, '0')}`), { recursive: true });
    for (let j = 0; j < 7; j++) {
      await sharp(faces.image(k, j), { raw: { width: 32, height: 32, channels: 3 } }).png().toFile(path.join(photos, `person_${String(k).padStart(2, '0')}`, `${j}.png`));
    }
  }
  await initBackend('cpu', { quiet: true });
  const spec = { network: 'iresnet', layers: [1, 1, 1, 1], widths: [8, 16, 16, 32], inputSize: 32, embeddingSize: 16 } as const;
  const init = buildBackbone({ ...spec, layers: [...spec.layers], widths: [...spec.widths] }, { seed: 3 });
  await saveModel(init, path.join(tmp, 'pretrained'), { ...spec, layers: [...spec.layers], widths: [...spec.widths] });
  init.dispose();
  const out = path.join(tmp, 'run');
  const r = spawnSync(
    process.execPath,
    ['--import', 'tsx', path.join(REPO_ROOT, 'src/cli/main.ts'), 'train', '--config', 'finetune_custom', '--rec', photos, '--init', path.join(tmp, 'pretrained'), '--output', out, '--quiet', '--set', 'min_steps=12', '--set', 'num_epoch=1'],
    { cwd: REPO_ROOT, encoding: 'utf8', env: { ...process.env, ARCFACE_BACKEND: 'ort' } },
  );
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /small data: 140 photos of 20 people; 40 held out for verification \(20 genuine \+ 20 impostor pairs\); training on 100 with batch 16, 2 epochs \(12 steps\)/);
  assert.match(r.stderr, /held-out verification accuracy: before 0\.\d{4}, after 0\.\d{4}/);
  const result = JSON.parse(r.stdout.trim().split('\n').pop()!);
  assert.equal(result.steps, 12);
  assert.ok(result.verificationBefore.holdout.accuracy >= 0 && result.verification.holdout.accuracy >= 0);
  const set = readBin(path.join(out, 'holdout.bin'));
  assert.equal(set.issame.length, 40);
  const card = JSON.parse(fs.readFileSync(path.join(out, 'model', 'model-card.json'), 'utf8'));
  assert.deepEqual(card.thresholds.map((t: { dataset: string; far: number; pairs: number }) => [t.dataset, t.far, t.pairs]), [['holdout', 1e-3, 40], ['holdout', 1e-4, 40]]);
  assert.equal(card.inputSize, 32);
  const saved = JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8'));
  assert.deepEqual([saved.batch_size, saved.num_epoch], [16, 2], 'the adapted values are what the run used and what a resume reads');
});
