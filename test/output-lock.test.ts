// One writer per output, through the CLI: a second `train` into a running run's folder and a second `pack`
// to a running pack's --out exit 1 before any work, naming the first (pid, host, command); the first is
// unaffected (a pack is held mid-way by a named pipe among its images); the lock of a killed writer is taken over by the next run with a note.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { RecordIOSource } from '../src/data/rec-source.ts';
import { HOST } from '../src/util/atomic.ts';
import { lockFileFor } from '../src/util/lock.ts';
import { runCli, startCli, waitFor, type Child } from './helpers/children.ts';
import { sharedFixture, skipUnlessFixture } from './helpers/fixtures.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'arcface-lock-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Waits until `child` holds the lock on `out`. */
async function holding(child: Child, out: string): Promise<void> {
  const held = await waitFor(child, () => {
    try {
      return JSON.parse(fs.readFileSync(lockFileFor(out), 'utf8')).pid === child.proc.pid;
    } catch {
      return false;
    }
  });
  if (!held) assert.fail(`the first writer never took the lock: ${JSON.stringify(await child.done)}`);
}

const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

test('two train runs into one output folder: the second exits 1 at once naming the first; a killed run\'s lock is taken over', { skip: skipUnlessFixture('rec_insightface') }, async () => {
  const out = path.join(tmp, 'run');
  const args = (steps: number): string[] => [
    'train', '--config', 'tiny', '--rec', sharedFixture('rec_insightface')!, '--output', out, '--quiet', '--max-steps', String(steps),
    '--set', 'layers=[1,1,1,1]', '--set', 'widths=[4,8,8,16]', '--set', 'input_size=32', '--set', 'embedding_size=16',
    '--set', 'batch_size=8', '--set', 'val_targets=[]', '--set', 'num_workers=0',
  ];
  // The first runs for minutes (many epochs); it is killed below.
  const first = startCli([...args(5000), '--set', 'num_epoch=1000']);
  try {
    await holding(first, out);
    const second = await runCli(args(1));
    assert.equal(second.code, 1, second.stderr);
    assert.match(second.stderr, new RegExp(`^arcface: error: ${escape(out)}: is being written by another process: pid ${first.proc.pid} on host ${escape(HOST)} \\(arcface train --config tiny .*--output ${escape(out)} .*, started \\d{4}-\\d\\d-\\d\\dT[^)]+\\); lock file ${escape(lockFileFor(out))}\\n$`));
    assert.doesNotMatch(second.stderr, /using the .* backend/, 'failed before any work');
    assert.equal(JSON.parse(fs.readFileSync(lockFileFor(out), 'utf8')).pid, first.proc.pid, 'the first keeps its lock');
  } finally {
    first.proc.kill('SIGKILL');
  }
  await first.done;
  const third = await runCli(args(1));
  assert.equal(third.code, 0, third.stderr);
  assert.match(third.stderr, new RegExp(`arcface: note: took over the lock on ${escape(out)} from pid ${first.proc.pid} on host ${escape(HOST)} \\(arcface train .*\\), which is no longer running`));
  assert.equal(JSON.parse(third.stdout).steps, 1);
  assert.ok(!fs.existsSync(lockFileFor(out)), 'released at exit');
});

test('two packs to one --out: the second exits 1 naming the first, which completes; a killed pack\'s lock is taken over', async () => {
  const photos = path.join(tmp, 'photos');
  for (let c = 0; c < 3; c++) {
    fs.mkdirSync(path.join(photos, `p${c}`), { recursive: true });
    for (let i = 0; i < 4; i++) {
      const px = new Uint8Array(112 * 112 * 3).map((_, j) => (c * 40 + i * 9 + (j % 37)) & 255);
      await sharp(px, { raw: { width: 112, height: 112, channels: 3 } }).jpeg().toFile(path.join(photos, `p${c}`, `${i}.jpg`));
    }
  }
  // The first pack reads a named pipe as its last image: it holds the lock, blocked, until the test writes
  // the image into the pipe.
  const fifo = path.join(photos, 'p2', '9.jpg');
  const image = fs.readFileSync(path.join(photos, 'p2', '0.jpg'));
  const makeFifo = (): void => assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
  makeFifo();
  const out = path.join(tmp, 'pack');
  const first = startCli(['pack', photos, '--out', out, '--no-progress']);
  try {
    await holding(first, out);
    const second = await runCli(['pack', photos, '--out', out, '--force', '--no-progress']);
    assert.equal(second.code, 1);
    assert.match(second.stderr, new RegExp(`^arcface: error: ${escape(out)}: is being written by another process: pid ${first.proc.pid} on host ${escape(HOST)} \\(arcface pack ${escape(photos)} --out ${escape(out)} --no-progress, started [^)]+\\)`));
    fs.writeFileSync(fifo, image);
    const r = await first.done;
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).images, 13, 'the first pack is complete and not replaced');
  } finally {
    first.proc.kill('SIGKILL');
  }
  const src = RecordIOSource.open(out);
  assert.equal(src.length, 13);
  src.close();
  assert.ok(!fs.existsSync(lockFileFor(out)), 'released at exit');

  // A pack killed while holding the lock: the next one takes it over and replaces the pack.
  fs.rmSync(fifo);
  makeFifo();
  const killed = startCli(['pack', photos, '--out', out, '--force', '--no-progress']);
  await holding(killed, out);
  killed.proc.kill('SIGKILL');
  await killed.done;
  fs.rmSync(fifo);
  fs.writeFileSync(fifo, image);
  const next = await runCli(['pack', photos, '--out', out, '--force', '--no-progress']);
  assert.equal(next.code, 0, next.stderr);
  assert.match(next.stderr, new RegExp(`arcface: note: took over the lock on ${escape(out)} from pid ${killed.proc.pid} on host ${escape(HOST)} \\(arcface pack .*\\), which is no longer running`));
  assert.deepEqual(fs.readdirSync(out).sort(), ['property', 'train.idx', 'train.rec']);
});
