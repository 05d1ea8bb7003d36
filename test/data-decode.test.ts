// Decoding and augmentation: the libjpeg-turbo binding gives the same pixels as @cwasm/jpeg-turbo's own
// decode(); PNG/WebP through sharp; resizing; the normalisation table equals torchvision's float32 math;
// flips mirror rows; corrupt bytes give a clear error and do not break later decodes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import sharp from 'sharp';
import { decodeImage, ImageDecodeError, encodeJpeg } from '../src/data/decode.ts';
import { decodeJpeg, jpegSize, JpegDecodeError } from '../src/data/jpeg.ts';
import { NORMALISE, usingSimd, writeNormalised, writeNormalisedJs } from '../src/data/normalise.ts';
import { readBin } from '../src/data/bin-set.ts';
import path from 'node:path';
import { readNpy } from '../src/formats/npy.ts';
import { createEvalLoader } from '../src/data/loader.ts';
import { RecordIOSource } from '../src/data/rec-source.ts';
import { REPO_ROOT, sharedFixture, skipUnlessFixture } from './helpers/fixtures.ts';

const require = createRequire(import.meta.url);
const cwasm = require('@cwasm/jpeg-turbo') as { decode(b: Uint8Array): { data: Uint8ClampedArray; width: number; height: number } };

test('decodeJpeg = @cwasm/jpeg-turbo decode() (RGBA -> RGB) on the fixture images', { skip: skipUnlessFixture('pairs_py2.bin') }, () => {
  const set = readBin(sharedFixture('pairs_py2.bin')!);
  for (const b of set.images.slice(0, 10)) {
    const ours = decodeJpeg(b);
    const ref = cwasm.decode(b);
    assert.deepEqual([ours.width, ours.height], [ref.width, ref.height]);
    assert.deepEqual(jpegSize(b), { width: 112, height: 112 });
    for (let p = 0; p < ref.width * ref.height; p++) {
      for (let c = 0; c < 3; c++) if (ours.data[p * 3 + c] !== ref.data[p * 4 + c]) assert.fail(`pixel ${p} channel ${c}`);
    }
  }
});

test('corrupt and non-JPEG bytes: clear errors, and the decoder keeps working afterwards', async () => {
  const good = await encodeJpeg({ data: new Uint8Array(32 * 32 * 3).map((_, i) => (i * 7) & 255), width: 32, height: 32 });
  const broken = good.slice();
  for (let i = 200; i < broken.length - 2; i++) broken[i] = (i * 131) & 255;
  for (const bad of [good.subarray(0, good.length / 2), broken, good.subarray(0, 40), new Uint8Array([1, 2, 3, 4])]) {
    assert.throws(() => decodeJpeg(bad), JpegDecodeError);
    await assert.rejects(decodeImage(bad, 'train.rec key 9'), (e: Error) => e instanceof ImageDecodeError && /^train\.rec key 9: cannot decode image/.test(e.message));
  }
  const again = decodeJpeg(good);
  assert.deepEqual([again.width, again.height], [32, 32]);
});

test('PNG and WebP decode through sharp; RGBA loses alpha; resize to the input size', async () => {
  const w = 40;
  const h = 30;
  const rgba = new Uint8Array(w * h * 4).map((_, i) => (i % 4 === 3 ? 128 : (i * 5) & 255));
  const png = new Uint8Array(await sharp(rgba, { raw: { width: w, height: h, channels: 4 } }).png().toBuffer());
  const img = await decodeImage(png, 'a.png');
  assert.deepEqual([img.width, img.height, img.data.length], [w, h, w * h * 3]);
  for (let p = 0; p < w * h; p++) for (let c = 0; c < 3; c++) assert.equal(img.data[p * 3 + c], rgba[p * 4 + c]);
  const webp = new Uint8Array(await sharp(rgba, { raw: { width: w, height: h, channels: 4 } }).webp({ lossless: true }).toBuffer());
  const img2 = await decodeImage(webp, 'a.webp');
  assert.deepEqual([...img2.data.subarray(0, 30)], [...img.data.subarray(0, 30)]);
  const sized = await decodeImage(png, 'a.png', 16);
  assert.deepEqual([sized.width, sized.height, sized.data.length], [16, 16, 16 * 16 * 3]);
});

