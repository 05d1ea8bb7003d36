// `arcface align` on real photos (the astronaut fixture and face-api's demo group photos shipped in its npm
// package): the crop equals the reference crop, the five points the fixture's, the largest face of a group
// photo is kept and the photo reported, crops of the right size pass through, folders are kept, and the
// worker-thread path writes the same crops as the in-process one.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { initBackend } from '../src/backend/select.ts';
import { alignPhotos } from '../src/infer/align-photos.ts';
import { RecordIOSource } from '../src/data/rec-source.ts';
import { decodeImage } from '../src/data/decode.ts';
import { readImage } from '../src/infer/image.ts';
import { REPO_ROOT, sharedFixture } from './helpers/fixtures.ts';
import { packageFile } from './helpers/third-party-model.ts';

const ASTRONAUT = sharedFixture('faces', 'astronaut.png');
const CROP = sharedFixture('faces', 'astronaut_aligned_112.png');
const FIVE = sharedFixture('faces', 'astronaut_5pt.json');
const GROUP = packageFile('@vladmandic/face-api', 'demo/sample1.jpg');
const skip = !ASTRONAUT || !CROP || !FIVE || !GROUP ? 'needs ../shared/fixtures/faces and @vladmandic/face-api demo photos' : false;

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'arcface-align-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
const input = path.join(tmp, 'photos');

async function meanAbsDiff(a: string, b: string): Promise<number> {
  const [x, y] = [await readImage(a), await readImage(b)];
  assert.equal(x.data.length, y.data.length);
  let s = 0;
  for (let i = 0; i < x.data.length; i++) s += Math.abs(x.data[i]! - y.data[i]!);
  return s / x.data.length;
}

test('alignPhotos: crop and landmarks as the reference, largest face of a group, pass-through, no face, folders kept', { skip }, async () => {
  await initBackend('wasm', { quiet: true });
  fs.mkdirSync(path.join(input, 'eileen'), { recursive: true });
  fs.mkdirSync(path.join(input, 'group'));
  fs.mkdirSync(path.join(input, 'crops'));
  fs.copyFileSync(ASTRONAUT!, path.join(input, 'eileen', 'portrait.png'));
  fs.copyFileSync(GROUP!, path.join(input, 'group', 'party.jpg'));
  fs.copyFileSync(CROP!, path.join(input, 'crops', 'done.png'));
  await sharp({ create: { width: 320, height: 240, channels: 3, background: { r: 70, g: 110, b: 180 } } }).png().toFile(path.join(input, 'group', 'sky.png'));
  const out = path.join(tmp, 'aligned');
  const report = await alignPhotos([input], out, { workers: 1 });
  assert.deepEqual(
    [report.photos, report.aligned, report.passthrough, report.noFace, report.multipleFaces],
    [4, 2, 1, 1, 1],
  );
  assert.deepEqual(fs.readdirSync(out).sort(), ['crops', 'eileen', 'group']);
  // The crop is the reference's norm_crop of the same photo; the five points the fixture's.
  assert.ok((await meanAbsDiff(path.join(out, 'eileen', 'portrait.png'), CROP!)) <= 2);
  const want = JSON.parse(fs.readFileSync(FIVE!, 'utf8')).landmarks_5pt as [number, number][];
  const portrait = report.records.find((r) => r.file.endsWith('portrait.png'))!;
  assert.deepEqual([portrait.status, portrait.faces, portrait.notes], ['aligned', 1, []]);
  const kept = portrait.kept![0]!;
  kept.landmarks.forEach(([x, y], i) => assert.ok(Math.hypot(x - want[i]![0], y - want[i]![1]) < 1.5, `point ${i}: ${x},${y}`));
  // Group photo: three faces found, the largest kept, reported.
  const party = report.flagged.find((r) => r.file.endsWith('party.jpg'))!;
  assert.equal(party.faces, 3);
  assert.deepEqual(party.notes, ['3 faces, the largest kept']);
  assert.deepEqual(party.outputs, [path.join('group', 'party.jpg')]);
  const meta = await sharp(path.join(out, 'group', 'party.jpg')).metadata();
  assert.deepEqual([meta.width, meta.height, meta.format], [112, 112, 'jpeg']);
  // Already a 112x112 crop: copied byte for byte.
  assert.ok(fs.readFileSync(path.join(out, 'crops', 'done.png')).equals(fs.readFileSync(CROP!)));
  assert.equal(report.flagged.find((r) => r.file.endsWith('sky.png'))!.status, 'no-face');
});

test('arcface align --all-faces with 2 workers: one crop per face, same pixels as in process; bad input exits 1', { skip }, async () => {
  const out = path.join(tmp, 'all');
  const cli = (...args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'src/cli/main.ts'), 'align', ...args], { cwd: REPO_ROOT, encoding: 'utf8' });
  const r = cli(path.join(input, 'group'), path.join(input, 'eileen'), '--out', out, '--all-faces', '--workers', '2', '--backend', 'wasm');
  assert.equal(r.status, 0, r.stderr);
  const summary = JSON.parse(r.stdout);
  assert.deepEqual([summary.photos, summary.aligned, summary.noFace], [3, 2, 1]);
  assert.deepEqual(fs.readdirSync(out).sort(), ['align-report.json', 'party_0.jpg', 'party_1.jpg', 'party_2.jpg', 'portrait_0.png']);
  assert.ok((await meanAbsDiff(path.join(out, 'portrait_0.png'), path.join(tmp, 'aligned', 'eileen', 'portrait.png'))) === 0);
  assert.match(r.stderr, /party\.jpg: 3 faces, all kept/);
  const bad = cli(path.join(tmp, 'nothing-here'), '--out', out);
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /^arcface: error: .*nothing-here: no such file or folder$/m);
});

test('pack --align: the pack holds the aligned crops (not thumbnails of whole photos), the report beside it', { skip }, async () => {
  const out = path.join(tmp, 'pack');
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'src/cli/main.ts'), 'pack', input, '--out', out, '--align', '--workers', '1', '--backend', 'wasm'], { cwd: REPO_ROOT, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  // sky.png has no face: its identity folder keeps party.jpg only. Three identities, three crops.
  assert.deepEqual([JSON.parse(r.stdout).identities, JSON.parse(r.stdout).images], [3, 3]);
  assert.equal(JSON.parse(fs.readFileSync(path.join(out, 'align-report.json'), 'utf8')).noFace, 1);
  const src = RecordIOSource.open(out);
  try {
    // Identities sort by name: crops, eileen, group. The portrait's record is the reference crop, re-encoded as JPEG.
    const item = src.item(1);
    const img = await decodeImage(item.bytes, 'record 1');
    const want = await readImage(CROP!);
    let s = 0;
    for (let i = 0; i < img.data.length; i++) s += Math.abs(img.data[i]! - want.data[i]!);
    assert.ok(s / img.data.length < 4, `mean |d| ${s / img.data.length}`);
    assert.equal(src.length, 3);
  } finally {
    src.close();
  }
});
