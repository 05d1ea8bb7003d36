// `arcface pack`, `pack-bin`, `inspect` run as a user runs them: folder -> pack -> the reader gives the same
// images and labels; pairs lists (LFW and simple) -> .bin; an interrupted pack leaves nothing that looks
// complete; bad input exits non-zero with the file named.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { readBin } from '../src/data/bin-set.ts';
import { decodeImage } from '../src/data/decode.ts';
import { packFolder } from '../src/data/pack-folder.ts';
import { RecordIOSource } from '../src/data/rec-source.ts';
import { pickle } from '../src/formats/pickle.ts';
import { REPO_ROOT } from './helpers/fixtures.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'arcface-cli-data-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

function arcface(...args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'src/cli/main.ts'), ...args], { cwd: REPO_ROOT, encoding: 'utf8' });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

async function jpeg(file: string, v: number, size = 112): Promise<void> {
  const px = new Uint8Array(size * size * 3).map((_, i) => (v + ((i * 13) % 50)) & 255);
  await sharp(px, { raw: { width: size, height: size, channels: 3 } }).jpeg({ quality: 95 }).toFile(file);
}

/** photos/<who>/<n>.jpg: 3 identities; one PNG of another size, one corrupt JPEG, one text file. */
async function makePhotos(root: string): Promise<void> {
  const people = { carol: 2, alice: 3, bob: 2 } as Record<string, number>;
  for (const [who, n] of Object.entries(people)) {
    fs.mkdirSync(path.join(root, who), { recursive: true });
    for (let i = 0; i < n; i++) await jpeg(path.join(root, who, `${i}.jpg`), who.length * 30 + i * 7);
  }
  await sharp(new Uint8Array(150 * 130 * 3).fill(90), { raw: { width: 150, height: 130, channels: 3 } }).png().toFile(path.join(root, 'bob', 'x.png'));
  fs.writeFileSync(path.join(root, 'alice', 'broken.jpg'), fs.readFileSync(path.join(root, 'alice', '0.jpg')).subarray(0, 300));
  fs.writeFileSync(path.join(root, 'carol', 'readme.txt'), 'hello');
}

test('pack: folder -> train.rec/.idx/property; the reader gives the same images and labels; inspect agrees', async () => {
  const photos = path.join(tmp, 'photos');
  await makePhotos(photos);
  const out = path.join(tmp, 'pack');
  const r = arcface('pack', photos, '--out', out);
  assert.equal(r.code, 0, r.stderr);
  const summary = JSON.parse(r.stdout);
  assert.deepEqual([summary.identities, summary.images, summary.skipped, summary.reencoded], [3, 8, 2, 1]);
  assert.match(r.stderr, /skipped .*broken\.jpg/);
  assert.match(r.stderr, /packed 8 images of 3 identities/);
  assert.deepEqual(fs.readdirSync(out).sort(), ['property', 'train.idx', 'train.rec']);
  const src = RecordIOSource.open(out);
  assert.equal(src.layout, 'insightface');
  assert.equal(src.numClasses, 3);
  // alice (0): 0.jpg 1.jpg 2.jpg; bob (1): 0.jpg 1.jpg x.png; carol (2): 0.jpg 1.jpg
  const files = ['alice/0.jpg', 'alice/1.jpg', 'alice/2.jpg', 'bob/0.jpg', 'bob/1.jpg', 'bob/x.png', 'carol/0.jpg', 'carol/1.jpg'];
  assert.deepEqual(Array.from({ length: src.length }, (_, i) => src.label(i)), [0, 0, 0, 1, 1, 1, 2, 2]);
  for (let i = 0; i < files.length; i++) {
    const orig = fs.readFileSync(path.join(photos, files[i]));
    if (files[i].endsWith('.jpg')) {
      assert.ok(Buffer.from(src.bytes(i)).equals(orig), `${files[i]} stored byte for byte`);
    } else {
      const img = await decodeImage(src.bytes(i), 'packed png');
      assert.deepEqual([img.width, img.height], [112, 112]); // 150x130 -> shorter side 112, centre crop
      assert.ok(Math.abs(img.data[3000] - 90) <= 2);
    }
  }
  src.close();
  const again = arcface('pack', photos, '--out', out);
  assert.notEqual(again.code, 0);
  assert.match(again.stderr, /already exists \(--force replaces it\)/);

  const ins = arcface('inspect', out, '--json', '--verify');
  assert.equal(ins.code, 0, ins.stderr);
  const s = JSON.parse(ins.stdout);
  assert.deepEqual([s.layout, s.images, s.classes, s.corrupt.length, s.sample[0].key, s.sample[0].label], ['insightface', 8, 3, 0, 1, 0]);
  const txt = arcface('inspect', path.join(out, 'train.rec'));
  assert.match(txt.stdout, /images: 8/);
  assert.match(txt.stdout, /classes: 3/);
});

