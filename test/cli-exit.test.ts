// Exit codes and error reporting of `arcface`, run as a user runs it: `train`, `pack` and the loader example
// of docs/data.md exit 0 with the same stdout every time (they used to end with code 13 about half the
// time); a 0-byte JPEG in training data is one `arcface: error: <file>: ...` line and exit 1 (it was exit 7
// with a raw stack); stray errors and usage errors exit 1; empty inputs are errors naming the file.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import sharp from 'sharp';
import { ArcfaceError } from '../src/errors.ts';
import { readBin, writeBin } from '../src/data/bin-set.ts';
import { ImageFolderSource } from '../src/data/folder-source.ts';
import { inspectBin, inspectRec } from '../src/data/inspect.ts';
import { createTrainLoader, DataLoader } from '../src/data/loader.ts';
import { MemorySource } from '../src/data/memory-source.ts';
import { RecordIOSource } from '../src/data/rec-source.ts';
import { readImage } from '../src/infer/image.ts';
import { REPO_ROOT } from './helpers/fixtures.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'arcface-exit-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const BIN = path.join(REPO_ROOT, 'bin', 'arcface.js');
const RUNS = 10;

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

function node(args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { cwd: opts.cwd ?? REPO_ROOT, env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

const arcface = (args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<Run> => node([BIN, ...args], opts);

/** Runs `n` jobs, two at a time (the machine may have few cores). */
async function twoAtATime<T>(n: number, job: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = new Array(n);
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < n) {
      const i = next++;
      out[i] = await job(i);
    }
  };
  await Promise.all([lane(), lane()]);
  return out;
}

const show = (r: Run): string => `exit ${r.code ?? r.signal}\n--- stdout\n${r.stdout}--- stderr\n${r.stderr}`;

/** The one error line of a failed command: exactly one `arcface: error:` line, no stack, no minified code. */
function errorLine(r: Run): string {
  assert.equal(r.code, 1, show(r));
  const lines = r.stderr.split('\n').filter((l) => l && !/^arcface: using the \w+ backend/.test(l));
  assert.equal(lines.length, 1, `one line on stderr\n${show(r)}`);
  assert.match(lines[0]!, /^arcface: error: /);
  return lines[0]!;
}

// The demo photos of docs/data.md section 1 (4 people, three 112x112 JPEGs and one 160x160 PNG each,
// plus a text file), generated the same way, so that the docs' outputs are the expected ones.
const photos = path.join(tmp, 'photos');
const pack = path.join(tmp, 'data', 'mine');
const md = fs.readFileSync(path.join(REPO_ROOT, 'docs', 'data.md'), 'utf8');
const blocks = [...md.matchAll(/```(\w+)\n([\s\S]*?)```/g)].map((m) => ({ lang: m[1]!, body: m[2]! }));

before(async () => {
  for (const [p, who] of ['ada', 'ben', 'cy', 'dee'].entries()) {
    fs.mkdirSync(path.join(photos, who), { recursive: true });
    for (let n = 0; n < 4; n++) {
      const s = n === 3 ? 160 : 112;
      const px = Buffer.alloc(s * s * 3).map((_, i) => (p * 60 + n * 9 + ((i / 3) % s) + i / 3 / s) & 255);
      const img = sharp(px, { raw: { width: s, height: s, channels: 3 } });
      await (n === 3 ? img.png() : img.jpeg({ quality: 95 })).toFile(path.join(photos, who, n + (n === 3 ? '.png' : '.jpg')));
    }
  }
  fs.writeFileSync(path.join(photos, 'ben', 'notes.txt'), 'not a photo');
  const r = await arcface(['pack', 'photos', '--out', 'data/mine', '--no-progress'], { cwd: tmp });
  assert.equal(r.code, 0, show(r));
});

test(`pack exits 0 with the documented stdout, ${RUNS} times out of ${RUNS}, and writes the same bytes`, async () => {
  const docs = blocks.find((b) => b.lang === 'console' && b.body.startsWith('$ arcface pack photos --out data/mine'))!.body.split('\n');
  const expected = docs.find((l) => l.startsWith('{'))!;
  const recHash = createHash('sha256').update(fs.readFileSync(path.join(pack, 'train.rec'))).digest('hex');
  const runs = await twoAtATime(RUNS, (i) => arcface(['pack', 'photos', '--out', `data/run${i}`, '--no-progress'], { cwd: tmp }));
  runs.forEach((r, i) => {
    assert.equal(r.code, 0, `run ${i}: ${show(r)}`);
    assert.equal(r.stdout, `${expected.replaceAll('data/mine', `data/run${i}`)}\n`, `run ${i}`);
    assert.match(r.stderr, new RegExp(`arcface: packed 16 images of 4 identities into data/run${i} \\(1 files skipped, 4 re-encoded, 0 split records\\)\\n$`));
    assert.equal(createHash('sha256').update(fs.readFileSync(path.join(tmp, 'data', `run${i}`, 'train.rec'))).digest('hex'), recHash, `run ${i}: train.rec`);
  });
});

test(`the loader example of docs/data.md exits 0 with its documented stdout, ${RUNS} times out of ${RUNS}`, async () => {
  const code = blocks.find((b) => b.lang === 'ts' && b.body.includes('createTrainLoader'))!.body;
  const shown = blocks.find((b) => b.lang === 'console' && b.body.startsWith('$ node --import tsx try-loader.ts'))!.body.split('\n').slice(1);
  // stdout only: the backend note goes to stderr.
  const expected = shown.filter((l) => l && !l.startsWith('arcface: ')).join('\n') + '\n';
  assert.match(expected, /^16 images, 4 classes, 4 batches per epoch\n[^]*tf\.data: images 4,112,112,3 float32, labels 4 int32\n$/);
  const script = path.join(tmp, 'try-loader.mts');
  fs.writeFileSync(script, code.replaceAll("from './src/", `from '${pathToFileURL(path.join(REPO_ROOT, 'src')).href}/`));
  const runs = await twoAtATime(RUNS, () => node(['--import', 'tsx', script, pack]));
  runs.forEach((r, i) => {
    assert.equal(r.code, 0, `run ${i}: ${show(r)}`);
    assert.equal(r.stdout, expected, `run ${i}`);
  });
});

test(`train exits 0 with its one JSON line, ${RUNS} times out of ${RUNS}`, async () => {
  // Two decoding workers and 2 steps: the prefetched batches are still being decoded when training ends.
  const args = (out: string) => ['train', '--config', 'tiny', '--rec', pack, '--output', out, '--max-steps', '2', '--workers', '2', '--quiet',
    '--set', 'batch_size=4', '--set', 'widths=[4,8,8,16]', '--set', 'val_targets=[]'];
  const runs = await twoAtATime(RUNS, (i) => arcface(args(path.join(tmp, `train${i}`))));
  const losses = runs.map((r, i) => {
    assert.equal(r.code, 0, `run ${i}: ${show(r)}`);
    assert.equal(r.stdout.split('\n').length, 2, `run ${i}: one line on stdout\n${show(r)}`);
    const out = path.join(tmp, `train${i}`);
    const result = JSON.parse(r.stdout);
    assert.deepEqual({ ...result, samplesPerSecond: 0, finalLoss: 0 }, { output: out, steps: 2, samplesPerSecond: 0, finalLoss: 0, verification: {}, best: {}, modelDir: path.join(out, 'model'), stopped: false });
    assert.ok(result.samplesPerSecond > 0 && Number.isFinite(result.samplesPerSecond));
    assert.ok(fs.existsSync(path.join(out, 'model', 'model.json')), `run ${i}: model written`);
    return result.finalLoss as number;
  });
  // Same seed, same data, same backend: every run computes the same loss.
  assert.ok(Number.isFinite(losses[0]) && losses[0]! > 0);
  assert.deepEqual(losses, new Array(RUNS).fill(losses[0]));
});

/** A copy of two people's photos plus a 0-byte JPEG: 9 images, so a batch of 9 holds it. */
function zeroByteFolder(): { dir: string; bad: string } {
  const dir = path.join(tmp, 'zero');
  if (!fs.existsSync(dir)) {
    for (const who of ['ada', 'ben']) {
      fs.mkdirSync(path.join(dir, who), { recursive: true });
      for (const f of fs.readdirSync(path.join(photos, who))) if (!f.endsWith('.txt')) fs.copyFileSync(path.join(photos, who, f), path.join(dir, who, f));
    }
    fs.writeFileSync(path.join(dir, 'ada', '9.jpg'), new Uint8Array(0));
  }
  return { dir, bad: path.join(dir, 'ada', '9.jpg') };
}

test('train on data with a 0-byte JPEG: one `arcface: error: <file>: ...` line, no stack, exit 1 (wasm backend, 2 workers)', async () => {
  const { dir, bad } = zeroByteFolder();
  const r = await arcface(['train', '--backend', 'wasm', '--config', 'tiny', '--rec', dir, '--output', path.join(tmp, 'zero-out'), '--max-steps', '1',
    '--workers', '2', '--quiet', '--set', 'batch_size=9', '--set', 'widths=[4,8,8,16]', '--set', 'val_targets=[]']);
  assert.equal(r.stdout, '');
  assert.equal(errorLine(r), `arcface: error: ${bad}: cannot decode image: Input Buffer is empty (--skip-corrupt skips such images)`);
});

test('library: a decode error in a worker comes back as an ArcfaceError with the file, named once', async () => {
  const { dir, bad } = zeroByteFolder();
  for (const workers of [0, 2]) {
    const loader = await createTrainLoader({ source: new ImageFolderSource(dir), batchSize: 9, workers });
    try {
      await assert.rejects(
        async () => {
          for await (const b of loader.batches(0)) b.release();
        },
        (e: Error) => {
          assert.ok(e instanceof ArcfaceError, `${workers} workers: ${e.name}`);
          assert.equal(e.file, bad);
          assert.equal(e.message.split(bad).length, 2, `the file once in "${e.message}"`);
          return true;
        },
      );
    } finally {
      await loader.close();
    }
  }
});

test('library: look-ahead batches abandoned without return() and then closed are no unhandled rejection', async () => {
  const seen: unknown[] = [];
  const onRejection = (e: unknown): void => void seen.push(e);
  process.on('unhandledRejection', onRejection);
  try {
    const loader = await createTrainLoader({ source: RecordIOSource.open(pack), batchSize: 4, workers: 2 });
    const it = loader.batches(0);
    const first = await it.next(); // the generator stays suspended, as tf.data's take(1) leaves it
    assert.equal(first.value!.size, 4);
    await loader.close(); // rejects the batches still being decoded
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(seen, []);
  } finally {
    process.off('unhandledRejection', onRejection);
  }
});

test('an error nobody caught, with the wasm glue listening, is one error line and exit 1 (not 7 and a stack)', async () => {
  const script = path.join(tmp, 'stray.mts');
  const src = (p: string) => pathToFileURL(path.join(REPO_ROOT, p)).href;
  fs.writeFileSync(
    script,
    `import { initBackend } from '${src('src/backend/select.ts')}';
import { ArcfaceError } from '${src('src/errors.ts')}';
await initBackend('wasm', { quiet: true }); // installs emscripten's uncaughtException/unhandledRejection listeners
const [how, pack] = process.argv.slice(2);
process.argv.splice(2, Infinity, 'inspect', pack!, '--sample', '0');
await import('${src('src/cli/main.ts')}'); // runs the CLI to its end
setTimeout(() => {
  if (how === 'reject') void Promise.reject(new ArcfaceError('stray failure', '/data/x.rec'));
  else throw new TypeError('stray throw');
}, 10);
`,
  );
  const [rejected, thrown] = await Promise.all([node(['--import', 'tsx', script, 'reject', pack]), node(['--import', 'tsx', script, 'throw', pack])]);
  // The command itself ran to its end; the stray error came after.
  assert.ok(rejected.stdout.startsWith(`${pack}/train.rec: RecordIO pack, insightface layout\nimages: 16\n`), rejected.stdout);
  assert.equal(errorLine(rejected), 'arcface: error: /data/x.rec: stray failure');
  assert.equal(errorLine(thrown), 'arcface: error: stray throw');
});

test('usage errors exit 1 with the help and the problem', async () => {
  const [unknown, option, missing] = await Promise.all([arcface(['bogus']), arcface(['train', '--bogus-opt']), arcface(['pack'])]);
  for (const [r, msg] of [
    [unknown, 'Unknown argument: bogus'],
    [option, 'Unknown arguments: bogus-opt, bogusOpt'],
    [missing, 'Not enough non-option arguments: got 0, need at least 1'],
  ] as const) {
    assert.equal(r.code, 1, show(r));
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /^arcface <command> \[options\]|Options:/);
    assert.ok(r.stderr.endsWith(`\n\n${msg}\n`), show(r));
  }
});

