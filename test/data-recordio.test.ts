// RecordIO: the insightface and plain-key fixture packs (labels, class count, sha256 of every image),
// writer/reader round trips (split records, shuffled .idx, no .idx) and clear errors on damaged files.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { packRecord, unpackRecord } from '../src/data/irheader.ts';
import { PackWriter } from '../src/data/pack-writer.ts';
import { RecordIOSource } from '../src/data/rec-source.ts';
import { iterateRecords, readIdx, RecordIOReader, RecordIOWriter, scanRecordOffsets, writeIdx } from '../src/data/recordio.ts';
import { sharedFixture, skipUnlessFixture } from './helpers/fixtures.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'arcface-rec-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

interface Expected {
  num_images: number;
  num_classes: number;
  labels_in_key_order: number[];
  first_image_key: number;
  jpeg_sha256: string[];
}

for (const [name, layout] of [
  ['rec_insightface', 'insightface'],
  ['rec_plain_keys', 'plain'],
] as const) {
  test(`${name}: labels, classes, first key and sha256 of every image`, { skip: skipUnlessFixture(name) }, () => {
    const dir = sharedFixture(name)!;
    const exp = JSON.parse(fs.readFileSync(path.join(dir, 'expected.json'), 'utf8')) as Expected;
    const src = RecordIOSource.open(dir);
    assert.equal(src.layout, layout);
    assert.equal(src.length, exp.num_images);
    assert.equal(src.numClasses, exp.num_classes);
    assert.equal(src.keys[0], exp.first_image_key);
    for (let i = 0; i < src.length; i++) {
      const { label, bytes } = src.item(i);
      assert.equal(label, exp.labels_in_key_order[i], `label of image ${i}`);
      assert.equal(src.label(i), label, `label(i) of image ${i}`);
      assert.equal(sha(bytes), exp.jpeg_sha256[i], `sha256 of image ${i}`);
    }
    src.close();
  });
}

test('rec_plain_keys: record 0 with an array label and an image is an image, not a meta record', { skip: skipUnlessFixture('rec_plain_keys') }, () => {
  const src = RecordIOSource.open(sharedFixture('rec_plain_keys')!);
  assert.equal(src.meta, null);
  const r0 = unpackRecord(new RecordIOReader(src.path).readAt(0).payload, 'r0');
  assert.equal(r0.flag, 2); // what fools insightface's MXFaceDataset
  assert.ok(r0.image.length > 1000);
  src.close();
});

test('rec_insightface: meta record 0 and identity records are what the spec says', { skip: skipUnlessFixture('rec_insightface') }, () => {
  const dir = sharedFixture('rec_insightface')!;
  const src = RecordIOSource.open(dir);
  assert.deepEqual(src.meta, { a: 73, b: 85 });
  const reader = new RecordIOReader(path.join(dir, 'train.rec'));
  const idx = new Map(readIdx(path.join(dir, 'train.idx')).map((e) => [e.key, e.offset]));
  const id5 = unpackRecord(reader.readAt(idx.get(73 + 5)!).payload, 'id5');
  assert.deepEqual(Array.from(id5.label as Float32Array), [31, 37]);
  assert.equal(id5.image.length, 0);
  reader.close();
  src.close();
});

test('shuffled .idx lines and a missing .idx read the same images', { skip: skipUnlessFixture('rec_insightface') }, () => {
  const dir = sharedFixture('rec_insightface')!;
  const ref = RecordIOSource.open(dir);
  const d = path.join(tmp, 'shuffled');
  fs.mkdirSync(d);
  fs.copyFileSync(path.join(dir, 'train.rec'), path.join(d, 'train.rec'));
  const entries = readIdx(path.join(dir, 'train.idx'));
  const shuffled = entries.map((e, i) => ({ e, k: (i * 37) % entries.length })).sort((x, y) => x.k - y.k).map((x) => x.e);
  assert.notDeepEqual(shuffled, entries);
  writeIdx(path.join(d, 'train.idx'), shuffled);
  const sh = RecordIOSource.open(d);
  const noIdx = RecordIOSource.open(d, { noIdx: true });
  assert.equal(sh.layout, 'insightface');
  assert.equal(noIdx.layout, 'insightface'); // meta record found by walking the file
  for (const s of [sh, noIdx]) {
    assert.equal(s.length, ref.length);
    for (let i = 0; i < ref.length; i++) {
      assert.equal(s.keys[i], ref.keys[i]);
      assert.equal(sha(s.bytes(i)), sha(ref.bytes(i)));
      assert.equal(s.label(i), ref.label(i));
    }
  }
  assert.deepEqual(scanRecordOffsets(path.join(dir, 'train.rec')), [...entries].sort((a, b) => a.offset - b.offset).map((e) => e.offset));
});

