// CLI start-up: wall time of `arcface --help` (the compiled bin/arcface.js, as `npx arcface` runs it)
// against bare `node -e 0`, interleaved, median of --runs each. One JSON line; overhead_s is the goal's
// figure (under 0.5 s). Needs dist/ (`npm run build`, which `npm ci` runs). load1: the 1-minute load average.
// Usage: node --import tsx bench/cli-start.ts [--runs 9]
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { emit } from './common.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const bin = path.join(root, 'bin', 'arcface.js');
if (!fs.existsSync(path.join(root, 'dist', 'cli', 'main.js'))) {
  process.stderr.write('bench/cli-start: dist/ is missing; run `npm run build` first\n');
  process.exit(1);
}
const i = process.argv.indexOf('--runs');
const runs = i > 0 ? Number(process.argv[i + 1]) : 9;

function wall(args: string[]): number {
  const t = performance.now();
  const r = spawnSync(process.execPath, args, { cwd: root, encoding: 'utf8' });
  const s = (performance.now() - t) / 1000;
  if (r.status !== 0) throw new Error(`node ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return s;
}
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

wall(['-e', '0']); // warm the file cache
wall([bin, '--help']);
const node: number[] = [];
const help: number[] = [];
for (let k = 0; k < runs; k++) {
  node.push(wall(['-e', '0']));
  help.push(wall([bin, '--help']));
}
emit({
  bench: 'cli-start',
  runs,
  node_s: +median(node).toFixed(3),
  arcface_help_s: +median(help).toFixed(3),
  overhead_s: +(median(help) - median(node)).toFixed(3),
  node: process.version,
  load1: +os.loadavg()[0]!.toFixed(2),
});