/** Empty inputs: a 0-byte pack, a pack folder holding no images, a .bin without pairs, a 0-byte .bin, an empty folder. */
function emptyInputs() {
  const e = path.join(tmp, 'empty');
  const rec0 = path.join(e, 'rec0');
  const folder = path.join(e, 'folder');
  fs.mkdirSync(rec0, { recursive: true });
  fs.mkdirSync(path.join(folder, 'ada'), { recursive: true }); // an identity without images
  fs.writeFileSync(path.join(rec0, 'train.rec'), new Uint8Array(0));
  fs.writeFileSync(path.join(rec0, 'train.idx'), '');
  const noPairs = path.join(e, 'nopairs.bin');
  writeBin(noPairs, { images: [], issame: [] });
  const zeroBin = path.join(e, 'zero.bin');
  fs.writeFileSync(zeroBin, new Uint8Array(0));
  return { rec0, rec0File: path.join(rec0, 'train.rec'), folder, noPairs, zeroBin };
}

test('library: empty inputs are ArcfaceErrors naming the file', async () => {
  const x = emptyInputs();
  const named = (file: string, re: RegExp) => (e: Error) => {
    assert.ok(e instanceof ArcfaceError, e.name);
    assert.ok(e.message.startsWith(`${file}: `), e.message);
    assert.match(e.message, re);
    return true;
  };
  await assert.rejects(inspectRec(x.rec0), named(x.rec0File, /the pack holds no images$/));
  await assert.rejects(inspectBin(x.noPairs), named(x.noPairs, /it holds no pairs$/));
  assert.throws(() => readBin(x.zeroBin), named(x.zeroBin, /the file is empty \(0 bytes\)$/));
  await assert.rejects(createTrainLoader({ source: RecordIOSource.open(x.rec0), batchSize: 4, workers: 0 }), named(x.rec0File, /the dataset has no images$/));
  assert.throws(() => new ImageFolderSource(x.folder), named(x.folder, /no images found/));
  const jpg = fs.readFileSync(path.join(photos, 'ada', '0.jpg'));
  await assert.rejects(DataLoader.create({ source: new MemorySource('set.bin', [jpg], [-1]), batchSize: 1, workers: 0 }), named('set.bin', /the dataset has no classes \(0\)$/));
  await assert.rejects(readImage(x.folder), named(x.folder, /is a folder, not an image file$/));
});

