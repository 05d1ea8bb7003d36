// A pool of worker threads that read, decode and normalise images straight into shared batch memory.
// Each worker opens the source itself (positioned reads of the .rec), so the main thread only hands out
// slot ranges and never touches pixels.
import type { Worker } from 'node:worker_threads';
import { siblingModule, startWorker } from '../util/worker.ts';
import { ArcfaceError } from '../errors.ts';
import type { WorkerReply, WorkerRequest } from './decode-worker.ts';
import type { FillOptions, FillTask, SkipNote } from './fill.ts';
import type { SourceSpec } from './source.ts';

interface Pending {
  resolve: (notes: SkipNote[]) => void;
  reject: (e: Error) => void;
  worker: number;
}

// Compiled (dist/*.js) the pool starts the compiled worker; run from source (tsx) the TypeScript one.
const WORKER_URL = siblingModule(import.meta.url, 'decode-worker');

export class DecodePool {
  private readonly workers: Worker[] = [];
  private readonly load: number[] = [];
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private failed: Error | null = null;
  private closed = false;

  private constructor(readonly size: number) {}

  /** Starts `n` workers on the source described by `spec` and waits until each has opened it. */
  static async create(spec: SourceSpec, n: number, opts: FillOptions): Promise<DecodePool> {
    if (!Number.isInteger(n) || n < 1) throw new ArcfaceError(`the \`workers\` option must be a positive integer, got ${n}`);
    const pool = new DecodePool(n);
    const ready: Promise<void>[] = [];
    for (let w = 0; w < n; w++) {
      const worker = startWorker(WORKER_URL);
      pool.workers.push(worker);
      pool.load.push(0);
      ready.push(
        new Promise<void>((resolve, reject) => {
          const onFirst = (m: WorkerReply): void => {
            if (m.type === 'ready') {
              worker.off('message', onFirst);
              resolve();
            }
          };
          worker.on('message', onFirst);
          worker.once('error', reject);
          worker.once('exit', (code) => reject(new Error(`decode worker exited with code ${code} while starting`)));
        }),
      );
      worker.on('message', (m: WorkerReply) => pool.onReply(w, m));
      worker.on('error', (e) => pool.fail(new Error(`decode worker ${w} crashed: ${e.message}`)));
      worker.on('exit', (code) => {
        if (!pool.closed) pool.fail(new Error(`decode worker ${w} exited unexpectedly (code ${code})`));
      });
      worker.postMessage({ type: 'init', spec, opts } satisfies WorkerRequest);
    }
    try {
      await Promise.all(ready);
      for (const w of pool.workers) w.unref();
    } catch (e) {
      await pool.close();
      throw e;
    }
    return pool;
  }

  /** Fills the task's slots of `images`/`labels` (shared memory) on the least busy worker. */
  run(task: FillTask, images: Float32Array, labels: Int32Array): Promise<SkipNote[]> {
    if (this.failed) return Promise.reject(this.failed);
    if (this.closed) return Promise.reject(new Error('decode pool is closed'));
    let w = 0;
    for (let i = 1; i < this.size; i++) if (this.load[i] < this.load[w]) w = i;
    const id = this.nextId++;
    if (this.load[w]++ === 0) this.workers[w].ref();
    return new Promise<SkipNote[]>((resolve, reject) => {
      this.pending.set(id, { resolve, reject, worker: w });
      this.workers[w].postMessage({ type: 'task', id, images, labels, ...task } satisfies WorkerRequest);
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // Settle what is still queued and ignore later replies: a late 'done' of an abandoned look-ahead task
    // used to unref its worker again while we waited for that worker's exit, so the event loop could run
    // dry first and a pending top-level await ended the process with code 13. terminate() refs the worker.
    this.fail(new Error('decode pool closed'));
    await Promise.all(this.workers.map((w) => w.terminate()));
  }

  private onReply(w: number, m: WorkerReply): void {
    if (m.type === 'ready' || this.closed) return;
    const p = this.pending.get(m.id);
    if (!p) return;
    this.pending.delete(m.id);
    // An idle pool must not keep the process alive if the caller forgets close().
    // Not once close() has ref'd it to wait for its exit: replies queued behind a long synchronous step
    // arrive after close() began, and an unref here would let the loop run dry (exit code 13).
    if (--this.load[w] === 0 && !this.closed) this.workers[w].unref();
    if (m.type === 'done') p.resolve(m.notes);
    else p.reject(m.arcface ? new ArcfaceError(m.message, m.file) : new Error(m.message));
  }

  private fail(e: Error): void {
    this.failed ??= e;
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
  }
}
