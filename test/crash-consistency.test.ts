// kill -9 during `pack`, `pack-bin`, `import`, `export` (onnx, pth, tfjs) and a training checkpoint: each
// command runs as a child and is killed when its temporary appears, at once or after a seeded delay. After
// every kill the final names hold the previous complete output or the new complete one (never a mix, never
// a part; "none" only in the instant of a switch, with the journal or the previous folder left to finish
// it); the next run exits 0, takes over the dead writer's lock and leaves no temporary behind.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { initBackend } from '../src/backend/select.ts';
import { importTorch } from '../src/convert/import-torch.ts';
import { writeBin } from '../src/data/bin-set.ts';
import { packFolder } from '../src/data/pack-folder.ts';
import { buildVerificationSet, parsePairs } from '../src/data/pairs.ts';
import { RecordIOSource } from '../src/data/rec-source.ts';
import { readTorchStateDict } from '../src/formats/torch.ts';
import { readModelArtifacts, saveModel } from '../src/models/io.ts';
import { loadCheckpoint } from '../src/train/checkpoint.ts';
import { HOST, parseTemporaryName } from '../src/util/atomic.ts';
import { lockFileFor } from '../src/util/lock.ts';
import { killDuringWrite, runCli, seeded, type KillResult } from './helpers/children.ts';
import { sharedFixture, skipUnlessFixture } from './helpers/fixtures.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'arcface-crash-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
// ARCFACE_CRASH_ROUNDS=n kills each command n times more often (at other seeded delays); the default
// keeps the file near two minutes.
const ROUNDS = Math.max(1, Number(process.env.ARCFACE_CRASH_ROUNDS ?? 1));
const random = seeded(Number(process.env.ARCFACE_CRASH_SEED ?? 11));
const sha = (b: Uint8Array | string): string => createHash('sha256').update(b).digest('hex').slice(0, 16);
const read = (f: string): Buffer => fs.readFileSync(f);
const temporariesIn = (dir: string): string[] => (fs.existsSync(dir) ? fs.readdirSync(dir).filter((n) => parseTemporaryName(n, dir)) : []);
/** A temporary of `final` made by process `pid`. */
const isTemporaryOf = (final: string) => (n: string, pid: number): boolean => {
  const t = parseTemporaryName(n);
  return t?.final === final && t.pid === pid;
};

/** Delays after the temporary appears: at once, and spread over a write of a few to a few hundred ms. */
const delays = (n: number, maxMs: number): number[] => [0, ...Array.from({ length: n * ROUNDS - 1 }, () => Math.round(random() * maxMs))];

before(async () => {
  await initBackend('cpu', { quiet: true });
});

/**
 * Checks every snapshot is the previous or the final output, the final run's leftovers are gone, and the
 * kills did land during writes (else the test proved nothing).
 */
function checkRuns(what: string, kills: KillResult[], snapshots: string[], old: string, final: string, dirs: string[], needInWrite = true): void {
  const moment = (k: KillResult, i: number): string => `${k.killed ? (k.inWrite ? 'killed in write' : 'killed') : 'finished'} -> ${snapshots[i] === old ? 'previous' : snapshots[i] === final ? 'new' : snapshots[i]}`;
  process.stderr.write(`# ${what}: ${kills.map(moment).join('; ')}\n`);
  snapshots.forEach((s, i) => assert.ok(s === old || s === final || s.startsWith('switching'), `${what}, kill ${i}: final names hold ${s}; want the previous (${old}) or the new output (${final})`));
  assert.ok(kills.some((k) => k.killed && (k.inWrite || !needInWrite)), `${what}: no kill landed while a temporary existed`);
  for (const d of dirs) assert.deepEqual(temporariesIn(d), [], `${what}: the next run removed the temporaries of dead processes in ${d}`);
}

/** After a killed run: the dead writer's lock is still there; the next run must take it over. */
function assertStaleLock(out: string, k: KillResult): void {
  if (!k.killed) return;
  const lock = lockFileFor(out);
  assert.ok(fs.existsSync(lock), `the killed writer's lock ${lock} stays`);
  assert.equal(JSON.parse(fs.readFileSync(lock, 'utf8')).pid, k.pid);
}

