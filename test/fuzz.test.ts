// Mutation fuzzing, quick seeded subset (bench/fuzz.ts runs 1,000+ cases per format): every mutated
// input is either read or refused with an ArcfaceError naming the file (and its offset/key/line where
// the format has one); never another error, a hang or running out of memory.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { FORMATS } from './helpers/fuzz-formats.ts';
import { GENERIC, Rng, mutate, pickleOpcode, protobufVarint, zipField } from './helpers/fuzz-mutate.ts';
import { runFuzz, type FormatSummary } from './helpers/fuzz-run.ts';
import { sharedFixture, skipUnlessFixture } from './helpers/fixtures.ts';

const show = (s: FormatSummary) =>
  `${s.format}: ${JSON.stringify({ ...s, failures: undefined })}\n${s.failures.map((f) => `  #${f.index} ${f.outcome} [${f.mutations.join(' ')}] ${f.detail ?? ''}`).join('\n')}`;

test('the harness tells a crash, a hang, an OOM, an error without the file and a clean error apart', async () => {
  const got = await runFuzz({
    formats: ['selftest-crash', 'selftest-hang', 'selftest-oom', 'selftest-nofile', 'selftest-clean'],
    count: 1,
    seed: 1,
    timeoutMs: 8000,
    heapMb: 192,
  });
  const outcome = (f: string) => {
    const s = got.find((x) => x.format === f)!;
    return (['ok', 'clean', 'crash', 'hang', 'oom'] as const).find((k) => s[k] === 1);
  };
  const all = got.map(show).join('\n');
  assert.equal(outcome('selftest-crash'), 'crash', all);
  assert.equal(outcome('selftest-hang'), 'hang', all);
  assert.equal(outcome('selftest-oom'), 'oom', all);
  assert.equal(outcome('selftest-nofile'), 'crash', all);
  assert.equal(outcome('selftest-clean'), 'clean', all);
});

test('mutations are seeded: the same seed gives the same bytes, another seed other bytes', { skip: skipUnlessFixture('pairs_py2.bin') }, () => {
  const seed = new Uint8Array(fs.readFileSync(sharedFixture('pairs_py2.bin')!));
  const list = [...GENERIC, pickleOpcode, zipField, protobufVarint];
  const a = mutate(seed, new Rng(42), list).bytes;
  const b = mutate(seed, new Rng(42), list).bytes;
  const c = mutate(seed, new Rng(43), list).bytes;
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, seed);
  assert.notDeepEqual(a, c);
});

// Cases per format: about a minute in all on two cores (the model importers cost ~0.5 s a case).
const QUICK: Record<string, number> = { recordio: 40, bin: 30, pth: 10, onnx: 10, image: 30, config: 40, pairs: 40 };

test('quick fuzz of every format: only parsed or a clean ArcfaceError', { skip: skipUnlessFixture('rec_insightface') }, async () => {
  const names = FORMATS.filter((f) => f.available()).map((f) => f.name);
  assert.equal(names.length, 7);
  const results: FormatSummary[] = [];
  for (const name of names) results.push(...(await runFuzz({ formats: [name], count: QUICK[name]!, seed: 20261205, timeoutMs: 60000 })));
  for (const s of results) {
    assert.equal(s.mutations, QUICK[s.format], show(s));
    assert.equal(s.crash + s.hang + s.oom, 0, show(s));
    // The mutations do damage: some inputs are refused (and the readers still read some of them).
    assert.ok(s.clean > 0, show(s));
  }
});