test('a payload holding the magic word at aligned offsets is written in parts (dmlc layout) and read back whole', () => {
  const file = path.join(tmp, 'magic.rec');
  const magic = [0x0a, 0x23, 0xd7, 0xce];
  // magic at 0 (aligned), 8 (aligned), 13 (unaligned: must stay inside a part), and length 22 (needs padding)
  const payload = new Uint8Array(22).map((_, i) => 100 + i);
  payload.set(magic, 0);
  payload.set(magic, 8);
  payload.set(magic, 13);
  const plain = new Uint8Array([1, 2, 3, 4, 5]);
  const w = new RecordIOWriter(file);
  const o1 = w.write(payload);
  const o2 = w.write(plain);
  w.close();
  assert.equal(w.splitRecords, 1);
  // Independent expectation of dmlc's bytes: [hdr cflag1 len0] [hdr cflag2 len4: bytes 4..8] [hdr cflag3 len10: bytes 12..22 + 2 pad]
  const hdr = (cflag: number, len: number): number[] => {
    const v = new DataView(new ArrayBuffer(8));
    v.setUint32(0, 0xced7230a, true);
    v.setUint32(4, (cflag << 29) | len, true);
    return [...new Uint8Array(v.buffer)];
  };
  const expected = [...hdr(1, 0), ...hdr(2, 4), ...payload.slice(4, 8), ...hdr(3, 10), ...payload.slice(12), 0, 0, ...hdr(0, 5), ...plain, 0, 0, 0];
  assert.deepEqual([...fs.readFileSync(file)], expected);
  assert.equal(o1, 0);
  assert.equal(o2, 40);
  const r = new RecordIOReader(file);
  assert.deepEqual([...r.readAt(o1).payload], [...payload]);
  assert.deepEqual([...r.readAt(o2).payload], [...plain]);
  r.close();
  assert.deepEqual(scanRecordOffsets(file), [0, 40]);
});

test('IRHeader pack/unpack: scalar and array labels, ids', () => {
  const img = new Uint8Array([9, 8, 7]);
  const a = unpackRecord(packRecord({ label: 3, id: 17 }, img), 'a');
  assert.deepEqual([a.flag, a.label, a.id, a.id2, [...a.image]], [0, 3, 17, 0, [9, 8, 7]]);
  const b = unpackRecord(packRecord({ label: [4, 2.5], id: 1, id2: 5 }, img), 'b');
  assert.equal(b.flag, 2);
  assert.deepEqual([...(b.label as Float32Array)], [4, 2.5]);
  assert.deepEqual([b.id, b.id2, [...b.image]], [1, 5, [9, 8, 7]]);
  // Byte layout <IfQQ: flag 2, label field 0, then the two floats.
  const raw = packRecord({ label: [4, 2.5] });
  assert.deepEqual([...raw.subarray(0, 8)], [2, 0, 0, 0, 0, 0, 0, 0]);
});

test('PackWriter: insightface layout with meta + identity records, plain layout, both read back', () => {
  const imgs = Array.from({ length: 7 }, (_, i) => new Uint8Array([0xff, 0xd8, 0xff, i, 0x0a, 0x23, 0xd7, 0xce]));
  const labels = [0, 0, 1, 1, 1, 3, 3]; // class 2 has no image: it keeps an empty identity record
  for (const layout of ['insightface', 'plain'] as const) {
    const d = path.join(tmp, `pw-${layout}`);
    const w = new PackWriter(d, layout);
    imgs.forEach((b, i) => w.add(labels[i], b));
    const s = w.finish({ height: 112, width: 112 });
    assert.equal(s.identities, 4);
    assert.equal(s.splitRecords, 7); // the magic word sits at offset 28 of each payload (24-byte header + 4)
    assert.equal(fs.readFileSync(path.join(d, 'property'), 'utf8'), '4,112,112');
    assert.deepEqual(fs.readdirSync(d).sort(), ['property', 'train.idx', 'train.rec']);
    const src = RecordIOSource.open(d);
    assert.equal(src.layout, layout);
    assert.equal(src.numClasses, 4);
    assert.deepEqual(Array.from({ length: src.length }, (_, i) => src.label(i)), labels);
    imgs.forEach((b, i) => assert.deepEqual([...src.bytes(i)], [...b]));
    if (layout === 'insightface') {
      assert.deepEqual(src.meta, { a: 8, b: 12 });
      const r = new RecordIOReader(path.join(d, 'train.rec'));
      const idx = new Map(readIdx(path.join(d, 'train.idx')).map((e) => [e.key, e.offset]));
      const ranges = [8, 9, 10, 11].map((k) => Array.from(unpackRecord(r.readAt(idx.get(k)!).payload, 'id').label as Float32Array));
      assert.deepEqual(ranges, [[1, 3], [3, 6], [6, 6], [6, 8]]);
      // insightface's RecBuilder writes record 0 last
      assert.equal(readIdx(path.join(d, 'train.idx')).at(-1)!.key, 0);
      r.close();
    } else {
      assert.deepEqual([...src.keys], [0, 1, 2, 3, 4, 5, 6]);
    }
    src.close();
  }
});