async function jpeg(file: string, v: number, w = 112, h = 112): Promise<void> {
  const px = new Uint8Array(w * h * 3).map((_, i) => (v + ((i * 7) % 61)) & 255);
  const img = sharp(px, { raw: { width: w, height: h, channels: 3 } });
  await (file.endsWith('.png') ? img.png() : img.jpeg({ quality: 90 })).toFile(file);
}

/** `n` identities of `per` images; every third one a PNG of another size (re-encoded by pack). */
async function photos(root: string, n: number, per: number, seed: number): Promise<void> {
  for (let c = 0; c < n; c++) {
    fs.mkdirSync(path.join(root, `id${c}`), { recursive: true });
    for (let i = 0; i < per; i++) {
      const v = seed + c * 17 + i * 5;
      await (i % 3 === 2 ? jpeg(path.join(root, `id${c}`, `${i}.png`), v, 140, 130) : jpeg(path.join(root, `id${c}`, `${i}.jpg`), v));
    }
  }
}

/** The pack under its final names: each present file's hash; checked for a mix and for validity. */
function packState(out: string, k?: KillResult): string {
  const names = ['train.rec', 'train.idx', 'property'].filter((n) => fs.existsSync(path.join(out, n)));
  if (names.length === 3) {
    const src = RecordIOSource.open(out); // a complete pack reads
    assert.ok(src.length > 0);
    src.close();
    return names.map((n) => `${n}:${sha(read(path.join(out, n)))}`).join(' ');
  }
  if (names.length === 0) return 'none';
  // Only inside a commit, whose journal the next run finishes.
  assert.ok(k && fs.existsSync(path.join(out, `.property.commit-${HOST}-${k.pid}`)), `incomplete pack [${names}] with no commit journal`);
  return `switching ${names.map((n) => `${n}:${sha(read(path.join(out, n)))}`).join(' ')}`;
}

test('pack killed at any moment: the previous pack or the new one, never a new .rec with an old .idx', async () => {
  const a = path.join(tmp, 'photosA');
  const b = path.join(tmp, 'photosB');
  await photos(a, 3, 3, 10);
  await photos(b, 6, 12, 90);
  const out = path.join(tmp, 'pack');
  await packFolder(a, { out });
  const old = packState(out);
  const kills: KillResult[] = [];
  const snapshots: string[] = [];
  // While images are written to the .rec; when the .idx is written (finish); when the commit starts.
  const journal = (n: string, pid: number): boolean => n === `.property.commit-${HOST}-${pid}`;
  const moments = [...delays(1, 400).map((delayMs) => ({ match: isTemporaryOf('train.rec'), delayMs })), { match: isTemporaryOf('train.idx'), delayMs: 0 }, { match: journal, delayMs: 0 }];
  for (const { match, delayMs } of moments) {
    const k = await killDuringWrite(['pack', b, '--out', out, '--force', '--no-progress'], { dir: out, match, delayMs });
    kills.push(k);
    snapshots.push(packState(out, k));
    assertStaleLock(out, k);
  }
  const r = await runCli(['pack', b, '--out', out, '--force', '--no-progress']);
  assert.equal(r.code, 0, r.stderr);
  const final = packState(out);
  assert.notEqual(final, old);
  // Inside a commit the old files go first (property first), then the new ones come (property last): what
  // is visible is part of the old pack or part of the new one, never a mix.
  for (const s of snapshots.filter((x) => x.startsWith('switching'))) {
    const parts = s.split(' ').slice(1);
    assert.ok(parts.every((p) => final.includes(p)) || parts.every((p) => old.includes(p)), `mid-commit files are all the old pack's or all the new one's (${s})`);
  }
  checkRuns('pack', kills, snapshots, old, final, [out]);
  assert.deepEqual(fs.readdirSync(out).sort(), ['property', 'train.idx', 'train.rec']);
  assert.ok(!fs.existsSync(lockFileFor(out)), 'lock released');
});

