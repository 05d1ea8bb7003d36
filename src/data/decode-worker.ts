// Worker thread of the decode pool: opens the source from its spec once, then fills batch slots on request.
import { parentPort } from 'node:worker_threads';
import { ArcfaceError } from '../errors.ts';
import { fillSlots, type FillOptions, type FillTask } from './fill.ts';
import { openSourceFromSpec } from './open-source.ts';
import type { ImageSource, SourceSpec } from './source.ts';

export type WorkerRequest =
  | { type: 'init'; spec: SourceSpec; opts: FillOptions }
  | ({ type: 'task'; id: number; images: Float32Array; labels: Int32Array } & FillTask)
  | { type: 'close' };

export type WorkerReply =
  | { type: 'ready' }
  | { type: 'done'; id: number; notes: Awaited<ReturnType<typeof fillSlots>> }
  | { type: 'error'; id: number; message: string; arcface: boolean; file?: string };

const port = parentPort;
if (!port) throw new Error('decode-worker.ts runs as a worker thread only');

let source: ImageSource | null = null;
let opts: FillOptions | null = null;
let scratch: Uint8Array | undefined;
// Tasks run one at a time in arrival order; JPEG decoding is synchronous anyway.
let chain: Promise<void> = Promise.resolve();

port.on('message', (msg: WorkerRequest) => {
  if (msg.type === 'init') {
    source = openSourceFromSpec(msg.spec);
    opts = msg.opts;
    scratch = new Uint8Array(opts.inputSize * opts.inputSize * 3);
    port.postMessage({ type: 'ready' } satisfies WorkerReply);
  } else if (msg.type === 'task') {
    chain = chain.then(async () => {
      try {
        const notes = await fillSlots(source!, msg, msg.images, msg.labels, opts!, scratch);
        port.postMessage({ type: 'done', id: msg.id, notes } satisfies WorkerReply);
      } catch (e) {
        const err = e as Error;
        const arcface = err instanceof ArcfaceError;
        port.postMessage({ type: 'error', id: msg.id, message: err.message, arcface, file: arcface ? err.file : undefined } satisfies WorkerReply);
      }
    });
  } else if (msg.type === 'close') {
    void chain.then(() => {
      source?.close();
      port.close();
    });
  }
});
