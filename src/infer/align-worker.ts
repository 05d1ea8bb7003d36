// Worker thread of `alignPhotos`: its own tfjs backend and detector, one photo per request.
import { parentPort } from 'node:worker_threads';
import { ArcfaceError } from '../errors.ts';
import { initBackend } from '../backend/select.ts';
import { alignOne, type AlignRequest } from './align-photos.ts';

const port = parentPort;
if (!port) throw new Error('align-worker.ts runs as a worker thread only');

port.on('message', async (m: AlignRequest) => {
  try {
    if (m.type === 'close') {
      port.close();
    } else if (m.type === 'init') {
      await initBackend(m.backend, { quiet: true });
      port.postMessage({ type: 'ready' });
    } else {
      port.postMessage({ type: 'done', record: await alignOne(m.job, m.out, m.opts) });
    }
  } catch (e) {
    port.postMessage({ type: 'error', message: (e as Error).message, arcface: e instanceof ArcfaceError });
  }
});
