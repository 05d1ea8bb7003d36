// src/util/atomic.ts and src/util/lock.ts in-process: temporaries are named after their writer, failed
// writes leave the previous output and no temporary, the sweep finishes or removes exactly what dead
// writers left (and nothing of live ones, other hosts or users), and the output lock names its holder.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { AtomicFileSet, HOST, isProcessAlive, parseTemporaryName, sweepTemporaries, temporaryPath, writeFileAtomic, writeFileAtomicWith, writeFolderAtomic } from '../src/util/atomic.ts';
import { acquireOutputLock, lockFileFor, withOutputLock } from '../src/util/lock.ts';
import { ArcfaceError } from '../src/errors.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'arcface-atomic-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** The pid of a process that has exited (and been reaped). */
let deadPid = 0;
before(() => {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  deadPid = Number(r.stdout);
  assert.ok(deadPid > 0 && !isProcessAlive(deadPid));
});

const ls = (dir: string): string[] => fs.readdirSync(dir).sort();
const deadName = (final: string, kind = 'partial', ext = ''): string => `.${final}.${kind}-${HOST}-${deadPid}${ext}`;

test('temporary names carry host and pid and parse back; user files do not parse', () => {
  const t = temporaryPath('/x/y/train.rec');
  assert.equal(t, `/x/y/.train.rec.partial-${HOST}-${process.pid}`);
  assert.deepEqual(parseTemporaryName(path.basename(t)), { final: 'train.rec', kind: 'partial', host: HOST, pid: process.pid });
  assert.deepEqual(parseTemporaryName(`.roc.png.partial-my-host.lan-42.png`), { final: 'roc.png', kind: 'partial', host: 'my-host.lan', pid: 42 });
  assert.deepEqual(parseTemporaryName('.checkpoint.old-h-7'), { final: 'checkpoint', kind: 'old', host: 'h', pid: 7 });
  assert.deepEqual(parseTemporaryName('.train.rec.partial-123'), { final: 'train.rec', kind: 'partial', host: HOST, pid: 123 }, 'the earlier form');
  for (const n of ['train.rec', '.hidden', 'notes.tmp-2024', '.a.partial-', 'a.partial-h-1']) assert.equal(parseTemporaryName(n, tmp), null, n);
});

test('writeFileAtomic replaces whole; a failing writer leaves the previous file and no temporary', async () => {
  const dir = path.join(tmp, 'file');
  fs.mkdirSync(dir);
  const f = path.join(dir, 'a.bin');
  writeFileAtomic(f, 'old');
  writeFileAtomic(f, new Uint8Array([1, 2, 3]));
  assert.deepEqual([...fs.readFileSync(f)], [1, 2, 3]);
  await assert.rejects(
    writeFileAtomicWith(f, (t) => {
      assert.ok(t.endsWith('.bin'), 'the temporary keeps the extension');
      fs.writeFileSync(t, 'half');
      throw new Error('writer failed');
    }),
    /writer failed/,
  );
  assert.deepEqual([...fs.readFileSync(f)], [1, 2, 3]);
  assert.deepEqual(ls(dir), ['a.bin']);
  // A system error names the final file, not the temporary.
  assert.throws(() => writeFileAtomic(path.join(dir, 'no-such-dir', 'b.bin'), 'x'), (e: Error) => e instanceof ArcfaceError && /no-such-dir\/b\.bin: cannot write: ENOENT/.test(e.message) && !e.message.includes('partial'));
});

test('writeFolderAtomic keeps the previous folder until the new one is complete', async () => {
  const dir = path.join(tmp, 'folder');
  const out = path.join(dir, 'model');
  await writeFolderAtomic(out, (t) => fs.writeFileSync(path.join(t, 'v'), '1'));
  await assert.rejects(
    writeFolderAtomic(out, (t) => {
      fs.writeFileSync(path.join(t, 'v'), '2');
      assert.equal(fs.readFileSync(path.join(out, 'v'), 'utf8'), '1', 'previous folder in place while the new one is built');
      throw new Error('stop');
    }),
    /stop/,
  );
  assert.equal(fs.readFileSync(path.join(out, 'v'), 'utf8'), '1');
  await writeFolderAtomic(out + '/', (t) => fs.writeFileSync(path.join(t, 'v'), '3'));
  assert.equal(fs.readFileSync(path.join(out, 'v'), 'utf8'), '3');
  assert.deepEqual(ls(dir), ['model']);
  assert.deepEqual(ls(out), ['v']);
});

