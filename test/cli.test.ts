// The `arcface` command: --help lists every registered sub-command; an unknown command fails clearly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { commands, requestedCommand } from '../src/cli/commands.ts';
import { REPO_ROOT } from './helpers/fixtures.ts';

// From source (the compiled bin/arcface.js is tested in package.test.ts).
const run = (args: string[]) =>
  spawnSync(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'src', 'cli', 'main.ts'), ...args], { cwd: REPO_ROOT, encoding: 'utf8' });

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

test('the lazy command table repeats each module\'s name and description', async () => {
  for (const c of commands) {
    const m = await c.load();
    assert.equal(m.command, c.command);
    assert.equal(m.describe, c.describe);
  }
});

test('requestedCommand finds the sub-command past global options', () => {
  assert.equal(requestedCommand(['--backend', 'cpu', 'eval', '--bin', 'x.bin'])?.command, 'eval');
  assert.equal(requestedCommand(['--backend=cpu', 'pack', 'folder'])?.command, 'pack <folder>');
  assert.equal(requestedCommand(['--help']), undefined);
  assert.equal(requestedCommand(['trian']), undefined);
});