test('pack-bin killed at any moment: the previous .bin or the new one', async () => {
  const root = path.join(tmp, 'pairs');
  await photos(root, 4, 6, 40);
  const list = (pairs: [string, string, number][]): string => pairs.map((p) => p.join(' ')).join('\n');
  const pa = path.join(tmp, 'pairsA.txt');
  const pb = path.join(tmp, 'pairsB.txt');
  fs.writeFileSync(pa, list([['id0/0.jpg', 'id0/1.jpg', 1], ['id0/0.jpg', 'id1/0.jpg', 0]]));
  const many: [string, string, number][] = [];
  for (let c = 0; c < 4; c++) for (let i = 0; i < 5; i++) many.push([`id${c}/${i}.${i % 3 === 2 ? 'png' : 'jpg'}`, `id${(c + i) % 4}/${(i + 1) % 5}.${(i + 1) % 5 % 3 === 2 ? 'png' : 'jpg'}`, i === 0 ? 1 : 0]);
  fs.writeFileSync(pb, list(many));
  const out = path.join(tmp, 'set.bin');
  const { pairs } = parsePairs(pa, { root });
  writeBin(out, (await buildVerificationSet(pairs, pa, {})).set);
  const old = sha(read(out));
  const kills: KillResult[] = [];
  const snapshots: string[] = [];
  // From the moment the lock appears (the work starts) to the write of the file, which is short.
  const lockName = path.basename(lockFileFor(out));
  const lockedBy = (n: string, pid: number): boolean => {
    try {
      return n === lockName && JSON.parse(fs.readFileSync(lockFileFor(out), 'utf8')).pid === pid;
    } catch {
      return false;
    }
  };
  const moments = [...delays(1, 250).map((delayMs) => ({ match: lockedBy, delayMs })), { match: isTemporaryOf('set.bin'), delayMs: 0 }];
  for (const { match, delayMs } of moments) {
    const k = await killDuringWrite(['pack-bin', '--pairs', pb, '--root', root, '--out', out], { dir: tmp, match, delayMs });
    kills.push(k);
    snapshots.push(sha(read(out)));
    assertStaleLock(out, k);
  }
  const r = await runCli(['pack-bin', '--pairs', pb, '--root', root, '--out', out]);
  assert.equal(r.code, 0, r.stderr);
  checkRuns('pack-bin', kills, snapshots, old, sha(read(out)), [tmp], false);
  assert.ok(!fs.existsSync(lockFileFor(out)));
});

/** A saved model folder: hashes of model.json and weights.bin once they read as a model. */
function modelState(dir: string, k?: KillResult): string {
  if (!fs.existsSync(dir)) {
    // Only between the two renames of a switch, with the previous folder left aside for the next run.
    assert.ok(k && fs.existsSync(path.join(path.dirname(dir), `.${path.basename(dir)}.old-${HOST}-${k.pid}`)), `${dir} is missing with no previous folder aside`);
    return 'switching';
  }
  readModelArtifacts(dir);
  return `${sha(read(path.join(dir, 'model.json')))} ${sha(read(path.join(dir, 'weights.bin')))}`;
}

const noTorch = skipUnlessFixture('mbf', 'backbone.pth') || skipUnlessFixture('iresnet_tiny', 'backbone.pth');

