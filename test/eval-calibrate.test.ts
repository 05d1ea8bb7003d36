// Calibrated cosine thresholds at a FAR: against a brute-force scan, and against the reference's
// squared-L2 TAR@FAR through cos = 1 - d/2; the exact ROC; the log-scale ROC plot.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { cosineThresholdsAtFar, exactRoc, pairCosines, parseFarList } from '../src/eval/calibrate.ts';
import { evaluateVerification, flipSumEmbeddings } from '../src/eval/verification.ts';
import { rocLayout, rocSvg, writeRocImage } from '../src/eval/roc-image.ts';
import { prng } from './helpers/random-weights.ts';

/** Unit embeddings of `pairs` pairs: genuine pairs share an identity vector plus noise. */
function synthetic(pairs: number, dim: number, seed: number): { emb: Float32Array; issame: boolean[] } {
  const rnd = prng(seed);
  const gauss = () => Math.sqrt(-2 * Math.log(rnd() + 1e-12)) * Math.cos(2 * Math.PI * rnd());
  const raw = new Float32Array(2 * pairs * dim);
  const issame: boolean[] = [];
  for (let k = 0; k < pairs; k++) {
    const same = k % 2 === 0;
    issame.push(same);
    for (let j = 0; j < dim; j++) {
      const base = gauss();
      raw[2 * k * dim + j] = base + 0.9 * gauss();
      raw[(2 * k + 1) * dim + j] = (same ? base : gauss()) + 0.9 * gauss();
    }
  }
  // flipSumEmbeddings with a zero flip normalises each row, as evaluation does.
  return { emb: flipSumEmbeddings(raw, new Float32Array(raw.length), dim).embeddings, issame };
}

test('cosine threshold at each FAR equals a brute-force scan and the squared-L2 threshold as 1 - d/2', () => {
  const dim = 16;
  const { emb, issame } = synthetic(3000, dim, 7);
  const cos = pairCosines(emb, dim);
  const fars = [1e-1, 1e-2, 1e-3, 2e-3];
  const got = cosineThresholdsAtFar(cos, issame, fars);
  const genuine = cos.filter((_, i) => issame[i]);
  const impostor = cos.filter((_, i) => !issame[i]);
  const candidates = [...new Set([-1, ...cos])].sort((a, b) => a - b);
  for (const [i, far] of fars.entries()) {
    // Brute force: the smallest candidate threshold whose FAR (impostors strictly above) is within the target.
    const best = candidates.find((t) => impostor.filter((s) => s > t).length / impostor.length <= far)!;
    assert.equal(got[i]!.threshold, best, `threshold at FAR ${far}`);
    assert.equal(got[i]!.tar, genuine.filter((s) => s > best).length / genuine.length, `TAR at FAR ${far}`);
    assert.ok(got[i]!.far <= far);
    // The reference's squared-L2 TAR@FAR (same iff d < t) is the same operating point.
    const l2 = evaluateVerification(emb, dim, issame, { farTarget: far }).tarAtFar;
    assert.ok(Math.abs(got[i]!.threshold - (1 - l2.threshold / 2)) < 1e-6, `cos ${got[i]!.threshold} vs 1 - ${l2.threshold}/2`);
    assert.equal(got[i]!.tar, l2.tar);
    assert.equal(got[i]!.far, l2.far);
  }
  assert.throws(() => cosineThresholdsAtFar(cos, issame, [0]), /FAR target must be in \(0, 1\]/);
  assert.throws(() => cosineThresholdsAtFar([0.5], [true], [1e-3]), /genuine and impostor pairs; got 1 genuine and 0 impostor/);
  assert.deepEqual(parseFarList('1e-3, 1e-4'), [1e-3, 1e-4]);
  assert.throws(() => parseFarList('1e-3,x'), /FAR targets/);
});

