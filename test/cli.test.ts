// The `arcface` command: --help lists every registered sub-command; an unknown command fails clearly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { commands } from '../src/cli/commands.ts';
import { REPO_ROOT } from './helpers/fixtures.ts';

const run = (args: string[]) => spawnSync(process.execPath, [path.join(REPO_ROOT, 'bin', 'arcface.js'), ...args], { cwd: REPO_ROOT, encoding: 'utf8' });

test('arcface --help lists every command', () => {
  const r = run(['--help']);
  assert.equal(r.status, 0, r.stderr);
  const names = commands.map((c) => String(c.command).split(' ')[0]!);
  assert.ok(names.length >= 10, `only ${names.length} commands registered`);
  for (const n of ['demo', 'train', 'import', 'export', 'pack', 'pack-bin', 'inspect', 'eval', 'embed', 'compare']) assert.ok(names.includes(n), n);
  for (const n of names) assert.match(r.stdout, new RegExp(`arcface ${n}\\b`), `--help lacks ${n}`);
});

test('an unknown command or option is an error with exit code 1', () => {
  const r = run(['trian']);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /Did you mean train\?|Unknown argument: trian/);
  const o = run(['import', '--form', 'x.pth', '--out', 'y']);
  assert.equal(o.status, 1);
  assert.match(o.stderr, /Unknown argument|Missing required argument: from/);
});
