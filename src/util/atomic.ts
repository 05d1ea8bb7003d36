// Crash-consistent outputs. Everything is built under a temporary name beside its final name and renamed
// into place once complete, so a process killed at any moment leaves the previous complete output or none
// under the final name. Temporaries carry the writer's host and pid (`.<name>.<kind>-<host>-<pid>`), which
// lets the next writer to a folder tell the leftovers of dead processes from work in progress and remove
// them (sweepTemporaries).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ArcfaceError } from '../errors.ts';

/** This machine's name as it appears in temporary and lock file names. */
export const HOST = os.hostname().replace(/[^A-Za-z0-9.-]/g, '_') || 'localhost';

/**
 * partial: an output being built; old: the previous output moved aside while a folder is switched;
 * commit: the journal of a file set whose temporaries are complete and are being renamed.
 */
export type TemporaryKind = 'partial' | 'old' | 'commit';

/** `dir/.name.<kind>-<host>-<pid><ext>`: hidden, clearly unfinished, and traceable to its writer. */
export function temporaryPath(final: string, kind: TemporaryKind = 'partial', ext = ''): string {
  return path.join(path.dirname(final), `.${path.basename(final)}.${kind}-${HOST}-${process.pid}${ext}`);
}

export interface TemporaryName {
  /** Base name of the output it stands for. */
  final: string;
  kind: TemporaryKind;
  host: string;
  pid: number;
}

const TEMPORARY = /^\.(.+)\.(partial|old|commit)-(.+)-(\d+)(\.[A-Za-z0-9]{1,8})?$/;
// Earlier versions named temporaries without the host: `.name.partial-<pid>` (files) and `name.tmp-<pid>`.
const LEGACY_PARTIAL = /^\.(.+)\.partial-(\d+)(\.[A-Za-z0-9]{1,8})?$/;
const LEGACY_TMP = /^(.+)\.tmp-(\d+)$/;

/**
 * What a directory entry's name says about it, when it is one of our temporaries. With `dir`, the older
 * `name.tmp-<pid>` form is recognised too, but only where it cannot be a user's file: a .pth, or a folder
 * holding a saved model or checkpoint.
 */
export function parseTemporaryName(name: string, dir?: string): TemporaryName | null {
  let m = TEMPORARY.exec(name);
  if (m) return { final: m[1]!, kind: m[2] as TemporaryKind, host: m[3]!, pid: Number(m[4]) };
  m = LEGACY_PARTIAL.exec(name);
  if (m) return { final: m[1]!, kind: 'partial', host: HOST, pid: Number(m[2]) };
  m = LEGACY_TMP.exec(name);
  if (m && dir !== undefined) {
    const p = path.join(dir, name);
    const ours = m[1]!.endsWith('.pth') || ['model.json', 'weights.bin', 'state.json', 'tensors.bin'].some((f) => fs.existsSync(path.join(p, f)));
    if (ours) return { final: m[1]!, kind: 'partial', host: HOST, pid: Number(m[2]) };
  }
  return null;
}

/** Whether `pid` is a live process on this machine (a zombie, killed but not yet reaped, counts as dead). */
export function isProcessAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    if (state === 'Z' || state === 'X') return false;
  } catch {
    // no procfs: trust kill(0)
  }
  return true;
}

/** True for a process of this host that is not this one and no longer runs. */
export function isDeadHere(host: string, pid: number): boolean {
  return host === HOST && pid !== process.pid && !isProcessAlive(pid);
}

function fsyncPath(p: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(p, 'r');
    fs.fsyncSync(fd);
  } catch (e) {
    // Directories cannot be opened or synced on some platforms (Windows); files must sync.
    if (!fs.statSync(p).isDirectory()) throw e;
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/** Flushes every file under `dir`, then the folders themselves, so a rename publishes durable data. */
function fsyncTree(dir: string): void {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) fsyncTree(p);
    else if (e.isFile()) fsyncPath(p);
  }
  fsyncPath(dir);
}

