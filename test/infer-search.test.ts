// `arcface search` and model-card thresholds with a real pretrained face model (fr_feature.onnx, see
// test/helpers/third-party-model.ts): the astronaut's mirror image is found as the astronaut in a gallery
// of two people, the saved gallery gives the same scores, and compare/search decide with the model card's
// calibrated threshold and say so.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { defaultCard, decisionThreshold, pickThreshold, writeCard, readCard } from '../src/infer/card.ts';
import { readGallery, searchGallery } from '../src/infer/search.ts';
import { REPO_ROOT, sharedFixture } from './helpers/fixtures.ts';
import { FR_FEATURE_MISSING, frFeatureOnnx, packageFile } from './helpers/third-party-model.ts';

const FR = frFeatureOnnx();
const OTHER = packageFile('@vladmandic/face-api', 'demo/sample1.jpg');
const ASTRONAUT = sharedFixture('faces', 'astronaut.png');
const skip = !FR ? FR_FEATURE_MISSING : !ASTRONAUT || !OTHER ? 'needs the astronaut fixture and face-api demo photos' : false;

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'arcface-search-'));
const MIRROR = path.join(tmp, 'mirror.png');
const GALLERY = path.join(tmp, 'people');
const MODEL = path.join(tmp, 'fr.onnx');

before(async () => {
  if (skip) return;
  await sharp(ASTRONAUT).flop().toFile(MIRROR);
  fs.mkdirSync(path.join(GALLERY, 'astronaut'), { recursive: true });
  fs.mkdirSync(path.join(GALLERY, 'other'));
  fs.copyFileSync(ASTRONAUT!, path.join(GALLERY, 'astronaut', 'a.png'));
  fs.copyFileSync(OTHER!, path.join(GALLERY, 'other', 'o.jpg'));
  fs.writeFileSync(path.join(GALLERY, 'other', 'notes.txt'), 'not a photo');
  fs.copyFileSync(FR!, MODEL);
});

function cli(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'src/cli/main.ts'), ...args, '--backend', 'wasm'], { encoding: 'utf8', cwd: REPO_ROOT });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('searchGallery ranks identities by their best image; readGallery takes embed lines', () => {
  const e = (...v: number[]) => Float32Array.from(v);
  const gallery = [
    { identity: 'ann', file: 'ann/1.jpg', embedding: e(1, 0) },
    { identity: 'bob', file: 'bob/1.jpg', embedding: e(0, 1) },
    { identity: 'bob', file: 'bob/2.jpg', embedding: e(0.8, 0.6) },
  ];
  const m = searchGallery(e(0.6, 0.8), gallery, 5, 0.9);
  assert.deepEqual(m.map((x) => [x.identity, x.file, x.match]), [['bob', 'bob/2.jpg', true], ['ann', 'ann/1.jpg', false]]);
  assert.ok(Math.abs(m[0]!.score - 0.96) < 1e-6);
  assert.equal(searchGallery(e(0.6, 0.8), gallery, 1, 0.99).length, 1);
  const file = path.join(tmp, 'g.jsonl');
  fs.writeFileSync(file, `${JSON.stringify({ file: 'x/carol/1.jpg', embedding: [1, 0] })}\n${JSON.stringify({ file: 'y.jpg', skipped: 'no face found' })}\n`);
  assert.deepEqual(readGallery(file).map((g) => g.identity), ['carol']);
  fs.writeFileSync(file, '{"identity":"a","embedding":[1,"x"]}\n');
  assert.throws(() => readGallery(file), /g\.jsonl: gallery line 1: "embedding" must be/);
});

test('decision threshold: given > the card at a FAR > the card at 1e-3 > the strictest > default', () => {
  const card = defaultCard(512, 112);
  assert.deepEqual(decisionThreshold({ card, fallback: 0.35 }), { value: 0.35, source: 'default' });
  card.thresholds.push({ far: 1e-2, cosine: 0.2, tar: 0.99, dataset: 'mine', pairs: 600 }, { far: 1e-4, cosine: 0.41, tar: 0.9, dataset: 'mine', pairs: 600 });
  assert.equal(pickThreshold(card)!.far, 1e-4, 'no 1e-3: the strictest');
  card.thresholds.push({ far: 1e-3, cosine: 0.3, tar: 0.95, dataset: 'mine', pairs: 600 });
  assert.deepEqual(decisionThreshold({ card, fallback: 0.35 }), { value: 0.3, source: 'model card: FAR 0.001 on mine' });
  assert.equal(decisionThreshold({ card, far: 1e-2, fallback: 0.35 }).value, 0.2);
  assert.equal(decisionThreshold({ card, threshold: 0.5, fallback: 0.35 }).source, 'given');
  assert.throws(() => decisionThreshold({ card, far: 1e-5, cardFile: 'm.card.json', fallback: 0.35 }), /m\.card\.json: the model card has no threshold at FAR 0\.00001 \(it has 0\.01, 0\.0001, 0\.001\)/);
  assert.deepEqual(card.alignment.points[0], [38.2946, 51.6963]);
});

test('arcface search: the mirrored astronaut is the astronaut; a saved gallery gives the same answer', { skip }, () => {
  const saved = path.join(tmp, 'people.jsonl');
  const r = cli('search', MIRROR, '--gallery', GALLERY, '--model', MODEL, '--save-gallery', saved);
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.equal(out.identity, 'astronaut');
  assert.equal(out.identities, 2);
  assert.deepEqual(out.matches.map((m: { identity: string }) => m.identity), ['astronaut', 'other']);
  assert.ok(out.matches[0].score >= 0.5 && out.matches[1].score <= 0.3, JSON.stringify(out.matches));
  assert.equal(out.thresholdSource, 'default');
  const again = cli('search', MIRROR, '--gallery', saved, '--model', MODEL, '--top-k', '1');
  assert.equal(again.code, 0, again.stderr);
  const out2 = JSON.parse(again.stdout);
  assert.equal(out2.matches.length, 1);
  assert.ok(Math.abs(out2.matches[0].score - out.matches[0].score) < 1e-6);
});

test('compare and search use the model card threshold and say which; an uncalibrated FAR is an error', { skip }, () => {
  const card = defaultCard(512, 112);
  // A threshold above the pair's cosine: the card, not the default 0.35, must decide "different".
  card.thresholds.push({ far: 1e-3, cosine: 0.995, tar: 0.9, dataset: 'mine', pairs: 600 });
  writeCard(MODEL, card);
  assert.equal(readCard(MODEL)!.thresholds[0]!.cosine, 0.995);
  const c = cli('compare', ASTRONAUT!, MIRROR, '--model', MODEL);
  assert.equal(c.code, 0, c.stderr);
  const out = JSON.parse(c.stdout);
  assert.deepEqual([out.threshold, out.thresholdSource, out.verdict], [0.995, 'model card: FAR 0.001 on mine', 'different']);
  assert.match(c.stderr, /threshold 0\.995, model card: FAR 0\.001 on mine/);
  const s = cli('search', MIRROR, '--gallery', GALLERY, '--model', MODEL);
  assert.equal(JSON.parse(s.stdout).identity, null);
  const bad = cli('compare', ASTRONAUT!, MIRROR, '--model', MODEL, '--far', '1e-5');
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /fr\.onnx\.card\.json: the model card has no threshold at FAR 0\.00001/);
});
