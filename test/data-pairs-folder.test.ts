// Pairs drawn from a labelled folder: every genuine pair within one person, every impostor pair across two,
// none repeated, genuine and impostor alternating (balanced folds), seeded; `pack-bin --from-folder` packs them.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { readBin } from '../src/data/bin-set.ts';
import { pairsFromFolder } from '../src/data/pairs.ts';
import { REPO_ROOT } from './helpers/fixtures.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'arcface-pairs-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
const root = path.join(tmp, 'people');
const counts: Record<string, number> = { ann: 3, bob: 2, cy: 1, dee: 4 };

test('setup: four people with 3, 2, 1 and 4 photos', async () => {
  let k = 0;
  for (const [who, n] of Object.entries(counts)) {
    fs.mkdirSync(path.join(root, who), { recursive: true });
    for (let i = 0; i < n; i++) {
      await sharp({ create: { width: 24, height: 24, channels: 3, background: { r: (k * 37) % 256, g: (k * 91) % 256, b: k++ * 5 } } }).png().toFile(path.join(root, who, `${i}.png`));
    }
  }
});

const who = (f: string) => path.basename(path.dirname(f));

test('pairsFromFolder: all genuine pairs, as many distinct impostors, alternating, seeded', () => {
  const pairs = pairsFromFolder(root, { seed: 3 });
  const genuine = pairs.filter((p) => p.same);
  const impostor = pairs.filter((p) => !p.same);
  // C(3,2) + C(2,2) + 0 + C(4,2) = 3 + 1 + 6.
  assert.equal(genuine.length, 10);
  assert.equal(impostor.length, 10);
  for (const p of genuine) assert.equal(who(p.a), who(p.b));
  for (const p of impostor) assert.notEqual(who(p.a), who(p.b));
  const keys = pairs.map((p) => [p.a, p.b].sort().join('|'));
  assert.equal(new Set(keys).size, pairs.length, 'no pair twice');
  pairs.forEach((p, i) => assert.equal(p.same, i % 2 === 0, `pair ${i} alternates`));
  assert.deepEqual(pairsFromFolder(root, { seed: 3 }), pairs, 'same seed, same pairs');
  assert.notDeepEqual(pairsFromFolder(root, { seed: 4 }).map((p) => p.b), pairs.map((p) => p.b));
  const some = pairsFromFolder(root, { seed: 3, genuine: 4 });
  assert.deepEqual([some.filter((p) => p.same).length, some.filter((p) => !p.same).length], [4, 4]);
});

test('pairsFromFolder: a folder of one person, or of single photos, is a clear error', async () => {
  const one = path.join(tmp, 'one');
  fs.mkdirSync(path.join(one, 'solo'), { recursive: true });
  fs.copyFileSync(path.join(root, 'ann', '0.png'), path.join(one, 'solo', 'a.png'));
  fs.copyFileSync(path.join(root, 'ann', '1.png'), path.join(one, 'solo', 'b.png'));
  assert.throws(() => pairsFromFolder(one), /one: no impostor pairs: the data holds one person/);
  const singles = path.join(tmp, 'singles');
  for (const p of ['x', 'y']) {
    fs.mkdirSync(path.join(singles, p), { recursive: true });
    fs.copyFileSync(path.join(root, 'ann', '0.png'), path.join(singles, p, '0.png'));
  }
  assert.throws(() => pairsFromFolder(singles), /singles: no genuine pairs/);
  assert.throws(() => pairsFromFolder(root, { genuine: 0 }), /positive integer or "all"/);
});

test('pack-bin --from-folder: a .bin of those pairs, images in pair order', () => {
  const out = path.join(tmp, 'people.bin');
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'src/cli/main.ts'), 'pack-bin', '--from-folder', root, '--genuine', '6', '--seed', '9', '--out', out, '--size', '24'], { cwd: REPO_ROOT, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout).pairs, 12);
  const set = readBin(out);
  const pairs = pairsFromFolder(root, { genuine: 6, seed: 9 });
  assert.deepEqual(set.issame, pairs.map((p) => p.same));
  assert.equal(set.images.length, 24);
  const bad = spawnSync(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'src/cli/main.ts'), 'pack-bin', '--from-folder', root, '--pairs', 'x.txt', '--out', out], { cwd: REPO_ROOT, encoding: 'utf8' });
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /mutually exclusive|conflict/i);
});