/** System errors (ENOSPC, EACCES, ...) become ArcfaceErrors about the final name; others pass through. */
function writeError(e: unknown, final: string, tmp: string): unknown {
  if (e instanceof ArcfaceError || !(e instanceof Error) || !('code' in e)) return e;
  // Node appends the syscall and the (temporary) path: `ENOSPC: no space left on device, write '<tmp>'`.
  const reason = e.message.split(tmp).join(final).replace(/, \w+ '[^']*'( -> '[^']*')?$/, '');
  return new ArcfaceError(`cannot write: ${reason}`, final);
}

/** Writes `file` through a temporary: `file` is the previous content or the complete new one, never a part. */
export function writeFileAtomic(file: string, data: Uint8Array | string): void {
  sweepTemporaries(path.dirname(file));
  const tmp = temporaryPath(file);
  try {
    const fd = fs.openSync(tmp, 'w');
    try {
      fs.writeFileSync(fd, data);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
    fsyncPath(path.dirname(file));
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw writeError(e, file, tmp);
  }
}

/**
 * Like writeFileAtomic, for writers that need a path: `fill` writes the temporary (which keeps `file`'s
 * extension, for writers that choose the format by it).
 */
export async function writeFileAtomicWith(file: string, fill: (tmp: string) => Promise<void> | void): Promise<void> {
  sweepTemporaries(path.dirname(file));
  const tmp = temporaryPath(file, 'partial', path.extname(file));
  try {
    await fill(tmp);
    fsyncPath(tmp);
    fs.renameSync(tmp, file);
    fsyncPath(path.dirname(file));
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw writeError(e, file, tmp);
  }
}

/**
 * Builds folder `dir` in a temporary folder that `fill` writes, then switches it in. The previous `dir`
 * stays in place until the new one is complete; during the switch (two renames) it waits under an `old`
 * temporary, which the next sweep puts back if the process died between them.
 */
export async function writeFolderAtomic(dir: string, fill: (tmp: string) => Promise<void> | void): Promise<void> {
  const final = dir.replace(/[\\/]+$/, '') || dir;
  const parent = path.dirname(final);
  fs.mkdirSync(parent, { recursive: true });
  sweepTemporaries(parent);
  const tmp = temporaryPath(final);
  const old = temporaryPath(final, 'old');
  fs.rmSync(tmp, { recursive: true, force: true });
  let moved = false;
  try {
    fs.mkdirSync(tmp);
    await fill(tmp);
    fsyncTree(tmp);
    if (fs.existsSync(final)) {
      fs.rmSync(old, { recursive: true, force: true });
      fs.renameSync(final, old);
      moved = true;
    }
    fs.renameSync(tmp, final);
    moved = false;
    fsyncPath(parent);
    fs.rmSync(old, { recursive: true, force: true });
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    if (moved && !fs.existsSync(final)) fs.renameSync(old, final);
    throw writeError(e, final, tmp);
  }
}

interface Journal {
  /** [temporary, final] base names in commit order. */
  files: [string, string][];
}

/**
 * Renames a set's temporaries over its final names so that no reader ever sees a new file beside an old
 * one: the old files go first (the last-named first), then the new ones arrive in order, the last-named
 * (the one whose presence marks a complete set) last. Idempotent: a rerun finishes an interrupted one.
 */
function applyJournal(dir: string, j: Journal): void {
  const pending = j.files.filter(([tmp]) => fs.existsSync(path.join(dir, tmp)));
  for (const [, final] of [...pending].reverse()) fs.rmSync(path.join(dir, final), { force: true });
  for (const [tmp, final] of pending) fs.renameSync(path.join(dir, tmp), path.join(dir, final));
}

/**
 * Several files in one folder that belong together (a pack's .rec, .idx and property): each is written
 * to its temporary, then commit() publishes them as one. The commit first writes a journal; if the
 * process dies during the renames, the next sweep of the folder finishes them from it.
 */
export class AtomicFileSet {
  readonly dir: string;
  /** Where each file is written before commit(), in the order of `finals`. */
  readonly temporaries: string[];
  private state: 'open' | 'committed' | 'aborted' = 'open';

  /** `finals`: one folder; the last one marks a complete set (it is removed first and published last). */
  constructor(readonly finals: string[]) {
    this.dir = path.dirname(finals[0]!);
    if (finals.some((f) => path.dirname(f) !== this.dir)) throw new Error('AtomicFileSet: all files must be in one folder');
    fs.mkdirSync(this.dir, { recursive: true });
    sweepTemporaries(this.dir);
    this.temporaries = finals.map((f) => temporaryPath(f));
  }

  commit(): void {
    if (this.state !== 'open') throw new Error(`AtomicFileSet: already ${this.state}`);
    const journalFile = temporaryPath(this.finals[this.finals.length - 1]!, 'commit');
    try {
      for (const t of this.temporaries) fsyncPath(t);
      const journal: Journal = { files: this.temporaries.map((t, i) => [path.basename(t), path.basename(this.finals[i]!)]) };
      const fd = fs.openSync(journalFile, 'w');
      try {
        fs.writeFileSync(fd, JSON.stringify(journal));
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
      fsyncPath(this.dir);
      applyJournal(this.dir, journal);
      fsyncPath(this.dir);
      fs.rmSync(journalFile, { force: true });
      this.state = 'committed';
    } catch (e) {
      this.abort();
      fs.rmSync(journalFile, { force: true });
      throw writeError(e, this.finals[0]!, this.temporaries[0]!);
    }
  }

  /** Deletes the temporaries; the final names keep what they held. */
  abort(): void {
    if (this.state === 'committed') return;
    this.state = 'aborted';
    for (const t of this.temporaries) fs.rmSync(t, { force: true });
  }
}

/**
 * Cleans up after dead writers in `dir` (processes of this host that no longer run): finishes their
 * interrupted file-set commits, puts back a previous folder left aside mid-switch when nothing replaced it,
 * and deletes their unfinished temporaries. Live writers' temporaries are left alone. Returns the paths
 * removed or restored.
 */
export function sweepTemporaries(dir: string): string[] {
  const done: string[] = [];
  const dead = (): { name: string; t: TemporaryName }[] => {
    let names: string[];
    try {
      names = fs.readdirSync(dir);
    } catch {
      return [];
    }
    return names.flatMap((name) => {
      const t = parseTemporaryName(name, dir);
      return t && isDeadHere(t.host, t.pid) ? [{ name, t }] : [];
    });
  };
  const attempt = (f: () => void): void => {
    try {
      f();
    } catch {
      // another process is sweeping the same entry
    }
  };
  for (const { name } of dead().filter((d) => d.t.kind === 'commit')) {
    const file = path.join(dir, name);
    let journal: Journal | undefined;
    try {
      journal = JSON.parse(fs.readFileSync(file, 'utf8')) as Journal;
      if (!Array.isArray(journal.files) || journal.files.some((p) => !Array.isArray(p) || p.some((s) => typeof s !== 'string' || s.includes('/') || s.includes('\\')))) journal = undefined;
    } catch {
      // a journal cut short: the commit had not started, its temporaries are removed below
    }
    if (journal) attempt(() => applyJournal(dir, journal!));
    attempt(() => fs.rmSync(file, { force: true }));
    done.push(file);
  }
  for (const { name, t } of dead()) {
    const file = path.join(dir, name);
    const final = path.join(dir, t.final);
    if (t.kind === 'old' && !fs.existsSync(final)) attempt(() => fs.renameSync(file, final));
    else attempt(() => fs.rmSync(file, { recursive: true, force: true }));
    done.push(file);
  }
  return done;
}
