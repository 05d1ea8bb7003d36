// Verification .bin sets: the three fixture pickles (py2 protocol 2, py3 protocol 4, numpy.bool_ flags at
// protocol 5) give the expected images and issame; write -> read round trip in the py2 format; clear
// errors for pickles that are not a .bin.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { binSource, decodeBinImages, parseBin, readBin, serialiseBin, writeBin } from '../src/data/bin-set.ts';
import { encodeJpeg } from '../src/data/decode.ts';
import { pickle, PyTuple } from '../src/formats/pickle.ts';
import { sharedFixture, skipUnlessFixture } from './helpers/fixtures.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'arcface-bin-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

for (const name of ['pairs_py2.bin', 'pairs_py3.bin', 'pairs_numpy_bool.bin']) {
  test(`${name}: issame and sha256 of every image`, { skip: skipUnlessFixture(name) }, () => {
    const exp = JSON.parse(fs.readFileSync(sharedFixture('pairs_expected.json')!, 'utf8')) as { num_pairs: number; issame: boolean[]; jpeg_sha256: string[] };
    const set = readBin(sharedFixture(name)!);
    assert.equal(set.issame.length, exp.num_pairs);
    assert.deepEqual(set.issame, exp.issame);
    assert.deepEqual(set.images.map(sha), exp.jpeg_sha256);
  });
}

test('writeBin -> readBin round trip, in the Python 2 protocol-2 format of the published files', { skip: skipUnlessFixture('pairs_py3.bin') }, () => {
  const set = readBin(sharedFixture('pairs_py3.bin')!);
  const out = path.join(tmp, 'copy.bin');
  writeBin(out, set);
  const back = readBin(out);
  assert.deepEqual(back.issame, set.issame);
  assert.deepEqual(back.images.map(sha), set.images.map(sha));
  const raw = fs.readFileSync(out);
  assert.deepEqual([raw[0], raw[1]], [0x80, 2]); // PROTO 2
  assert.equal(raw[2], 0x5d); // EMPTY_LIST... inside the outer tuple
  // Images are py2 str (BINSTRING 'T' for >= 256 bytes) so Python 2 and pickle.load(encoding='bytes') read them.
  assert.equal(raw.indexOf(Buffer.from([0x54])), raw.indexOf(Buffer.from([0x54, ...new Uint8Array(new Uint32Array([set.images[0].length]).buffer)])));
  assert.ok(!raw.includes(Buffer.from([0x42, ...new Uint8Array(new Uint32Array([set.images[0].length]).buffer)]))); // no BINBYTES
  assert.ok(!fs.readdirSync(tmp).some((f) => f.includes('partial')));
});

test('small sets round trip (SHORT_BINSTRING images, one pair)', () => {
  const set = { images: [new Uint8Array([1, 2, 3]), new Uint8Array(300).fill(7)], issame: [true] };
  const back = parseBin(serialiseBin(set), 'mem');
  assert.deepEqual(back.issame, [true]);
  assert.deepEqual([...back.images[0]], [1, 2, 3]);
  assert.equal(back.images[1].length, 300);
});

test('bad input: a pickle that is not a verification set, a truncated file, mismatched counts', () => {
  const f = path.join(tmp, 'notbin.bin');
  fs.writeFileSync(f, pickle(new Map([['a', 1]]), { protocol: 2 }));
  assert.throws(() => readBin(f), (e: Error) => e.name === 'ArcfaceError' && e.message.includes(f) && /not a verification \.bin/.test(e.message));
  fs.writeFileSync(f, pickle(new PyTuple([[new Uint8Array([1])], [true]]), { protocol: 2 }));
  assert.throws(() => readBin(f), /1 images for 1 pairs/);
  fs.writeFileSync(f, pickle(new PyTuple([['text', 'text'], [true]]), { protocol: 2 }));
  assert.throws(() => readBin(f), /image 0 is string, expected bytes/);
  fs.writeFileSync(f, pickle(new PyTuple([[new Uint8Array([1]), new Uint8Array([2])], ['yes']]), { protocol: 2 }));
  assert.throws(() => readBin(f), /issame\[0\] is string/);
  const good = serialiseBin({ images: [new Uint8Array(10), new Uint8Array(10)], issame: [false] });
  fs.writeFileSync(f, good.subarray(0, good.length - 5));
  assert.throws(() => readBin(f), (e: Error) => e.message.includes(f) && /cannot unpickle/.test(e.message));
  fs.writeFileSync(f, 'plain text');
  assert.throws(() => readBin(f), (e: Error) => e.message.includes(f));
  assert.throws(() => readBin(path.join(tmp, 'missing.bin')), /cannot read.*missing\.bin/);
});

test('decodeBinImages resizes images that are not the input size, and counts them', async () => {
  const mk = async (w: number, h: number, v: number): Promise<Uint8Array> => encodeJpeg({ data: new Uint8Array(w * h * 3).fill(v), width: w, height: h });
  const set = { images: [await mk(112, 112, 40), await mk(150, 150, 200)], issame: [true] };
  const { images, resized } = await decodeBinImages(set, 'mem.bin', 112);
  assert.equal(resized, 1);
  assert.deepEqual(images.map((i) => [i.width, i.height]), [[112, 112], [112, 112]]);
  // Flat colours stay flat through JPEG and bicubic resize (within JPEG rounding).
  assert.ok(Math.abs(images[0].data[5000] - 40) <= 2);
  assert.ok(Math.abs(images[1].data[5000] - 200) <= 2);
  const src = binSource(set, 'mem.bin');
  assert.deepEqual([src.length, src.label(0), src.label(1)], [2, 0, 0]);
});
