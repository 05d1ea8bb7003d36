// Running the CLI as child processes and killing them at chosen moments (crash-consistency and lock tests).
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { REPO_ROOT } from './fixtures.ts';

export interface Finished {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface Child {
  proc: ChildProcess;
  /** Resolves once the process has exited (and been reaped). */
  done: Promise<Finished>;
}

/** Starts `arcface <args>` on the cpu backend. */
export function startCli(args: string[], env: Record<string, string> = {}): Child {
  const proc = spawn(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'src/cli/main.ts'), ...args], {
    cwd: REPO_ROOT,
    env: { ...process.env, ARCFACE_BACKEND: 'cpu', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  proc.stdout!.on('data', (d) => (stdout += d));
  proc.stderr!.on('data', (d) => (stderr += d));
  const done = new Promise<Finished>((resolve) => proc.on('close', (code, signal) => resolve({ code, signal, stdout, stderr })));
  return { proc, done };
}

export const runCli = (args: string[], env?: Record<string, string>): Promise<Finished> => startCli(args, env).done;

const tick = (ms = 1): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls until `cond` holds (true) or the child exits (false). */
export async function waitFor(child: Child, cond: () => boolean): Promise<boolean> {
  let exited = false;
  void child.done.then(() => (exited = true));
  while (!exited) {
    if (cond()) return true;
    await tick();
  }
  return false;
}

export interface KillResult extends Finished {
  /** Killed by SIGKILL (false: it finished before the moment came). */
  killed: boolean;
  /** A temporary matching `match` existed in `dir` just before the kill. */
  inWrite: boolean;
  pid: number;
}

/**
 * Runs `args` and kills it with SIGKILL `delayMs` after the `nth` appearance of an entry of `dir` that
 * `match` accepts for the child's pid (appearance: absent at one poll, present at the next).
 */
export async function killDuringWrite(args: string[], o: { dir: string; match: (name: string, pid: number) => boolean; nth?: number; delayMs: number; env?: Record<string, string> }): Promise<KillResult> {
  const child = startCli(args, o.env);
  const pid = child.proc.pid!;
  const present = (): boolean => {
    try {
      return fs.readdirSync(o.dir).some((n) => o.match(n, pid));
    } catch {
      return false;
    }
  };
  let seen = 0;
  let was = false;
  const reached = await waitFor(child, () => {
    const now = present();
    if (now && !was) seen++;
    was = now;
    return seen >= (o.nth ?? 1);
  });
  let inWrite = false;
  if (reached) {
    if (o.delayMs > 0) await tick(o.delayMs);
    inWrite = present();
    child.proc.kill('SIGKILL');
  }
  const f = await child.done;
  return { ...f, killed: f.signal === 'SIGKILL', inWrite, pid: child.proc.pid! };
}

/** A small seeded generator for kill delays: the tests' one PRNG (mulberry32). */
export { prng as seeded } from './random-weights.ts';