test('an interrupted pack leaves no file that looks complete', async () => {
  const photos = path.join(tmp, 'photos2');
  fs.mkdirSync(path.join(photos, 'a'), { recursive: true });
  for (let i = 0; i < 6; i++) await jpeg(path.join(photos, 'a', `${i}.jpg`), i * 20);
  const out = path.join(tmp, 'pack2');
  const ctl = new AbortController();
  await assert.rejects(
    packFolder(photos, { out, signal: ctl.signal, onProgress: (done) => done === 3 && ctl.abort() }),
    /pack interrupted; no output written/,
  );
  assert.deepEqual(fs.readdirSync(out), []);
});

test('pack-bin: LFW pairs.txt and "a b 0|1" lists -> .bin that readBin and inspect read', async () => {
  const lfw = path.join(tmp, 'lfw');
  for (const who of ['Ann_A', 'Bo_B']) {
    fs.mkdirSync(path.join(lfw, who), { recursive: true });
    for (let i = 1; i <= 2; i++) await jpeg(path.join(lfw, who, `${who}_000${i}.jpg`), who.length * 10 + i * 40);
  }
  const pairs = path.join(lfw, 'pairs.txt');
  fs.writeFileSync(pairs, '1\t2\nAnn_A\t1\t2\nBo_B\t1\t2\nAnn_A\t1\tBo_B\t2\nBo_B\t1\tAnn_A\t2\n');
  const out = path.join(tmp, 'lfw.bin');
  const r = arcface('pack-bin', '--pairs', pairs, '--out', out);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout).format, 'lfw');
  const set = readBin(out);
  assert.deepEqual(set.issame, [true, true, false, false]);
  const f = (who: string, n: number): Buffer => fs.readFileSync(path.join(lfw, who, `${who}_000${n}.jpg`));
  const want = [f('Ann_A', 1), f('Ann_A', 2), f('Bo_B', 1), f('Bo_B', 2), f('Ann_A', 1), f('Bo_B', 2), f('Bo_B', 1), f('Ann_A', 2)];
  want.forEach((b, i) => assert.ok(Buffer.from(set.images[i]).equals(b), `image ${i}`));

  const simple = path.join(tmp, 'mine.txt');
  fs.writeFileSync(simple, '# my pairs\nlfw/Ann_A/Ann_A_0001.jpg lfw/Ann_A/Ann_A_0002.jpg 1\nlfw/Ann_A/Ann_A_0001.jpg lfw/Bo_B/Bo_B_0001.jpg 0\n');
  const out2 = path.join(tmp, 'mine.bin');
  assert.equal(arcface('pack-bin', '--pairs', simple, '--out', out2).code, 0);
  const s2 = readBin(out2);
  assert.deepEqual(s2.issame, [true, false]);
  assert.ok(Buffer.from(s2.images[3]).equals(f('Bo_B', 1)));
  const ins = arcface('inspect', out2, '--json');
  assert.deepEqual([JSON.parse(ins.stdout).pairs, JSON.parse(ins.stdout).same], [2, 1]);

  fs.writeFileSync(simple, 'lfw/Ann_A/Ann_A_0001.jpg lfw/Nobody/x.jpg 1\n');
  const bad = arcface('pack-bin', '--pairs', simple, '--out', path.join(tmp, 'bad.bin'));
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /mine\.txt: line 1: cannot read image .*Nobody/);
  assert.ok(!fs.existsSync(path.join(tmp, 'bad.bin')));
});

test('inspect: bad input exits non-zero and names the file', () => {
  const notBin = path.join(tmp, 'dict.bin');
  fs.writeFileSync(notBin, pickle(new Map([['x', 1]])));
  const a = arcface('inspect', notBin);
  assert.equal(a.code, 1);
  assert.match(a.stderr, /dict\.bin: not a verification \.bin/);
  const notRec = path.join(tmp, 'junk.rec');
  fs.writeFileSync(notRec, 'junk junk junk junk');
  const b = arcface('inspect', notRec);
  assert.equal(b.code, 1);
  assert.match(b.stderr, /junk\.rec: byte offset 0: wrong magic/);
  const c = arcface('inspect', path.join(tmp, 'nothing.rec'));
  assert.equal(c.code, 1);
  assert.match(c.stderr, /nothing\.rec: no such file/);
});
