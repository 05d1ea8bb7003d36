// The ROC image: pixels where the axes and a known curve must be, and a PNG sharp can decode.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { renderRoc, writeRocPng } from '../src/eval/roc-image.ts';

const pixel = (img: { width: number; data: Uint8Array }, x: number, y: number) => {
  const i = (Math.round(y) * img.width + Math.round(x)) * 4;
  return [img.data[i], img.data[i + 1], img.data[i + 2]];
};

test('renderRoc draws the axes and the curve where the layout puts them', () => {
  // The curve (0.2,0) -> (0.2,0.8) -> (1,0.8): a vertical then a horizontal stroke in the first colour.
  const img = renderRoc([{ name: 'step', fpr: [0.2, 0.2, 1], tpr: [0, 0.8, 0.8] }], { width: 640, height: 560 });
  assert.equal(img.data.length, 640 * 560 * 4);
  // Plot area: x from 80 to 616, y from 490 (tpr 0) to 48 (tpr 1).
  const px = (f: number) => 80 + f * 536;
  const py = (t: number) => 490 - t * 442;
  assert.deepEqual(pixel(img, px(0.5), py(0.8)), [31, 119, 180], 'horizontal part of the curve at tpr 0.8');
  assert.deepEqual(pixel(img, px(0.2), py(0.5)), [31, 119, 180], 'vertical part at fpr 0.2');
  assert.deepEqual(pixel(img, px(0.5), py(0)), [0, 0, 0], 'x axis');
  assert.deepEqual(pixel(img, px(0.65), py(0.35)), [255, 255, 255], 'empty plot area');
  assert.throws(() => renderRoc([{ name: 'x', fpr: [0, 1], tpr: [0] }]), /2 FPR and 1 TPR/);
});

test('writeRocPng writes a PNG that decodes to the requested size', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'roc-'));
  try {
    const file = path.join(dir, 'roc.png');
    await writeRocPng(file, [{ name: 'lfw 0.99', fpr: [0, 0.1, 1], tpr: [0, 0.9, 1] }], { width: 400, height: 300 });
    const meta = await sharp(file).metadata();
    assert.equal(meta.format, 'png');
    assert.equal(meta.width, 400);
    assert.equal(meta.height, 300);
    await assert.rejects(writeRocPng(path.join(dir, 'missing', 'roc.png'), []), /missing.*roc\.png|roc\.png/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
