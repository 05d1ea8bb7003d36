// Mutation fuzzing of every format the project reads (RecordIO packs, .bin, .pth, ONNX, JPEG/PNG, config
// JSON, pairs.txt): seeded cases, each read as the CLI reads it in a child process with a heap limit and a
// wall-clock limit. Prints one JSON line per format; the failing cases (crash, hang, oom) go to stderr.
// Usage: node --import tsx bench/fuzz.ts [--count 1000] [--seed 1] [--workers 2] [--formats recordio,bin]
//        [--timeout 30000] [--heap 1024] [--verbose]
import { FORMATS } from '../test/helpers/fuzz-formats.ts';
import { runFuzz } from '../test/helpers/fuzz-run.ts';
import { emit } from './common.ts';

const arg = (name: string, def: string): string => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1]! : def;
};
const count = Number(arg('count', '1000'));
const seed = Number(arg('seed', '1'));
const workers = Number(arg('workers', '2'));
const wanted = arg('formats', FORMATS.map((f) => f.name).join(',')).split(',');
const verbose = process.argv.includes('--verbose');
const formats = wanted.filter((name) => {
  const f = FORMATS.find((x) => x.name === name);
  if (!f) throw new Error(`unknown format ${name} (known: ${FORMATS.map((x) => x.name).join(', ')})`);
  if (!f.available()) process.stderr.write(`fuzz: skipping ${name}: its seed files (../shared/fixtures) are not here\n`);
  return f.available();
});

for (const format of formats) {
  const t0 = performance.now();
  const [s] = await runFuzz({
    formats: [format],
    count,
    seed,
    workers,
    timeoutMs: Number(arg('timeout', '30000')),
    heapMb: Number(arg('heap', '1024')),
    onResult: (r) => {
      if (r.outcome !== 'ok' && r.outcome !== 'clean') process.stderr.write(`${JSON.stringify(r)}\n`);
      else if (verbose) process.stderr.write(`${r.format} ${r.index} ${r.outcome} ${r.mutations.join(' ')} ${r.detail ?? ''}\n`);
    },
  });
  const { failures, ...row } = s!;
  emit({ ...row, seed, seconds: Math.round((performance.now() - t0) / 1000) });
}
