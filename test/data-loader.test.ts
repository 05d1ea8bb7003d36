// The training loader: every pixel equals an independent decode (@cwasm/jpeg-turbo's decode()) +
// torchvision's normalisation + the batch's flip; the epoch order is a pure function of (seed, epoch);
// drop_last; resume from (epoch, batch); worker threads give the same bytes as in-thread decoding;
// tf.data view; the corrupt-image policy (fail with the key, or skip and count).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import * as tf from '@tensorflow/tfjs';
import { ImageFolderSource } from '../src/data/folder-source.ts';
import { createEvalLoader, createTrainLoader, type Batch, type DataLoader } from '../src/data/loader.ts';
import { MemorySource } from '../src/data/memory-source.ts';
import { PackWriter } from '../src/data/pack-writer.ts';
import { RecordIOSource } from '../src/data/rec-source.ts';
import { loaderDataset } from '../src/data/tf-dataset.ts';
import { sharedFixture, skipUnlessFixture } from './helpers/fixtures.ts';

const require = createRequire(import.meta.url);
const cwasm = require('@cwasm/jpeg-turbo') as { decode(b: Uint8Array): { data: Uint8ClampedArray; width: number; height: number } };
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'arcface-loader-'));
const FIX = 'rec_insightface';
const open: DataLoader[] = [];
after(async () => {
  for (const l of open) await l.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

async function collect(it: AsyncIterable<Batch>): Promise<Batch[]> {
  const out: Batch[] = [];
  for await (const b of it) out.push(b);
  return out;
}

/** Independent expectation of one image slot: RGBA decode -> RGB, flip, float32 (x/255-0.5)/0.5. */
function expectedSlot(jpeg: Uint8Array, flip: boolean): Float32Array {
  const { data, width, height } = cwasm.decode(jpeg);
  const out = new Float32Array(width * height * 3);
  const f = new Float32Array(1);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const sx = flip ? width - 1 - x : x;
      for (let c = 0; c < 3; c++) {
        f[0] = data[(y * width + sx) * 4 + c] / 255;
        f[0] = (f[0] - 0.5) / 0.5;
        out[(y * width + x) * 3 + c] = f[0];
      }
    }
  }
  return out;
}

test('loader batches equal an independent decode + flip + normalise, with the right labels', { skip: skipUnlessFixture(FIX) }, async () => {
  const src = RecordIOSource.open(sharedFixture(FIX)!);
  const loader = await createTrainLoader({ source: src, batchSize: 16, seed: 7, workers: 0 });
  const batches = await collect(loader.batches(1));
  assert.equal(loader.batchesPerEpoch, 4); // 72 images, drop_last
  assert.equal(batches.length, 4);
  let flips = 0;
  const per = 112 * 112 * 3;
  for (const b of batches) {
    const f = loader.flips(1, b.index, b.size);
    assert.deepEqual([...b.indices], [...loader.permutation(1).subarray(b.index * 16, b.index * 16 + 16)]);
    for (let j = 0; j < b.size; j++) {
      const { label, bytes } = src.item(b.indices[j]);
      assert.equal(b.labels[j], label);
      const exp = expectedSlot(bytes, f[j] === 1);
      const got = b.images.subarray(j * per, (j + 1) * per);
      for (let k = 0; k < per; k++) if (got[k] !== exp[k]) assert.fail(`batch ${b.index} slot ${j} value ${k}: ${got[k]} != ${exp[k]}`);
      flips += f[j];
    }
  }
  assert.ok(flips > 16 && flips < 48, `flipped ${flips} of 64`);
  src.close();
});