test('CLI: empty inputs exit 1 with one line naming the file; no Infinity or NaN', async () => {
  const x = emptyInputs();
  const runs = await twoAtATime(5, (i) =>
    arcface(
      [
        ['inspect', x.rec0],
        ['inspect', x.noPairs],
        ['pack', x.folder, '--out', path.join(tmp, 'empty', 'out'), '--no-progress'],
        ['train', '--config', 'tiny', '--rec', x.folder, '--output', path.join(tmp, 'empty', 'run'), '--quiet', '--workers', '1'],
        ['train', '--config', 'tiny', '--rec', x.rec0, '--output', path.join(tmp, 'empty', 'run'), '--quiet', '--workers', '1'],
      ][i]!,
    ),
  );
  const lines = runs.map(errorLine);
  assert.deepEqual(lines, [
    `arcface: error: ${x.rec0File}: the pack holds no images`,
    `arcface: error: ${x.noPairs}: not a verification .bin: it holds no pairs`,
    `arcface: error: ${x.folder}: no images found (expected <identity>/<image>.{jpg,png,webp} in it)`,
    `arcface: error: ${x.folder}: no images found (expected <identity>/<image>.{jpg,png,webp} in it)`,
    `arcface: error: ${x.rec0File}: the dataset has no images`,
  ]);
  for (const r of runs) assert.doesNotMatch(r.stdout + r.stderr, /Infinity|NaN/);
  assert.equal(fs.existsSync(path.join(tmp, 'empty', 'out')), false);
});
