// The demo's synthetic identity dataset: determinism, the pack and val.bin it writes, held-out identities,
// and the property the demo relies on: nuisances outweigh identity differences in pixel space.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { readBin } from '../src/data/bin-set.ts';
import { decodeFast } from '../src/data/decode.ts';
import { openTrainingSource } from '../src/data/open-source.ts';
import { RecordIOSource } from '../src/data/rec-source.ts';
import { makeDemoDataset, type DemoDatasetOptions, type DemoDatasetSummary } from '../src/demo/make-dataset.ts';
import { neutralNuisance, renderFace, SyntheticFaces } from '../src/demo/synthetic-faces.ts';
import { ArcfaceError } from '../src/errors.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'demo-data-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const base: Omit<DemoDatasetOptions, 'dir'> = { identities: 20, imagesPerIdentity: 5, heldOutIdentities: 6, heldOutImagesPerIdentity: 4, pairs: 20, size: 64, seed: 3 };

/** Mean absolute difference of two images, in grey levels. */
function meanAbsDiff(a: Uint8Array, b: Uint8Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += Math.abs(a[i] - b[i]);
  return s / a.length;
}

describe('makeDemoDataset', () => {
  let summary: DemoDatasetSummary;
  const dirA = path.join(tmp, 'a');
  before(async () => {
    summary = await makeDemoDataset({ dir: dirA, ...base });
  });

  test('is deterministic: the same seed gives the same bytes, another seed other bytes', async () => {
    const dirB = path.join(tmp, 'b');
    const dirC = path.join(tmp, 'c');
    await makeDemoDataset({ dir: dirB, ...base });
    await makeDemoDataset({ dir: dirC, ...base, seed: 4 });
    for (const f of ['train.rec', 'train.idx', 'property', 'val.bin']) {
      assert.ok(fs.readFileSync(path.join(dirA, f)).equals(fs.readFileSync(path.join(dirB, f))), `${f} differs between two runs`);
    }
    assert.ok(!fs.readFileSync(path.join(dirA, 'train.rec')).equals(fs.readFileSync(path.join(dirC, 'train.rec'))));
    assert.ok(!fs.readFileSync(path.join(dirA, 'val.bin')).equals(fs.readFileSync(path.join(dirC, 'val.bin'))));
  });

  test('the pack reads back with the right counts, labels and image size', () => {
    assert.equal(summary.trainImages, 100);
    assert.equal(fs.readFileSync(path.join(dirA, 'property'), 'utf8'), '20,64,64');
    const src = openTrainingSource(dirA);
    assert.ok(src instanceof RecordIOSource);
    assert.equal(src.length, 100);
    assert.equal(src.numClasses, 20);
    for (let i = 0; i < src.length; i++) assert.equal(src.label(i), Math.floor(i / 5), `label of image ${i}`);
    const img = decodeFast(src.bytes(37));
    assert.ok(img, 'image 37 is a JPEG');
    assert.deepEqual([img.width, img.height], [64, 64]);
    // Image 37 is identity 7, photo 2: close to its rendering (JPEG loses some noise), far from photo 3's.
    const gen = new SyntheticFaces({ seed: 3, size: 64 });
    const err = meanAbsDiff(img.data, gen.image(7, 2));
    const other = meanAbsDiff(img.data, gen.image(7, 3));
    assert.ok(err < 10 && other > 3 * err, `JPEG error ${err.toFixed(1)}, distance to another photo ${other.toFixed(1)}`);
    src.close();
  });

  test('val.bin pairs are balanced and come only from held-out identities', () => {
    const set = readBin(summary.files.bin);
    assert.equal(set.issame.length, 20);
    assert.equal(set.images.length, 40);
    assert.equal(set.issame.filter(Boolean).length, 10);
    assert.equal(summary.samePairs, 10);
    assert.equal(summary.pairIdentities.length, 20);
    const heldOut = new Set<number>();
    summary.pairIdentities.forEach(([a, b], p) => {
      for (const id of [a, b]) {
        assert.ok(id >= 20 && id < 26, `pair ${p} uses identity ${id}, not a held-out one`);
        heldOut.add(id);
      }
      assert.equal(set.issame[p], a === b, `pair ${p} flag`);
      if (a === b) assert.ok(!Buffer.from(set.images[2 * p]).equals(Buffer.from(set.images[2 * p + 1])), `same pair ${p} shows one photo twice`);
    });
    assert.ok(heldOut.size >= 5, `pairs use only ${heldOut.size} of 6 held-out identities`);
    // Every fold of the sequential 10-fold protocol holds both kinds.
    for (let f = 0; f < 10; f++) assert.deepEqual([set.issame[2 * f], set.issame[2 * f + 1]], [true, false]);
    // No val image is byte-identical to a training image.
    const src = openTrainingSource(dirA);
    const train = new Set<string>();
    for (let i = 0; i < src.length; i++) train.add(Buffer.from(src.bytes(i)).toString('base64'));
    src.close();
    for (const im of set.images) assert.ok(!train.has(Buffer.from(im).toString('base64')));
  });

  test('rejects bad counts before writing anything', async () => {
    const dir = path.join(tmp, 'bad');
    await assert.rejects(makeDemoDataset({ dir, ...base, identities: 0 }), ArcfaceError);
    await assert.rejects(makeDemoDataset({ dir, ...base, heldOutIdentities: 1 }), /heldOutIdentities/);
    assert.ok(!fs.existsSync(dir));
  });
});

