// Fuzz driver: hands seeded cases to child processes (fuzz-child.ts), each with a heap limit, one case
// in flight per child and a wall-clock limit per case. A child that stops answering is killed and its
// case counted as a hang; one that dies of memory exhaustion, as an OOM; it is then started afresh.
import { fork, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { CaseRequest, CaseResult, Outcome } from './fuzz-child.ts';

export type { CaseResult } from './fuzz-child.ts';

export interface FormatSummary {
  format: string;
  mutations: number;
  ok: number;
  clean: number;
  crash: number;
  hang: number;
  oom: number;
  /** Every case that was not ok or clean. */
  failures: CaseResult[];
}

export interface FuzzOptions {
  formats: readonly string[];
  /** Cases per format. */
  count: number;
  /** Base seed: the same seed gives the same cases. */
  seed: number;
  /** Child processes run side by side (default 1). */
  workers?: number;
  /** Wall-clock limit of one case, ms (default 30 s: the model importers are slow on a loaded machine). */
  timeoutMs?: number;
  /** --max-old-space-size of each child, MB (default 1024). */
  heapMb?: number;
  /** Cases one child runs before it is replaced (keeps leaks of one case from reaching the next ones). */
  recycle?: number;
  onResult?: (r: CaseResult) => void;
}

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fuzz-child.ts');

class Child {
  readonly proc: ChildProcess;
  stderr = '';
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private ready: Promise<void>;
  served = 0;

  constructor(heapMb: number) {
    this.proc = fork(CHILD, [], {
      execArgv: ['--import', 'tsx', `--max-old-space-size=${heapMb}`],
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    });
    this.proc.stderr!.on('data', (d: Buffer) => {
      this.stderr = (this.stderr + d.toString()).slice(-4000);
    });
    this.exited = new Promise((resolve) => this.proc.once('exit', (code, signal) => resolve({ code, signal })));
    this.ready = new Promise((resolve, reject) => {
      const onMsg = (m: { type: string }) => {
        if (m.type === 'ready') {
          this.proc.off('message', onMsg);
          resolve();
        }
      };
      this.proc.on('message', onMsg);
      void this.exited.then(({ code, signal }) => reject(new Error(`fuzz child failed to start (exit ${code ?? signal}): ${this.stderr}`)));
    });
  }

  /** Runs one case; never rejects for the case's own failures. */
  async run(req: CaseRequest, timeoutMs: number): Promise<CaseResult> {
    await this.ready;
    this.served++;
    let mutations: string[] = [];
    return new Promise<CaseResult>((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const done = (r: CaseResult) => {
        clearTimeout(timer);
        this.proc.off('message', onMsg);
        resolve(r);
      };
      const arm = () => {
        clearTimeout(timer);
        timer = setTimeout(() => {
          this.proc.kill('SIGKILL');
          done({ format: req.format, index: req.index, outcome: 'hang', mutations, detail: `no answer within ${timeoutMs} ms` });
        }, timeoutMs);
      };
      const onMsg = (m: { type: string } & Partial<CaseResult>) => {
        if (m.type === 'start') {
          mutations = m.mutations ?? [];
          arm(); // the limit covers the read, not the making of the case
        } else if (m.type === 'result') {
          done(m as CaseResult);
        }
      };
      this.proc.on('message', onMsg);
      void this.exited.then(({ code, signal }) => {
        const oom = /heap out of memory|Reached heap limit|Allocation failed|OOM/i.test(this.stderr);
        const outcome: Outcome = oom ? 'oom' : 'crash';
        done({ format: req.format, index: req.index, outcome, mutations, detail: `child died (exit ${code ?? signal}): ${this.stderr.slice(-600)}` });
      });
      arm();
      this.proc.send(req);
    });
  }

  get alive(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  async close(): Promise<void> {
    if (this.alive) {
      this.proc.kill('SIGKILL');
      await this.exited;
    }
  }
}

export async function runFuzz(opts: FuzzOptions): Promise<FormatSummary[]> {
  const timeoutMs = opts.timeoutMs ?? 30000;
  const heapMb = opts.heapMb ?? 1024;
  const recycle = opts.recycle ?? 60;
  const queue: CaseRequest[] = [];
  for (const format of opts.formats) for (let index = 0; index < opts.count; index++) queue.push({ format, index, seed: opts.seed });
  const summaries = new Map<string, FormatSummary>(
    opts.formats.map((f) => [f, { format: f, mutations: 0, ok: 0, clean: 0, crash: 0, hang: 0, oom: 0, failures: [] }]),
  );
  const worker = async () => {
    let child: Child | undefined;
    try {
      for (let req = queue.shift(); req; req = queue.shift()) {
        if (!child || !child.alive || child.served >= recycle) {
          await child?.close();
          child = new Child(heapMb);
        }
        const res = await child.run(req, timeoutMs);
        const s = summaries.get(res.format)!;
        s.mutations++;
        s[res.outcome]++;
        if (res.outcome !== 'ok' && res.outcome !== 'clean') s.failures.push(res);
        opts.onResult?.(res);
        if (res.outcome !== 'ok' && res.outcome !== 'clean') await child.close();
      }
    } finally {
      await child?.close();
    }
  };
  await Promise.all(Array.from({ length: opts.workers ?? 1 }, worker));
  return [...summaries.values()];
}
