// One writer per output: a writer holds `.<name>.lock` beside its output (a file or a folder) while it
// runs. The lock file is created with O_EXCL and says who holds it (pid, host, command, start time), so a
// second writer fails at once naming the first, and the lock of a process that died without releasing it
// (kill -9, power loss) is recognised as stale and taken over.
import fs from 'node:fs';
import path from 'node:path';
import { ArcfaceError } from '../errors.ts';
import { HOST, isProcessAlive } from './atomic.ts';

export interface LockOwner {
  pid: number;
  host: string;
  /** What the holder runs (e.g. `arcface train --output runs/a`). */
  command: string;
  /** ISO time the lock was taken. */
  started: string;
}

/** `<parent>/.<name>.lock`: beside the output, so that replacing the output never touches the lock. */
export function lockFileFor(output: string): string {
  const abs = path.resolve(output);
  const name = path.basename(abs);
  return name ? path.join(path.dirname(abs), `.${name}.lock`) : path.join(abs, '.arcface.lock');
}

/** A lock file older than this with no complete owner record was left by a writer killed while creating it. */
const UNREADABLE_STALE_MS = 5000;

const sleep = (ms: number): void => {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
};

/** The owner record, 'gone' when there is no lock, or null when the file holds no complete record. */
function readOwner(file: string): LockOwner | 'gone' | null {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return 'gone';
    throw e;
  }
  try {
    const o = JSON.parse(text) as LockOwner;
    return Number.isInteger(o.pid) && typeof o.host === 'string' ? { pid: o.pid, host: o.host, command: String(o.command), started: String(o.started) } : null;
  } catch {
    return null;
  }
}

function describe(o: LockOwner): string {
  return `pid ${o.pid} on host ${o.host} (${o.command}, started ${o.started})`;
}

export class OutputLock {
  private held = true;
  private readonly onExit = (): void => this.release();

  /** @internal use acquireOutputLock */
  constructor(
    readonly output: string,
    readonly file: string,
    readonly owner: LockOwner,
  ) {
    // A normal exit, or an error that ends the process, releases the lock; a kill leaves a stale one.
    process.on('exit', this.onExit);
  }

  /** Removes the lock file if this process still holds it. Safe to call more than once. */
  release(): void {
    if (!this.held) return;
    this.held = false;
    process.off('exit', this.onExit);
    const o = readOwner(this.file);
    if (o && o !== 'gone' && o.pid === this.owner.pid && o.host === this.owner.host && o.started === this.owner.started) {
      fs.rmSync(this.file, { force: true });
    }
  }
}

export interface AcquireLockOptions {
  /** Where the note about a taken-over stale lock goes (default: stderr). */
  onNote?: (message: string) => void;
}

/**
 * Takes the lock on `output` for `command`. Throws an ArcfaceError naming the holder when another live
 * process (or a process on another host, whose liveness cannot be checked) holds it; takes over the lock
 * of a dead process of this host with a note.
 */
export function acquireOutputLock(output: string, command: string, opts: AcquireLockOptions = {}): OutputLock {
  const note = opts.onNote ?? ((m: string) => process.stderr.write(`arcface: note: ${m}\n`));
  const file = lockFileFor(output);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const me: LockOwner = { pid: process.pid, host: HOST, command, started: new Date().toISOString() };
  const deadline = Date.now() + 3000;
  for (;;) {
    if (Date.now() > deadline + 2000) throw new ArcfaceError(`could not take the lock file ${file} (it keeps changing)`, output);
    try {
      const fd = fs.openSync(file, 'wx');
      try {
        fs.writeFileSync(fd, `${JSON.stringify(me)}\n`);
      } finally {
        fs.closeSync(fd);
      }
      return new OutputLock(output, file, me);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw new ArcfaceError(`cannot create the lock file: ${(e as Error).message}`, file);
    }
    const other = readOwner(file);
    if (other === 'gone') continue;
    if (other && (other.host !== HOST || other.pid === process.pid || isProcessAlive(other.pid))) {
      const who = other.pid === process.pid && other.host === HOST ? 'this process' : 'another process';
      throw new ArcfaceError(`${output}: is being written by ${who}: ${describe(other)}; lock file ${file}`, output);
    }
    if (!other) {
      let age = 0;
      try {
        age = Date.now() - fs.statSync(file).mtimeMs;
      } catch {
        continue;
      }
      if (age < UNREADABLE_STALE_MS) {
        // Its writer is between creating the file and writing its record.
        if (Date.now() > deadline) throw new ArcfaceError(`is locked (lock file ${file} holds no owner record)`, output);
        sleep(20);
        continue;
      }
    }
    // Stale. One taker at a time (a guard file, itself O_EXCL), which checks the lock is still the same
    // stale one before removing it, so a lock just taken by a third process is never removed.
    const guard = `${file}.takeover`;
    let fd: number;
    try {
      fd = fs.openSync(guard, 'wx');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw new ArcfaceError(`cannot create: ${(e as Error).message}`, guard);
      const g = readOwner(guard);
      let age = 0;
      try {
        age = Date.now() - fs.statSync(guard).mtimeMs;
      } catch {
        continue;
      }
      if ((g && g !== 'gone' && g.host === HOST && !isProcessAlive(g.pid)) || age > UNREADABLE_STALE_MS) fs.rmSync(guard, { force: true });
      else if (Date.now() > deadline) throw new ArcfaceError(`is locked (another process is taking over the stale lock ${file})`, output);
      else sleep(20);
      continue;
    }
    try {
      try {
        fs.writeFileSync(fd, JSON.stringify(me));
      } finally {
        fs.closeSync(fd);
      }
      const again = readOwner(file);
      const same = again === null || other === null ? again === other : again !== 'gone' && JSON.stringify(again) === JSON.stringify(other);
      if (same) {
        fs.rmSync(file, { force: true });
        note(other ? `took over the lock on ${output} from ${describe(other)}, which is no longer running` : `removed the incomplete lock file ${file}`);
      }
    } finally {
      fs.rmSync(guard, { force: true });
    }
  }
}

/** Runs `fn` holding the lock on `output`; the lock is released however `fn` ends. */
export async function withOutputLock<T>(output: string, command: string, fn: () => Promise<T> | T, opts: AcquireLockOptions = {}): Promise<T> {
  const lock = acquireOutputLock(output, command, opts);
  try {
    return await fn();
  } finally {
    lock.release();
  }
}

/** This process's command line as a lock's `command` (`<program> <arguments>`, cut to 300 characters). */
export function commandLine(program = path.basename(process.argv[1] ?? 'node')): string {
  return [program, ...process.argv.slice(2)].join(' ').slice(0, 300);
}