test('PackWriter.abort leaves no file behind', () => {
  const d = path.join(tmp, 'aborted');
  const w = new PackWriter(d);
  w.add(0, new Uint8Array([1, 2, 3]));
  w.abort();
  assert.deepEqual(fs.readdirSync(d), []);
});

function damagedCopy(name: string, edit: (dir: string) => void): string {
  const src = sharedFixture('rec_insightface')!;
  const d = path.join(tmp, name);
  fs.mkdirSync(d);
  for (const f of ['train.rec', 'train.idx', 'property']) fs.copyFileSync(path.join(src, f), path.join(d, f));
  edit(d);
  return d;
}

test('bad input: wrong magic names the file, key and byte offset', { skip: skipUnlessFixture('rec_insightface') }, () => {
  const d = damagedCopy('badmagic', (dir) => {
    const f = path.join(dir, 'train.rec');
    const b = fs.readFileSync(f);
    const off = readIdx(path.join(dir, 'train.idx')).find((e) => e.key === 5)!.offset;
    b[off] ^= 0xff;
    fs.writeFileSync(f, b);
  });
  const src = RecordIOSource.open(d);
  const i = [...src.keys].indexOf(5);
  assert.throws(() => src.item(i), (e: Error) => e.name === 'RecordIOError' && /train\.rec/.test(e.message) && /key 5/.test(e.message) && /byte offset \d+/.test(e.message) && /wrong magic/.test(e.message));
  src.close();
});

test('bad input: a truncated record and an .idx offset past the end', { skip: skipUnlessFixture('rec_insightface') }, () => {
  const d = damagedCopy('truncated', (dir) => {
    const f = path.join(dir, 'train.rec');
    const entries = readIdx(path.join(dir, 'train.idx'));
    const off = entries.find((e) => e.key === 72)!.offset;
    fs.truncateSync(f, off + 100); // records 73.. and 0 are gone; record 72 is cut
    // keep only image keys so the .idx offsets stay inside the file, but record 0 now is past the end
  });
  assert.throws(() => RecordIOSource.open(d), (e: Error) => /train\.idx/.test(e.message) && /key \d+/.test(e.message) && /past the end/.test(e.message));
  // Remove the lines that point past the end: the meta record goes too, so every remaining key is an image.
  const idxFile = path.join(d, 'train.idx');
  const size = fs.statSync(path.join(d, 'train.rec')).size;
  writeIdx(idxFile, readIdx(idxFile).filter((e) => e.offset < size && e.key !== 0));
  const src = RecordIOSource.open(d);
  const i = [...src.keys].indexOf(72);
  assert.throws(() => src.item(i), (e: Error) => /key 72/.test(e.message) && /truncated record/.test(e.message) && /byte offset/.test(e.message));
  src.close();
  // Walking the file without .idx reports the truncation too.
  assert.throws(() => scanRecordOffsets(path.join(d, 'train.rec')), /truncated/);
});

test('bad input: malformed .idx line and a .rec that is not RecordIO', () => {
  const d = path.join(tmp, 'badidx');
  fs.mkdirSync(d);
  fs.writeFileSync(path.join(d, 'train.rec'), 'hello, this is not a record file');
  fs.writeFileSync(path.join(d, 'train.idx'), '0\t0\nnot a line\n');
  assert.throws(() => RecordIOSource.open(d), (e: Error) => /train\.idx/.test(e.message) && /line 2/.test(e.message));
  fs.writeFileSync(path.join(d, 'train.idx'), '0\t0\n3\t0\n3\t0\n');
  assert.throws(() => RecordIOSource.open(d), (e: Error) => /train\.idx: key 3 appears twice/.test(e.message));
  fs.writeFileSync(path.join(d, 'train.idx'), '0\t0\n');
  assert.throws(() => RecordIOSource.open(d), (e: Error) => /train\.rec/.test(e.message) && /wrong magic/.test(e.message) && /byte offset 0/.test(e.message));
});

test('sparse keys (no dense table), sequential streaming without .idx', () => {
  const d = path.join(tmp, 'sparse');
  fs.mkdirSync(d);
  const w = new RecordIOWriter(path.join(d, 'train.rec'));
  const keys = [1_000_000_007, 5, 7];
  const entries = keys.map((key, i) => ({ key, offset: w.write(packRecord({ label: i, id: key }, new Uint8Array([i, i, i]))) }));
  w.close();
  writeIdx(path.join(d, 'train.idx'), entries);
  const src = RecordIOSource.open(d);
  assert.equal(src.layout, 'plain');
  assert.deepEqual([...src.keys], [5, 7, 1_000_000_007]);
  assert.deepEqual([0, 1, 2].map((i) => src.label(i)), [1, 2, 0]);
  assert.equal(src.numClasses, 3); // no property file: max label + 1
  src.close();
  const streamed = [...iterateRecords(path.join(d, 'train.rec'))].map((r) => unpackRecord(r.payload, 'r'));
  assert.deepEqual(streamed.map((r) => r.id), keys);
  assert.deepEqual(streamed.map((r) => [...r.image]), [[0, 0, 0], [1, 1, 1], [2, 2, 2]]);
});
