// Shared bench plumbing: JSON lines on stdout, which backends exist here, forward cost per model.
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/select.ts';

/** Multiply-accumulates per 112x112 image (insightface's published model sizes); FLOPs = 2 x MACs. */
export const GMACS_112: Record<string, number> = { r18: 2.61, r34: 3.6, r50: 6.31, r100: 12.09, r200: 23.5, mbf: 0.4375 };

export function emit(row: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(row)}\n`);
}

export function peakRssMiB(): number {
  return Math.round(process.resourceUsage().maxRSS / 1024);
}

/** Backends that initialise here (tensorflow only where tfjs-node is installed). */
export async function presentBackends(wanted?: string): Promise<string[]> {
  const names = wanted ? wanted.split(',') : ['tensorflow', 'wasm', 'cpu'];
  const ok: string[] = [];
  for (const n of names) {
    try {
      await initBackend(n, { quiet: true });
      ok.push(n);
    } catch {
      // not installed here
    }
  }
  return ok;
}

/** Runs `fn` until `minSeconds` have passed (at least `minRuns` times) after one warm-up; median ms. */
export async function timeIt(fn: () => Promise<void> | void, minSeconds = 3, minRuns = 3): Promise<{ medianMs: number; runs: number }> {
  await fn();
  const times: number[] = [];
  const start = performance.now();
  while (times.length < minRuns || performance.now() - start < minSeconds * 1000) {
    const t = performance.now();
    await fn();
    times.push(performance.now() - t);
  }
  times.sort((a, b) => a - b);
  return { medianMs: times[Math.floor(times.length / 2)]!, runs: times.length };
}

export function arg(name: string, fallback?: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

export { tf };
