// `arcface eval` as a user runs it: the table and the JSON lines carry the numbers evaluateModel gives in
// process, the ROC PNG decodes at its size (default beside the model), a .bin of another image size is
// resized with a warning, and bad .bin files exit non-zero naming the file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { initBackend } from '../src/backend/select.ts';
import { loadBackbone } from '../src/convert/load-backbone.ts';
import { writeBin } from '../src/data/bin-set.ts';
import { evaluateModel, prepareVerificationSet, type SetEvaluation } from '../src/eval/evaluate-bin.ts';
import { pickle, PyTuple } from '../src/formats/pickle.ts';
import { buildBackbone } from '../src/models/factory.ts';
import { saveModel } from '../src/models/io.ts';
import { readCard } from '../src/infer/card.ts';
import { REPO_ROOT } from './helpers/fixtures.ts';
import { prng, randomizeWeights } from './helpers/random-weights.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'arcface-eval-cli-'));
const modelDir = path.join(tmp, 'tiny');
const setA = path.join(tmp, 'setA.bin');
const setB = path.join(tmp, 'setB_40px.bin');

function arcface(...args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'src/cli/main.ts'), ...args], { cwd: REPO_ROOT, encoding: 'utf8' });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** 2P noisy copies of smooth per-identity patterns, as PNGs; even pairs are the same identity. */
async function makeBin(file: string, size: number, pairs: number, seed: number): Promise<void> {
  const rand = prng(seed);
  const image = async (id: number) => {
    const px = new Uint8Array(size * size * 3);
    for (let i = 0; i < px.length; i++) {
      const x = (i / 3) % size;
      const y = Math.floor(i / 3 / size);
      px[i] = Math.max(0, Math.min(255, Math.round(128 + 100 * Math.sin((1 + (id % 4)) * x / size * 3 + id + (i % 3)) * Math.cos((1 + (id % 3)) * y / size * 3) + 40 * (rand() - 0.5))));
    }
    return new Uint8Array(await sharp(px, { raw: { width: size, height: size, channels: 3 } }).png().toBuffer());
  };
  const images: Uint8Array[] = [];
  const issame: boolean[] = [];
  for (let k = 0; k < pairs; k++) {
    images.push(await image(k), await image(k % 2 === 0 ? k : k + 1));
    issame.push(k % 2 === 0);
  }
  writeBin(file, { images, issame });
}

const expected: Record<string, SetEvaluation> = {};
/** The same sets calibrated at FAR 0.05 and 0.2, with the reference's squared-L2 TAR@FAR at 0.05. */
const calibrated: Record<string, SetEvaluation> = {};

test('setup: a saved tiny model, two .bin sets, and their evaluation in process', async () => {
  await initBackend('wasm', { quiet: true });
  const m = buildBackbone({ network: 'iresnet', layers: [1, 1, 1, 1], widths: [8, 16, 16, 32], inputSize: 32, embeddingSize: 16 }, { seed: 5 });
  randomizeWeights(m, { seed: 9 });
  await saveModel(m, modelDir, { network: 'iresnet', layers: [1, 1, 1, 1], widths: [8, 16, 16, 32], inputSize: 32, embeddingSize: 16 });
  m.dispose();
  await makeBin(setA, 32, 20, 1);
  await makeBin(setB, 40, 30, 2);
  const { model } = await loadBackbone(modelDir);
  expected.setA = await evaluateModel(model, await prepareVerificationSet(setA, 32));
  expected.setB_40px = await evaluateModel(model, await prepareVerificationSet(setB, 32, { warn: () => {} }));
  const far = { farTarget: 0.05, farTargets: [0.05, 0.2] };
  calibrated.setA = await evaluateModel(model, await prepareVerificationSet(setA, 32), far);
  calibrated.setB_40px = await evaluateModel(model, await prepareVerificationSet(setB, 32, { warn: () => {} }), far);
  model.dispose();
});

test('eval: table on stdout with the in-process numbers; ROC PNG beside the model by default', async () => {
  const r = arcface('eval', '--model', modelDir, '--bin', setA, setB, '--backend', 'wasm');
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trimEnd().split('\n');
  assert.equal(lines.length, 3, r.stdout);
  assert.match(lines[0], /^set\s+pairs\s+Accuracy-Flip\s+accuracy %\s+XNorm\s+best thr \(L2²\)\s+TAR@FAR=1e-3\s+cos thr\s+TAR@FAR=1e-4\s+cos thr$/);
  for (const [i, name] of [[1, 'setA'], [2, 'setB_40px']] as const) {
    const e = expected[name];
    const cells = lines[i].split(/\s{2,}/);
    assert.equal(cells[0], name);
    assert.equal(cells[1], String(e.pairs));
    assert.equal(cells[2], `${e.accuracyMean.toFixed(5)}+-${e.accuracyStd.toFixed(5)}`);
    assert.equal(cells[3], `${(100 * e.accuracyMean).toFixed(3)} ± ${(100 * e.accuracyStd).toFixed(3)}`);
    assert.equal(cells[4], e.xnorm.toFixed(4));
    assert.equal(cells[5], e.bestThreshold.toFixed(2));
    assert.equal(cells[6], e.calibration[0]!.tar.toFixed(4));
    assert.equal(cells[7], e.calibration[0]!.threshold.toFixed(4));
    assert.equal(cells[9], e.calibration[1]!.threshold.toFixed(4));
    assert.match(r.stderr, new RegExp(`\\[${name}\\]Accuracy-Flip: ${e.accuracyMean.toFixed(5)}\\+-${e.accuracyStd.toFixed(5)} XNorm: `));
  }
  assert.ok(expected.setA.accuracyMean > 0.6, 'the synthetic pairs are separable by this model: the numbers are not all trivial');
  // The 40x40 set is resized with a warning naming it; the 32x32 one is not.
  assert.match(r.stderr, new RegExp(`warning: ${setB.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: 60 of 60 images are not 32x32`));
  assert.ok(!r.stderr.includes(`warning: ${setA}`));
  const meta = await sharp(path.join(modelDir, 'roc.png')).metadata();
  assert.deepEqual([meta.format, meta.width, meta.height], ['png', 640, 560]);
});