test('epoch order: a full permutation, a pure function of (seed, epoch); drop_last and keep-last', { skip: skipUnlessFixture(FIX) }, async () => {
  const src = RecordIOSource.open(sharedFixture(FIX)!);
  const a = await createTrainLoader({ source: src, batchSize: 16, seed: 2048, workers: 0 });
  const b = await createTrainLoader({ source: src, batchSize: 16, seed: 2048, workers: 0 });
  const c = await createTrainLoader({ source: src, batchSize: 16, seed: 2049, workers: 0 });
  assert.deepEqual([...a.permutation(3)], [...b.permutation(3)]);
  assert.notDeepEqual([...a.permutation(3)], [...a.permutation(4)]);
  assert.notDeepEqual([...a.permutation(3)], [...c.permutation(3)]);
  assert.deepEqual([...a.permutation(3)].sort((x, y) => x - y), Array.from({ length: 72 }, (_, i) => i));
  assert.deepEqual([...a.flips(3, 2, 16)], [...b.flips(3, 2, 16)]);
  const keep = await createTrainLoader({ source: src, batchSize: 16, workers: 0, dropLast: false });
  const kb = await collect(keep.batches(0));
  assert.deepEqual(kb.map((x) => x.size), [16, 16, 16, 16, 8]);
  assert.deepEqual(kb.flatMap((x) => [...x.indices]).sort((x, y) => x - y), Array.from({ length: 72 }, (_, i) => i));
  const ev = await createEvalLoader({ source: src, batchSize: 50, workers: 0 });
  const eb = await collect(ev.batches(0));
  assert.deepEqual(eb.flatMap((x) => [...x.indices]), Array.from({ length: 72 }, (_, i) => i));
  assert.ok(eb.every((x) => ev.flips(0, x.index, x.size).every((f) => f === 0)));
  await assert.rejects(createTrainLoader({ source: src, batchSize: 100, workers: 0 }), /72 images, fewer than one batch of 100/);
  await assert.rejects(createTrainLoader({ source: src, batchSize: 0, workers: 0 }), /batch size must be an integer >= 1/);
  src.close();
});

test('worker threads give bit-identical batches; resume from (epoch, batch); tf.data view; early stop', { skip: skipUnlessFixture(FIX) }, async () => {
  const src = RecordIOSource.open(sharedFixture(FIX)!);
  const ref = await createTrainLoader({ source: src, batchSize: 16, seed: 3, workers: 0 });
  const pooled = await createTrainLoader({ source: src, batchSize: 16, seed: 3, workers: 2, prefetch: 3 });
  open.push(pooled);
  const want = await collect(ref.batches(5));
  const got = await collect(pooled.batches(5));
  assert.equal(got.length, want.length);
  for (let i = 0; i < want.length; i++) {
    assert.deepEqual([...got[i].labels], [...want[i].labels]);
    assert.ok(Buffer.from(got[i].images.buffer).equals(Buffer.from(want[i].images.buffer)), `batch ${i} pixels`);
  }
  const resumed = await collect(pooled.batches(5, { startBatch: 2 }));
  assert.deepEqual(resumed.map((b) => b.index), [2, 3]);
  assert.deepEqual([...resumed[0].indices], [...want[2].indices]);
  assert.ok(Buffer.from(resumed[1].images.buffer).equals(Buffer.from(want[3].images.buffer)));
  // Stop after one batch: the look-ahead is dropped and the loader stays usable.
  for await (const b of pooled.batches(6)) {
    assert.equal(b.index, 0);
    break;
  }
  await tf.setBackend('cpu');
  const ds = loaderDataset(pooled, { epoch: 5, startBatch: 1 });
  const elems = await ds.toArray();
  assert.equal(elems.length, 3);
  assert.deepEqual(elems[0].images.shape, [16, 112, 112, 3]);
  assert.equal(elems[0].labels.dtype, 'int32');
  assert.deepEqual(Array.from(await elems[2].labels.data()), [...want[3].labels]);
  assert.deepEqual(Array.from(await elems[0].images.data()).slice(0, 100), Array.from(want[1].images.subarray(0, 100)));
  for (const e of elems) tf.dispose(e);
  src.close();
});