describe('SyntheticFaces', () => {
  const gen = new SyntheticFaces({ seed: 11, size: 64 });

  test('identities are fixed per index; photos are the identity under a per-photo nuisance', () => {
    assert.deepEqual(new SyntheticFaces({ seed: 11 }).identity(5), gen.identity(5));
    assert.notDeepEqual(gen.identity(5), gen.identity(6));
    assert.notDeepEqual(new SyntheticFaces({ seed: 12 }).identity(5), gen.identity(5));
    const a = gen.image(5, 0);
    assert.deepEqual(renderFace(gen.identity(5), gen.nuisance(5, 0), 64), a);
    assert.deepEqual(gen.image(5, 0), a, 'rendering again gives the same bytes');
    assert.equal(a.length, 64 * 64 * 3);
  });

  test('nuisance outweighs identity in pixel space', () => {
    // Photos of one person differ a lot...
    let same = 0;
    let nSame = 0;
    for (let k = 0; k < 8; k++) {
      for (let j = 1; j < 4; j++) {
        same += meanAbsDiff(gen.image(k, 0), gen.image(k, j));
        nSame++;
      }
    }
    same /= nSame;
    // ...more than two different people photographed identically do.
    const neutral = neutralNuisance();
    let ids = 0;
    let nIds = 0;
    for (let k = 0; k < 8; k++) {
      ids += meanAbsDiff(renderFace(gen.identity(k), neutral, 64), renderFace(gen.identity(k + 8), neutral, 64));
      nIds++;
    }
    ids /= nIds;
    assert.ok(ids > 5, `identities under one nuisance differ by ${ids.toFixed(1)} grey levels`);
    assert.ok(same > 1.5 * ids, `same-identity photos differ by ${same.toFixed(1)}, identities by ${ids.toFixed(1)}`);
    // And different people's photos are not much further apart than one person's.
    let diff = 0;
    for (let k = 0; k < 8; k++) diff += meanAbsDiff(gen.image(k, 0), gen.image(k + 8, 1));
    diff /= 8;
    assert.ok(same > 0.8 * diff, `same ${same.toFixed(1)} vs different ${diff.toFixed(1)}`);
  });

  test('renders at 112 as well, with the face at the same relative place', () => {
    const g112 = new SyntheticFaces({ seed: 11, size: 112 });
    const big = renderFace(g112.identity(2), neutralNuisance(), 112);
    const small = renderFace(gen.identity(2), neutralNuisance(), 64);
    assert.equal(big.length, 112 * 112 * 3);
    // The centre pixel (on the face) has about the same colour at both sizes.
    const c112 = (56 * 112 + 56) * 3;
    const c64 = (32 * 64 + 32) * 3;
    for (let ch = 0; ch < 3; ch++) assert.ok(Math.abs(big[c112 + ch] - small[c64 + ch]) < 25, `channel ${ch}: ${big[c112 + ch]} vs ${small[c64 + ch]}`);
    assert.throws(() => new SyntheticFaces({ size: 8 }), RangeError);
  });
});
