// Worker threads on the project's own modules: compiled JavaScript starts directly; TypeScript sources
// (tests, development) start through tsx's loader registered inside the thread.
import { Worker } from 'node:worker_threads';

export function startWorker(url: URL): Worker {
  if (url.pathname.endsWith('.js')) return new Worker(url);
  const tsx = import.meta.resolve('tsx/esm/api');
  const code = `import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(url.href)}); })`;
  return new Worker(code, { eval: true });
}