test('corrupt JPEG: fails with the key by default (in-thread and in workers); skipCorrupt substitutes and counts', async () => {
  const dir = path.join(tmp, 'corrupt');
  const w = new PackWriter(dir);
  const jpegs: Uint8Array[] = [];
  for (let i = 0; i < 6; i++) {
    jpegs.push(new Uint8Array(await sharp(new Uint8Array(16 * 16 * 3).fill(i * 40), { raw: { width: 16, height: 16, channels: 3 } }).jpeg().toBuffer()));
  }
  jpegs[3] = jpegs[3].subarray(0, 60); // key 4
  jpegs.forEach((b, i) => w.add(i >> 1, b));
  w.finish({ height: 16, width: 16 });
  const src = RecordIOSource.open(dir);
  for (const workers of [0, 1]) {
    const l = await createEvalLoader({ source: src, batchSize: 6, inputSize: 16, workers });
    open.push(l);
    await assert.rejects(collect(l.batches(0)), (e: Error) => e.name === 'ArcfaceError' && /train\.rec key 4: cannot decode image/.test(e.message) && /`skipCorrupt` option/.test(e.message));
  }
  const notes: string[] = [];
  const skip = await createEvalLoader({ source: src, batchSize: 6, inputSize: 16, workers: 1, skipCorrupt: true, onSkip: (n) => notes.push(n.where) });
  open.push(skip);
  const [b] = await collect(skip.batches(0));
  assert.equal(skip.skipped, 1);
  assert.deepEqual(notes, [`${src.path} key 4`]);
  // Slot 3 holds the next image (index 4, label 2) instead.
  assert.deepEqual([...b.labels], [0, 0, 1, 2, 2, 2]);
  const per = 16 * 16 * 3;
  assert.deepEqual([...b.images.subarray(3 * per, 4 * per)], [...b.images.subarray(4 * per, 5 * per)]);
  src.close();
});

test('image folders and in-memory images feed the same loader; other sizes are resized', async () => {
  const root = path.join(tmp, 'folder');
  for (const [who, n] of [['bob', 2], ['alice', 3]] as const) {
    fs.mkdirSync(path.join(root, who), { recursive: true });
    for (let i = 0; i < n; i++) {
      const px = new Uint8Array(20 * 24 * 3).fill(who === 'alice' ? 30 : 220);
      await sharp(px, { raw: { width: 20, height: 24, channels: 3 } }).png().toFile(path.join(root, who, `${i}.png`));
    }
  }
  fs.writeFileSync(path.join(root, 'alice', 'notes.txt'), 'not an image');
  // A JPEG of another size: the fast decoder, then the resize.
  await sharp(new Uint8Array(30 * 30 * 3).fill(220), { raw: { width: 30, height: 30, channels: 3 } }).jpeg().toFile(path.join(root, 'bob', 'z.jpg'));
  const folder = new ImageFolderSource(root);
  assert.deepEqual(folder.classes, ['alice', 'bob']);
  assert.deepEqual(folder.ignored, [path.join(root, 'alice', 'notes.txt')]);
  const l = await createEvalLoader({ source: folder, batchSize: 6, inputSize: 8, workers: 0 });
  const [b] = await collect(l.batches(0));
  assert.deepEqual([...b.labels], [0, 0, 0, 1, 1, 1]);
  assert.equal(b.images.length, 6 * 8 * 8 * 3);
  const bobPng = b.images.subarray(3 * 192, 4 * 192);
  const bobJpeg = b.images.subarray(5 * 192, 6 * 192);
  for (let k = 0; k < 192; k++) assert.ok(Math.abs(bobJpeg[k] - bobPng[k]) <= 2 / 127.5, `resized JPEG value ${k}`);
  assert.equal(b.images[0], Math.fround((Math.fround(30 / 255) - 0.5) / 0.5)); // flat colour survives the resize
  const mem = new MemorySource('mem', [fs.readFileSync(folder.files[0])], [4]);
  const ml = await createEvalLoader({ source: mem, batchSize: 1, inputSize: 8, workers: 0 });
  const [mb] = await collect(ml.batches(0));
  assert.deepEqual([...mb.labels], [4]);
  assert.deepEqual([...mb.images], [...b.images.subarray(0, 8 * 8 * 3)]);
});

test('released batch buffers are reused and the batches stay correct', { skip: skipUnlessFixture(FIX) }, async () => {
  const src = RecordIOSource.open(sharedFixture(FIX)!);
  const ref = await createTrainLoader({ source: src, batchSize: 8, seed: 11, workers: 0 });
  const want = (await collect(ref.batches(2))).map((b) => Buffer.from(b.images.buffer));
  const l = await createTrainLoader({ source: src, batchSize: 8, seed: 11, workers: 0, prefetch: 2 });
  const buffers = new Set<ArrayBufferLike>();
  let i = 0;
  for await (const b of l.batches(2)) {
    assert.ok(Buffer.from(b.images.buffer).equals(want[i++]), `batch ${b.index}`);
    buffers.add(b.images.buffer);
    b.release();
    b.release(); // idempotent
  }
  assert.equal(i, 9);
  assert.ok(buffers.size <= 4, `${buffers.size} distinct buffers for 9 batches`);
  src.close();
});
