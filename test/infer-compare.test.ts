// Acceptance with a real pretrained face model: faceplugin's 512-d fr_feature.onnx (MIT, shipped in the npm
// package faceplugin-face-recognition-js, copied at test time by scripts/fetch-test-models.mjs), run by
// onnxruntime-node through `arcface compare`
// and `arcface embed`. The astronaut matches its mirror and a shifted, rescaled JPEG copy (cosine >= 0.5)
// and not another person (face-api's demo photo sample1.jpg, cosine <= 0.3). Bad input exits 1 with a
// message naming the file.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { initBackend } from '../src/backend/select.ts';
import { embedFile } from '../src/infer/embed.ts';
import type { Embedder } from '../src/infer/embedder.ts';
import { loadEmbedder } from '../src/infer/load-embedder.ts';
import { cosineSimilarity } from '../src/infer/similarity.ts';
import { REPO_ROOT, sharedFixture } from './helpers/fixtures.ts';
import { FR_FEATURE_MISSING, frFeatureOnnx, packageFile } from './helpers/third-party-model.ts';

const FR = frFeatureOnnx();
const OTHER = packageFile('@vladmandic/face-api', 'demo/sample1.jpg');
const ASTRONAUT = sharedFixture('faces', 'astronaut.png');
const skip = !FR
  ? FR_FEATURE_MISSING
  : !ASTRONAUT
    ? 'needs ../shared/fixtures/faces/astronaut.png'
    : false;

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'arcface-compare-'));
const MIRROR = path.join(tmp, 'mirror.png');
const SHIFTED = path.join(tmp, 'shifted.jpg');
let model: Embedder;

before(async () => {
  if (skip) return;
  await initBackend('wasm', { quiet: true });
  await sharp(ASTRONAUT).flop().toFile(MIRROR);
  // 512 -> 400 px, moved to (30, 70) on a grey 512x512 canvas, re-encoded as JPEG.
  await sharp(ASTRONAUT).resize(400, 400).extend({ top: 70, left: 30, bottom: 42, right: 82, background: { r: 40, g: 40, b: 40 } }).jpeg({ quality: 90 }).toFile(SHIFTED);
  model = await loadEmbedder(FR!);
});

function cli(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'src', 'cli', 'main.ts'), ...args], {
    cwd: REPO_ROOT,
    encoding: 'utf8',
    env: { ...process.env, ARCFACE_BACKEND: 'wasm' },
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('fr_feature.onnx: 112x112 NCHW input, 512-d output, normalisation outside the graph, fixed batch 1', { skip }, () => {
  assert.equal(model.inputSize, 112);
  assert.equal(model.embeddingSize, 512);
  assert.equal(model.rawInput, false);
  assert.equal(model.maxBatch, 1);
});

test('same face: mirror and shifted/rescaled copy >= 0.5; another person <= 0.3', { skip: skip || (!OTHER && 'needs @vladmandic/face-api demo/sample1.jpg') }, async () => {
  const a = await embedFile(model, ASTRONAUT!);
  const cos = async (f: string): Promise<number> => cosineSimilarity(a.embedding, (await embedFile(model, f)).embedding);
  const mirror = await cos(MIRROR);
  const shifted = await cos(SHIFTED);
  const other = await cos(OTHER!);
  assert.ok(mirror >= 0.5, `mirror: ${mirror}`);
  assert.ok(shifted >= 0.5, `shifted: ${shifted}`);
  assert.ok(other <= 0.3, `other person: ${other}`);
  // Alignment matters: the unaligned whole image is a different input altogether.
  const plain = cosineSimilarity(a.embedding, (await embedFile(model, ASTRONAUT!, { noAlign: true })).embedding);
  assert.ok(plain < mirror - 0.3, `unaligned ${plain} vs aligned mirror ${mirror}`);
});

test('arcface compare: JSON verdict on stdout, a readable line on stderr', { skip }, () => {
  const r = cli('compare', ASTRONAUT!, MIRROR, '--model', FR!, '--threshold', '0.5');
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.equal(out.verdict, 'same');
  assert.equal(out.threshold, 0.5);
  assert.ok(out.cosine >= 0.5 && out.cosine <= 1, String(out.cosine));
  assert.match(r.stderr, /cosine 0\.\d{4} -> same person \(threshold 0\.5, given\)/);
});

test('arcface embed: JSON lines with landmarks and score, a skipped line for a face-less image; saved embeddings compare', { skip }, async () => {
  const blank = path.join(tmp, 'blank.png');
  await sharp({ create: { width: 200, height: 160, channels: 3, background: { r: 90, g: 120, b: 200 } } }).png().toFile(blank);
  const r = cli('embed', ASTRONAUT!, blank, MIRROR, '--model', FR!, '--skip-missing', '--batch', '2');
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(lines.map((l) => l.file), [ASTRONAUT, blank, MIRROR]);
  assert.equal(lines[1].skipped, 'no face found');
  assert.equal(lines[0].embedding.length, 512);
  const norm = Math.hypot(...(lines[0].embedding as number[]));
  assert.ok(Math.abs(norm - 1) < 1e-5, `norm ${norm}`);
  assert.ok(Math.abs(lines[0].landmarks[0][0] - 202.34) < 4 && lines[0].score > 0.9);
  // In-process embedding of the same image agrees with the CLI's line.
  const direct = await embedFile(model, ASTRONAUT!);
  assert.ok(cosineSimilarity(direct.embedding, lines[0].embedding) > 0.99999);

  fs.writeFileSync(path.join(tmp, 'a.jsonl'), `${JSON.stringify(lines[0])}\n`);
  fs.writeFileSync(path.join(tmp, 'm.json'), JSON.stringify(lines[2]));
  const c = cli('compare', path.join(tmp, 'a.jsonl'), path.join(tmp, 'm.json'));
  assert.equal(c.code, 0, c.stderr);
  assert.ok(Math.abs(JSON.parse(c.stdout).cosine - cosineSimilarity(lines[0].embedding, lines[2].embedding)) < 1e-6);

  // The same face without --skip-missing is an error naming the file.
  const e = cli('embed', blank, '--model', FR!);
  assert.equal(e.code, 1);
  assert.match(e.stderr, new RegExp(`error: ${blank.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: no face found`));
});

test('bad input: non-image file, embeddings of different sizes, a JSON that is no model', { skip }, () => {
  const notImage = path.join(tmp, 'notes.jpg');
  fs.writeFileSync(notImage, 'this is not a picture\n');
  const r = cli('compare', notImage, MIRROR, '--model', FR!);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /notes\.jpg: not a readable image/);

  fs.writeFileSync(path.join(tmp, 'e512.json'), JSON.stringify({ file: 'x', embedding: Array(512).fill(0.01) }));
  fs.writeFileSync(path.join(tmp, 'e128.json'), JSON.stringify({ file: 'y', embedding: Array(128).fill(0.01) }));
  const m = cli('compare', path.join(tmp, 'e512.json'), path.join(tmp, 'e128.json'));
  assert.equal(m.code, 1);
  assert.match(m.stderr, /embedding sizes differ: .*e512\.json has 512, .*e128\.json has 128/);

  const bad = cli('embed', MIRROR, '--model', path.join(tmp, 'e512.json'));
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /e512\.json.*(tfjs layers model|modelTopology)/);
});
