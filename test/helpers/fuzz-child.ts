// Fuzz child process: takes cases from the parent over IPC, one at a time, makes each mutated input,
// reads it and reports the outcome. A case that hangs or runs out of memory takes the process with it;
// the parent (fuzz-run.ts) attributes that to the case in flight.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ArcfaceError } from '../../src/errors.ts';
import { FORMATS, type FuzzFormat } from './fuzz-formats.ts';
import { Rng, seedOf } from './fuzz-mutate.ts';

export interface CaseRequest {
  format: string;
  index: number;
  seed: number;
}

export type Outcome = 'ok' | 'clean' | 'crash' | 'hang' | 'oom';

export interface CaseResult {
  format: string;
  index: number;
  outcome: Outcome;
  mutations: string[];
  detail?: string;
}

// Readers that misbehave on purpose, so that the harness's own classification is tested.
const SELFTEST: FuzzFormat[] = [
  { name: 'selftest-crash', available: () => true, make: async (dir) => ({ input: path.join(dir, 'x'), mutations: [] }), read: async () => void ([] as number[]).reduce((a, b) => a + b) },
  { name: 'selftest-hang', available: () => true, make: async (dir) => ({ input: path.join(dir, 'x'), mutations: [] }), read: async () => { for (;;); } },
  {
    name: 'selftest-oom',
    available: () => true,
    make: async (dir) => ({ input: path.join(dir, 'x'), mutations: [] }),
    read: async () => {
      const keep: number[][] = [];
      for (;;) keep.push(new Array(1e6).fill(1.5));
    },
  },
  { name: 'selftest-nofile', available: () => true, make: async (dir) => ({ input: path.join(dir, 'x'), mutations: [] }), read: async () => { throw new ArcfaceError('bad'); } },
  { name: 'selftest-clean', available: () => true, make: async (dir) => ({ input: path.join(dir, 'x'), mutations: [] }), read: async (f) => { throw new ArcfaceError('byte offset 3: bad', f); } },
];
const ALL = new Map([...FORMATS, ...SELFTEST].map((f) => [f.name, f]));

/** Resident memory allowed to one case beyond the heap limit (typed arrays and wasm live outside the heap). */
const RSS_LIMIT = Number(process.env.FUZZ_RSS_MB ?? 3072) * 2 ** 20;

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'arcface-fuzz-'));
process.on('exit', () => fs.rmSync(root, { recursive: true, force: true }));
// Readers' warnings (pairs header counts) would drown the parent's output.
process.stderr.write = ((chunk: unknown, ...rest: unknown[]) => {
  const s = String(chunk);
  if (s.startsWith('arcface: warning:')) return true;
  return (process.stderr.constructor.prototype.write as (...a: unknown[]) => boolean).call(process.stderr, chunk, ...rest);
}) as typeof process.stderr.write;

function classify(e: unknown, input: string, dir: string, locator?: RegExp): { outcome: Outcome; detail?: string } {
  const err = e as Error;
  const msg = String(err?.message ?? e);
  if (!(e instanceof ArcfaceError)) return { outcome: 'crash', detail: `${err?.name ?? typeof e}: ${msg.slice(0, 300)}\n${String(err?.stack ?? '').split('\n').slice(1, 6).join('\n')}` };
  if (!msg.includes(input) && !msg.includes(dir + path.sep)) return { outcome: 'crash', detail: `ArcfaceError without the file name: ${msg.slice(0, 300)}` };
  if (locator && !locator.test(msg)) return { outcome: 'crash', detail: `ArcfaceError without offset/key/line: ${msg.slice(0, 300)}` };
  return { outcome: 'clean', detail: msg.slice(0, 200) };
}

async function runCase(req: CaseRequest): Promise<CaseResult> {
  const fmt = ALL.get(req.format);
  if (!fmt) throw new Error(`unknown fuzz format ${req.format}`);
  const r = new Rng(seedOf(req.format, req.seed, req.index));
  const dir = path.join(root, `${req.format}-${req.index}`);
  fs.mkdirSync(dir, { recursive: true });
  const made = await fmt.make(dir, r);
  // Tell the parent what the case is before reading it: a hang or OOM kills us before we can.
  process.send!({ type: 'start', index: req.index, mutations: made.mutations });
  const before = process.resourceUsage().maxRSS * 1024;
  let res: { outcome: Outcome; detail?: string };
  try {
    await fmt.read(made.input);
    res = { outcome: 'ok' };
  } catch (e) {
    res = classify(e, made.input, dir, made.locator);
  }
  fs.rmSync(dir, { recursive: true, force: true });
  const peak = process.resourceUsage().maxRSS * 1024;
  if (peak > RSS_LIMIT && peak > before) res = { outcome: 'oom', detail: `resident memory reached ${(peak / 2 ** 20).toFixed(0)} MB` };
  return { format: req.format, index: req.index, outcome: res.outcome, mutations: made.mutations, ...(res.detail ? { detail: res.detail } : {}) };
}

process.on('message', (req: CaseRequest) => {
  runCase(req).then(
    (res) => {
      process.send!({ type: 'result', ...res });
      // A peak resident size never comes down: start afresh after an OOM.
      if (res.outcome === 'oom') process.exit(0);
    },
    (e: Error) => {
      // The harness itself failed (making the case): report and let the parent restart us.
      process.send!({ type: 'result', format: req.format, index: req.index, outcome: 'crash', mutations: [], detail: `harness: ${e.stack}` });
      process.exit(1);
    },
  );
});
// A stray rejection or exception from a reader (e.g. a timer or worker it left behind) is the case's crash.
process.on('unhandledRejection', (e) => {
  process.stderr.write(`FUZZ-UNHANDLED ${(e as Error)?.stack ?? String(e)}\n`);
  process.exit(70);
});
process.send!({ type: 'ready' });