test('import and export (tfjs, onnx, pth) killed at any moment: the previous output or the new one', { skip: noTorch }, async () => {
  const models = path.join(tmp, 'models');
  const out = path.join(models, 'm');
  const tiny = importTorch(sharedFixture('iresnet_tiny', 'backbone.pth')!);
  await saveModel(tiny.model, out, tiny.spec);
  tiny.model.dispose();
  fs.cpSync(out, path.join(tmp, 'tiny-tfjs'), { recursive: true });
  const mbf = sharedFixture('mbf', 'backbone.pth')!;

  // import
  let old = modelState(out);
  let kills: KillResult[] = [];
  let snapshots: string[] = [];
  for (const delayMs of delays(2, 40)) {
    const k = await killDuringWrite(['import', '--from', mbf, '--out', out], { dir: models, match: isTemporaryOf('m'), delayMs });
    kills.push(k);
    snapshots.push(modelState(out, k));
    assertStaleLock(out, k);
  }
  let r = await runCli(['import', '--from', mbf, '--out', out]);
  assert.equal(r.code, 0, r.stderr);
  checkRuns('import', kills, snapshots, old, modelState(out), [models]);
  assert.equal(JSON.parse(fs.readFileSync(path.join(out, 'model.json'), 'utf8')).userDefinedMetadata.arcface.network, 'mbf');

  // export: the mbf model just imported, over a previous export of iresnet_tiny in each format
  const exportsDir = path.join(tmp, 'exports');
  fs.mkdirSync(exportsDir);
  const pthState = (f: string): string => {
    const sd = readTorchStateDict(f); // a complete file reads
    const h = createHash('sha256');
    for (const [k, t] of sd) h.update(`${k}[${t.shape}]`).update(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
    return h.digest('hex').slice(0, 16);
  };
  const cases = [
    { format: 'onnx', name: 'e.onnx', prepare: (f: string) => fs.copyFileSync(sharedFixture('iresnet_tiny', 'backbone.onnx')!, f), state: (f: string) => sha(read(f)), maxMs: 30 },
    { format: 'pth', name: 'e.pth', prepare: (f: string) => fs.copyFileSync(sharedFixture('iresnet_tiny', 'backbone.pth')!, f), state: pthState, maxMs: 30 },
    { format: 'tfjs', name: 'e', prepare: (f: string) => fs.cpSync(path.join(tmp, 'tiny-tfjs'), f, { recursive: true }), state: modelState, maxMs: 30 },
  ];
  for (const c of cases) {
    const file = path.join(exportsDir, c.name);
    c.prepare(file);
    old = c.state(file);
    kills = [];
    snapshots = [];
    for (const delayMs of delays(1, c.maxMs)) {
      const k = await killDuringWrite(['export', '--format', c.format, '--model', out, '--out', file], { dir: exportsDir, match: isTemporaryOf(c.name), delayMs });
      kills.push(k);
      snapshots.push(c.format === 'tfjs' ? modelState(file, k) : c.state(file));
      assertStaleLock(file, k);
    }
    r = await runCli(['export', '--format', c.format, '--model', out, '--out', file]);
    assert.equal(r.code, 0, r.stderr);
    checkRuns(`export ${c.format}`, kills, snapshots, old, c.state(file), [exportsDir]);
  }
  // The .pth export's model card sits beside it (tfjs keeps it inside its folder, ONNX in its metadata).
  assert.deepEqual(fs.readdirSync(exportsDir).sort(), ['e', 'e.onnx', 'e.pth', 'e.pth.card.json']);
});

const REC = sharedFixture('rec_insightface');

test('train killed while writing a checkpoint: checkpoint/ is the previous one or the new one; the next run cleans up', { skip: skipUnlessFixture('rec_insightface') }, async () => {
  const out = path.join(tmp, 'run');
  const args = (steps: number): string[] => [
    'train', '--config', 'tiny', '--rec', REC!, '--output', out, '--quiet', '--max-steps', String(steps),
    '--set', 'layers=[1,1,1,1]', '--set', 'widths=[4,8,8,16]', '--set', 'input_size=32', '--set', 'embedding_size=16',
    '--set', 'batch_size=8', '--set', 'save_every=1', '--set', 'val_targets=[]', '--set', 'num_workers=0',
  ];
  const steps: number[] = [];
  const kills: KillResult[] = [];
  const moments = [[1, 0], ...Array.from({ length: ROUNDS }, () => [2, Math.round(random() * 60)])] as [number, number][];
  for (const [nth, delayMs] of moments) {
    const k = await killDuringWrite(args(20), { dir: out, match: isTemporaryOf('checkpoint'), nth, delayMs });
    kills.push(k);
    assert.ok(k.killed, `killed before the end: ${k.stderr}`);
    const ckpt = path.join(out, 'checkpoint');
    if (fs.existsSync(ckpt)) {
      const c = await loadCheckpoint(out); // complete: every part reads
      c.backbone.dispose();
      steps.push(c.position.step);
    } else {
      // None yet, or the instant of a switch with the previous one aside for the next run.
      assert.ok(nth === 1 || fs.existsSync(path.join(out, `.checkpoint.old-${HOST}-${k.pid}`)), 'checkpoint/ missing after one was written');
      steps.push(0);
    }
    assertStaleLock(out, k);
  }
  process.stderr.write(`# train: checkpoint step after each kill ${steps.join(', ')}; ${kills.map((k) => (k.inWrite ? 'killed in write' : 'killed')).join(', ')}\n`);
  assert.ok(kills.some((k) => k.inWrite));
  const r = await runCli(args(2));
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, new RegExp(`took over the lock on ${out} from pid ${kills.at(-1)!.pid} on host`));
  for (const d of [out, path.join(out, 'best')]) assert.deepEqual(temporariesIn(d), [], d);
  const c = await loadCheckpoint(out);
  c.backbone.dispose();
  assert.equal(c.position.step, 2);
  readModelArtifacts(path.join(out, 'model'));
  assert.ok(!fs.existsSync(lockFileFor(out)));
});