test('AtomicFileSet publishes all files or none; abort keeps the previous set', () => {
  const dir = path.join(tmp, 'set');
  const finals = ['a.rec', 'a.idx', 'property'].map((f) => path.join(dir, f));
  const write = (tag: string): AtomicFileSet => {
    const s = new AtomicFileSet(finals);
    s.temporaries.forEach((t, i) => fs.writeFileSync(t, `${tag}${i}`));
    return s;
  };
  write('old').commit();
  write('new').abort();
  assert.deepEqual(finals.map((f) => fs.readFileSync(f, 'utf8')), ['old0', 'old1', 'old2']);
  write('new').commit();
  assert.deepEqual(finals.map((f) => fs.readFileSync(f, 'utf8')), ['new0', 'new1', 'new2']);
  assert.deepEqual(ls(dir), ['a.idx', 'a.rec', 'property']);
});

test('sweep: a dead writer killed at each step of a set commit -> the next sweep finishes the commit', () => {
  // The commit removes the old files (last-named first), then renames the new ones in order: 6 steps.
  for (let k = 0; k <= 6; k++) {
    const dir = path.join(tmp, `journal${k}`);
    fs.mkdirSync(dir);
    const names = ['train.rec', 'train.idx', 'property'];
    for (const n of names) fs.writeFileSync(path.join(dir, n), `old ${n}`);
    const files = names.map((n) => [deadName(n), n] as [string, string]);
    for (const [t, n] of files) fs.writeFileSync(path.join(dir, t), `new ${n}`);
    fs.writeFileSync(path.join(dir, deadName('property', 'commit')), JSON.stringify({ files }));
    const steps = [...[...files].reverse().map(([, n]) => () => fs.rmSync(path.join(dir, n))), ...files.map(([t, n]) => () => fs.renameSync(path.join(dir, t), path.join(dir, n)))];
    steps.slice(0, k).forEach((s) => s());
    // What a reader sees mid-commit is never a mix: every present file is from one version.
    const seen = new Set(names.filter((n) => fs.existsSync(path.join(dir, n))).map((n) => fs.readFileSync(path.join(dir, n), 'utf8').split(' ')[0]));
    assert.ok(seen.size <= 1, `step ${k}: ${[...seen]}`);
    sweepTemporaries(dir);
    assert.deepEqual(ls(dir), ['property', 'train.idx', 'train.rec'], `step ${k}`);
    assert.deepEqual(names.map((n) => fs.readFileSync(path.join(dir, n), 'utf8')), names.map((n) => `new ${n}`), `step ${k}`);
  }
  // A journal cut short means the commit never started: the temporaries go, the old set stays.
  const dir = path.join(tmp, 'journal-cut');
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'train.rec'), 'old');
  fs.writeFileSync(path.join(dir, deadName('train.rec')), 'new');
  fs.writeFileSync(path.join(dir, deadName('train.rec', 'commit')), '{"files":[[".train.rec.par');
  sweepTemporaries(dir);
  assert.deepEqual(ls(dir), ['train.rec']);
  assert.equal(fs.readFileSync(path.join(dir, 'train.rec'), 'utf8'), 'old');
});