test('exact ROC: one point per distinct score, from (0,0) to (1,1), counts at each point', () => {
  const cos = [0.9, 0.8, 0.8, 0.3, 0.1, -0.2];
  const issame = [true, false, true, true, false, false];
  const roc = exactRoc(cos, issame);
  assert.deepEqual(Array.from(roc.fpr), [0, 0, 1 / 3, 1 / 3, 2 / 3, 1]);
  assert.deepEqual(Array.from(roc.tpr), [0, 1 / 3, 2 / 3, 1, 1, 1]);
});

test('ROC plot: log FPR axis, real text, marks, styles told apart; PNG renders the curve where the layout puts it', async () => {
  const curves = [
    { name: 'lfw 0.99500', fpr: [0, 1e-4, 1e-3, 1e-2, 1], tpr: [0, 0.5, 0.5, 0.9, 1], marks: [{ far: 1e-3, tar: 0.5 }] },
    { name: 'cfp_fp 0.9', fpr: [0, 1e-2, 1], tpr: [0, 0.2, 1] },
  ];
  const svg = rocSvg(curves, { width: 720, height: 560, title: 'ROC mine', minFpr: 1e-5 });
  for (const label of ['1e-5', '1e-4', '1e-3', '1e-2', '1e-1', 'False accept rate (log scale)', 'True accept rate', 'lfw 0.99500', 'ROC mine']) {
    assert.ok(svg.includes(`>${label}</text>`), `text "${label}"`);
  }
  const L = rocLayout(720, 560, 1e-5);
  // Decades are evenly spaced.
  assert.ok(Math.abs(L.x(1e-3) - L.x(1e-4) - (L.x(1e-1) - L.x(1e-2))) < 1e-9);
  const poly = /<polyline data-curve="0" points="([^"]+)"[^>]*stroke="(#[0-9A-F]+)"/.exec(svg)!;
  const pts = poly[1]!.split(' ').map((p) => p.split(',').map(Number));
  assert.deepEqual(pts[2], [Math.round(L.x(1e-3) * 100) / 100, Math.round(L.y(0.5) * 100) / 100]);
  const styles = [...svg.matchAll(/<polyline data-curve="\d" [^>]*stroke="(#[0-9A-F]+)"( stroke-dasharray="[^"]+")?/g)].map((m) => m[1]! + (m[2] ?? ''));
  assert.equal(new Set(styles).size, 2, 'the two curves differ in colour and dash');
  assert.match(svg, /<circle cx="[\d.]+" cy="[\d.]+" r="5" fill="white" stroke="#0072B2"/);

  const dir = mkdtempSync(path.join(tmpdir(), 'roc-'));
  try {
    const file = path.join(dir, 'roc.png');
    await writeRocImage(file, curves, { width: 720, height: 560, minFpr: 1e-5 });
    const { data, info } = await sharp(file).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    assert.equal(info.width, 720);
    // The flat segment at TPR 0.5 between FPR 1e-4 and 1e-3 is drawn in the first curve's colour.
    const x = Math.round((L.x(1e-4) + L.x(3e-4)) / 2);
    const y = Math.round(L.y(0.5));
    let found = false;
    for (let dy = -1; dy <= 1; dy++) {
      const i = ((y + dy) * info.width + x) * 3;
      if (Math.abs(data[i]! - 0x00) < 40 && Math.abs(data[i + 1]! - 0x72) < 40 && Math.abs(data[i + 2]! - 0xb2) < 40) found = true;
    }
    assert.ok(found, 'curve colour at its flat segment');
    await writeRocImage(path.join(dir, 'roc.svg'), curves);
    assert.match(readFileSync(path.join(dir, 'roc.svg'), 'utf8'), /^<svg /);
    await assert.rejects(writeRocImage(path.join(dir, 'missing', 'roc.png'), curves), /missing.*roc\.png: cannot write/);
    assert.throws(() => rocSvg([{ name: 'x', fpr: [0, 1], tpr: [0] }]), /2 FPR and 1 TPR/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
