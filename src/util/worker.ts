// Worker threads on the project's own modules: compiled JavaScript starts directly; TypeScript sources
// (tests, development) start through tsx's loader registered inside the thread.
import { Worker } from 'node:worker_threads';

/**
 * A module beside `base` (an `import.meta.url`): its `.ts` source when running from source, its compiled
 * `.js` in dist/ — `new URL('./x.ts', import.meta.url)` alone is not rewritten by the build.
 */
export function siblingModule(base: string, name: string): URL {
  return new URL(`./${name}${base.endsWith('.ts') ? '.ts' : '.js'}`, base);
}

export function startWorker(url: URL): Worker {
  if (url.pathname.endsWith('.js')) return new Worker(url);
  const tsx = import.meta.resolve('tsx/esm/api');
  const code = `import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(url.href)}); })`;
  return new Worker(code, { eval: true });
}