test('sweep: removes dead temporaries, restores a folder left aside mid-switch, keeps everything else', async () => {
  const dir = path.join(tmp, 'sweep');
  fs.mkdirSync(dir);
  const live = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)']);
  try {
    const mk = (name: string, folder = false): void => {
      if (folder) {
        fs.mkdirSync(path.join(dir, name, 'sub'), { recursive: true });
        fs.writeFileSync(path.join(dir, name, 'sub', 'x'), name);
      } else fs.writeFileSync(path.join(dir, name), name);
    };
    mk(deadName('train.rec')); // dead: removed
    mk(deadName('checkpoint'), true); // dead folder: removed
    mk(deadName('roc.png', 'partial', '.png')); // dead, with extension: removed
    mk(`.train.rec.partial-${deadPid}`); // the earlier form: removed
    mk(`backbone.pth.tmp-${deadPid}`); // the earlier form of .pth temporaries: removed
    mk(deadName('model', 'old'), true); // previous folder, nothing replaced it: restored as model/
    mk('best', true);
    mk(deadName('best', 'old'), true); // previous folder, replaced: removed
    mk(`.a.bin.partial-${HOST}-${live.pid}`); // live writer: kept
    mk(`.a.bin.partial-${HOST}-${process.pid}`); // this process: kept
    mk(`.a.bin.partial-otherhost-${deadPid}`); // another host: kept
    mk(`notes.tmp-${deadPid}`); // a user's file: kept
    const done = sweepTemporaries(dir);
    assert.equal(done.length, 7);
    assert.deepEqual(ls(dir), [`.a.bin.partial-${HOST}-${live.pid}`, `.a.bin.partial-${HOST}-${process.pid}`, `.a.bin.partial-otherhost-${deadPid}`, 'best', 'model', `notes.tmp-${deadPid}`].sort());
    assert.equal(fs.readFileSync(path.join(dir, 'model', 'sub', 'x'), 'utf8'), deadName('model', 'old'));
    assert.equal(fs.readFileSync(path.join(dir, 'best', 'sub', 'x'), 'utf8'), 'best');
    // A write to the folder sweeps it too.
    mk(deadName('b.bin'));
    writeFileAtomic(path.join(dir, 'b.bin'), 'b');
    assert.ok(!fs.existsSync(path.join(dir, deadName('b.bin'))));
  } finally {
    live.kill('SIGKILL');
  }
});

test('lock: a second writer fails naming the holder; a dead holder\'s lock is taken over with a note; released after', async () => {
  const out = path.join(tmp, 'lock', 'run');
  const file = lockFileFor(out);
  assert.equal(file, path.join(tmp, 'lock', '.run.lock'));
  const lock = acquireOutputLock(out, 'arcface train --output run');
  const owner = JSON.parse(fs.readFileSync(file, 'utf8'));
  assert.deepEqual([owner.pid, owner.host, owner.command], [process.pid, HOST, 'arcface train --output run']);
  assert.throws(() => acquireOutputLock(out, 'x'), (e: Error) => e instanceof ArcfaceError && e.message.includes(`run: is being written by this process: pid ${process.pid} on host ${HOST} (arcface train --output run, started ${owner.started})`));
  lock.release();
  lock.release();
  assert.ok(!fs.existsSync(file));

  // Held by a live process (a child) -> refused, naming it.
  const live = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)']);
  try {
    fs.writeFileSync(file, JSON.stringify({ pid: live.pid, host: HOST, command: 'arcface pack x --out run', started: '2026-01-01T00:00:00.000Z' }));
    assert.throws(() => acquireOutputLock(out, 'y'), new RegExp(`is being written by another process: pid ${live.pid} on host ${HOST} \\(arcface pack x --out run, started 2026-01-01T00:00:00.000Z\\)`));
    // Another host's lock cannot be checked: refused even with a pid that is dead here.
    fs.writeFileSync(file, JSON.stringify({ pid: deadPid, host: 'elsewhere', command: 'c', started: 's' }));
    assert.throws(() => acquireOutputLock(out, 'y'), /pid \d+ on host elsewhere/);
  } finally {
    live.kill('SIGKILL');
  }

  // Dead holder on this host -> taken over, with a note.
  fs.writeFileSync(file, JSON.stringify({ pid: deadPid, host: HOST, command: 'arcface train', started: 's' }));
  const notes: string[] = [];
  const value = await withOutputLock(out, 'z', () => {
    assert.equal(JSON.parse(fs.readFileSync(file, 'utf8')).pid, process.pid);
    return 42;
  }, { onNote: (m) => notes.push(m) });
  assert.equal(value, 42);
  assert.deepEqual(notes, [`took over the lock on ${out} from pid ${deadPid} on host ${HOST} (arcface train, started s), which is no longer running`]);
  assert.ok(!fs.existsSync(file), 'released when the function ends');

  // A lock file with no owner record, old enough: left by a writer killed while creating it.
  fs.writeFileSync(file, '');
  const t = new Date(Date.now() - 60_000);
  fs.utimesSync(file, t, t);
  acquireOutputLock(out, 'w', { onNote: (m) => notes.push(m) }).release();
  assert.match(notes[1]!, /removed the incomplete lock file/);
  assert.deepEqual(ls(path.dirname(file)), []);
});