test('eval --json: one JSON object per set; --roc writes there, leaving no temporary file', async () => {
  const out = path.join(tmp, 'plots');
  fs.mkdirSync(out);
  const roc = path.join(out, 'curves.png');
  const r = arcface('eval', '--model', modelDir, '--bin', setA, setB, '--json', '--roc', roc, '--batch-size', '4', '--backend', 'wasm', '--far', '0.05,0.2', '--write-card');
  assert.equal(r.code, 0, r.stderr);
  const rows = r.stdout.trimEnd().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(rows.map((x) => [x.set, x.file]), [['setA', setA], ['setB_40px', setB]]);
  for (const row of rows) {
    const e = expected[row.set];
    assert.equal(row.pairs, e.pairs);
    assert.equal(row.accuracyMean, e.accuracyMean);
    assert.equal(row.accuracyStd, e.accuracyStd);
    assert.deepEqual(row.accuracyPerFold, e.result.accuracyPerFold);
    assert.ok(Math.abs(row.xnorm - e.xnorm) < 1e-5 * e.xnorm);
    assert.equal(row.bestThreshold, e.bestThreshold);
    assert.equal(row.tar, e.tarAtFar.tar);
    assert.equal(row.far, e.tarAtFar.far);
    assert.equal(row.farTarget, 1e-3);
    assert.equal(row.accuracyFlip, `${e.accuracyMean.toFixed(5)}+-${e.accuracyStd.toFixed(5)}`);
    // Cosine thresholds at the FARs asked for: the squared-L2 operating point seen as cos = 1 - d/2.
    const want = calibrated[row.set]!;
    assert.deepEqual(row.calibration, want.calibration);
    assert.ok(Math.abs(row.calibration[0].threshold - (1 - want.tarAtFar.threshold / 2)) < 1e-5, `${row.set}: cos ${row.calibration[0].threshold} vs L2 ${want.tarAtFar.threshold}`);
    assert.equal(row.calibration[0].tar, want.tarAtFar.tar);
  }
  // --write-card stored them in the model's card, per set; compare then decides with them.
  const card = JSON.parse(fs.readFileSync(path.join(modelDir, 'model-card.json'), 'utf8'));
  assert.equal(card.inputSize, 32);
  assert.deepEqual(card.thresholds.map((t: { dataset: string; far: number }) => [t.dataset, t.far]), [['setA', 0.05], ['setA', 0.2], ['setB_40px', 0.05], ['setB_40px', 0.2]]);
  assert.equal(card.thresholds[0].cosine, rows[0].calibration[0].threshold);
  // Exports carry the card: beside a tfjs model and a .pth, inside ONNX metadata (NCHW input there).
  for (const [format, out] of [['tfjs', path.join(tmp, 'exported')], ['onnx', path.join(tmp, 'exported.onnx')], ['pth', path.join(tmp, 'exported.pth')]] as const) {
    const x = arcface('export', '--format', format, '--model', modelDir, '--out', out);
    assert.equal(x.code, 0, x.stderr);
    const got = readCard(out)!;
    assert.deepEqual(got.thresholds, card.thresholds, format);
    assert.equal(got.input.layout, format === 'onnx' ? 'NCHW' : 'NHWC');
    assert.match(got.provenance.notes!.at(-1)!, new RegExp(`exported as ${format}`));
  }
  assert.ok(!fs.existsSync(`${path.join(tmp, 'exported.onnx')}.card.json`), 'ONNX holds its card inside');
  assert.deepEqual(fs.readdirSync(out), ['curves.png']);
  const meta = await sharp(roc).metadata();
  assert.deepEqual([meta.format, meta.width, meta.height], ['png', 640, 560]);
});

test('eval: bad .bin files exit non-zero naming the file and the problem, and write no ROC', () => {
  const bad = path.join(tmp, 'bad');
  fs.mkdirSync(bad);
  const img = fs.readFileSync(setA).subarray(0, 0); // placeholder bytes are fine: counts are checked first
  const cases: [string, Uint8Array | null, RegExp][] = [
    ['missing.bin', null, /no such file/],
    ['notpickle.bin', new TextEncoder().encode('Abel_Pintos 1 2\n'), /not a verification \.bin \(cannot unpickle/],
    ['odd.bin', pickle(new PyTuple([[img, img, img], [true]]), { protocol: 2 }), /3 images for 1 pairs/],
    ['mismatch.bin', pickle(new PyTuple([[img, img, img, img], [true, false, true]]), { protocol: 2 }), /4 images for 3 pairs/],
  ];
  for (const [name, bytes, why] of cases) {
    const file = path.join(bad, name);
    if (bytes) fs.writeFileSync(file, bytes);
    const roc = path.join(bad, `${name}.png`);
    const r = arcface('eval', '--model', modelDir, '--bin', setA, file, '--roc', roc, '--backend', 'wasm');
    assert.notEqual(r.code, 0, `${name}: ${r.stdout}`);
    assert.ok(r.stderr.includes(`arcface: error: ${file}`), `${name}: ${r.stderr}`);
    assert.match(r.stderr, why);
    assert.ok(!fs.existsSync(roc), `${name}: no ROC image after a failure`);
  }
});