test('NORMALISE equals (x/255 - 0.5)/0.5 computed in float32 as torchvision does', () => {
  const f = new Float32Array(1);
  for (let v = 0; v < 256; v++) {
    f[0] = v / 255;
    f[0] = f[0] - 0.5;
    f[0] = f[0] / 0.5;
    assert.equal(NORMALISE[v], f[0]);
  }
  assert.deepEqual([NORMALISE[0], NORMALISE[255]], [-1, 1]);
});

test('writeNormalised: NHWC at an offset, mirrored along the width when flipped', () => {
  const w = 3;
  const h = 2;
  const rgb = new Uint8Array(w * h * 3).map((_, i) => i * 10);
  const out = new Float32Array(5 + w * h * 3 * 2).fill(9);
  writeNormalised(rgb, w, h, out, 5, false);
  writeNormalised(rgb, w, h, out, 5 + w * h * 3, true);
  assert.deepEqual([...out.subarray(0, 5)], [9, 9, 9, 9, 9]);
  const norm = (v: number): number => Math.fround((Math.fround(v / 255) - 0.5) / 0.5);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      for (let c = 0; c < 3; c++) {
        assert.equal(out[5 + (y * w + x) * 3 + c], norm(rgb[(y * w + x) * 3 + c]));
        assert.equal(out[5 + w * h * 3 + (y * w + x) * 3 + c], norm(rgb[(y * w + (w - 1 - x)) * 3 + c]));
      }
    }
  }
  assert.throws(() => writeNormalised(rgb, w, h, out, out.length - 3, false), RangeError);
});

test('the WebAssembly SIMD path equals the JS table path, tails and odd widths included', () => {
  assert.equal(usingSimd, true); // Node >= 16 has WebAssembly SIMD
  for (const [w, h] of [[112, 112], [5, 3], [7, 1], [33, 17]]) {
    const rgb = new Uint8Array(w * h * 3).map((_, i) => (i * 113 + 7) & 255);
    for (const flip of [false, true]) {
      const a = new Float32Array(w * h * 3 + 4);
      const b = new Float32Array(w * h * 3 + 4);
      writeNormalised(rgb, w, h, a, 4, flip);
      writeNormalisedJs(rgb, w, h, b, 4, flip);
      assert.deepEqual(a, b, `${w}x${h} flip=${flip}`);
    }
  }
});

test('pixels equal what Pillow decodes (the PyTorch pipeline), and the loader output equals torch float32 math on them', { skip: skipUnlessFixture('rec_insightface') }, async () => {
  const ref = readNpy(path.join(REPO_ROOT, 'test/fixtures/data/pil_rgb_rec_insightface_keys1-3.npy'));
  assert.deepEqual(ref.shape, [3, 112, 112, 3]);
  const src = RecordIOSource.open(sharedFixture('rec_insightface')!);
  const loader = await createEvalLoader({ source: src, batchSize: 3, workers: 0 });
  const [batch] = await (async () => {
    const out = [];
    for await (const b of loader.batches(0)) {
      out.push(b);
      break;
    }
    return out;
  })();
  const f = new Float32Array(1);
  for (let i = 0; i < ref.data.length; i++) {
    const pil = ref.data[i] as number;
    if (decodeJpeg(src.bytes(Math.floor(i / (112 * 112 * 3)))).data[i % (112 * 112 * 3)] !== pil) assert.fail(`pixel value ${i} differs from Pillow`);
    f[0] = pil / 255; // torch: uint8 -> float32, /255, -0.5, /0.5
    f[0] = (f[0] - 0.5) / 0.5;
    if (batch.images[i] !== f[0]) assert.fail(`normalised value ${i}: ${batch.images[i]} != ${f[0]}`);
  }
  src.close();
});
