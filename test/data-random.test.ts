// The seeded PRNG: xoshiro128** outputs equal the reference C implementation's, state save/restore resumes
// the exact sequence, and the derived draws (ints, floats, normals, permutations) have the right range and
// distribution.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../src/data/random.ts';

test('xoshiro128** matches the reference C code (Blackman & Vigna) from a given state', () => {
  const r = new Rng();
  r.setState({ s: [1, 2, 3, 4], spare: null });
  // Printed by the reference xoshiro128starstar.c compiled with gcc on this machine.
  assert.deepEqual(Array.from({ length: 8 }, () => r.nextUint32()), [11520, 0, 5927040, 70819200, 2031721883, 1637235492, 1287239034, 3734860849]);
  r.setState({ s: [0x9e3779b9, 0x243f6a88, 0xb7e15162, 0xdeadbeef], spare: null });
  for (let i = 0; i < 1000; i++) r.nextUint32();
  assert.deepEqual(Array.from({ length: 4 }, () => r.nextUint32()), [2541037969, 1849389561, 1502624387, 2643130287]);
});

test('seeding is deterministic and getState/setState resumes mid-sequence (normals included)', () => {
  const a = new Rng(2048);
  const b = new Rng(2048);
  assert.deepEqual(Array.from({ length: 5 }, () => a.nextUint32()), Array.from({ length: 5 }, () => b.nextUint32()));
  assert.notEqual(new Rng(1).nextUint32(), new Rng(2).nextUint32());
  assert.notEqual(Rng.derive(7, 0).nextUint32(), Rng.derive(7, 1).nextUint32());
  assert.equal(Rng.derive(7, 3).nextUint32(), new Rng([7, 3]).nextUint32());
  a.nextNormal(); // leaves a spare Box-Muller value in the state
  const saved = JSON.parse(JSON.stringify(a.getState()));
  const tail = [a.nextNormal(), a.nextFloat(), a.nextInt(10), a.nextNormal()];
  const c = new Rng(0);
  c.setState(saved);
  assert.deepEqual([c.nextNormal(), c.nextFloat(), c.nextInt(10), c.nextNormal()], tail);
  assert.throws(() => c.setState({ s: [0, 0, 0, 0], spare: null }), /all-zero/);
  assert.throws(() => c.setState({ s: [1, 2, 3] as never, spare: null }), /invalid RNG state/);
});

test('nextFloat in [0,1), nextInt uniform without bias, normals with mean 0 and std 1', () => {
  const r = new Rng(2048);
  const n = 60000;
  const counts = new Array(6).fill(0);
  let sum = 0;
  let sumSq = 0;
  for (let i = 0; i < n; i++) {
    const f = r.nextFloat();
    assert.ok(f >= 0 && f < 1);
    counts[r.nextInt(6)]++;
    const z = r.nextNormal();
    sum += z;
    sumSq += z * z;
  }
  // chi-square with 5 degrees of freedom: 20.5 is the 0.999 quantile
  const chi = counts.reduce((s, c) => s + (c - n / 6) ** 2 / (n / 6), 0);
  assert.ok(chi < 20.5, `chi-square ${chi}`);
  assert.ok(Math.abs(sum / n) < 0.02, `mean ${sum / n}`);
  assert.ok(Math.abs(Math.sqrt(sumSq / n) - 1) < 0.02, `std ${Math.sqrt(sumSq / n)}`);
  assert.equal(r.nextInt(1), 0);
  assert.throws(() => r.nextInt(0), RangeError);
});

test('permutation is a permutation, and shuffles are uniform over positions', () => {
  const r = new Rng(5);
  const p = r.permutation(1000);
  assert.deepEqual([...p].sort((x, y) => x - y), Array.from({ length: 1000 }, (_, i) => i));
  // Where element 0 lands over many shuffles of 4: each position about 1/4 of the time.
  const pos = [0, 0, 0, 0];
  for (let i = 0; i < 8000; i++) pos[r.shuffle([0, 1, 2, 3]).indexOf(0)]++;
  for (const c of pos) assert.ok(Math.abs(c - 2000) < 200, `positions ${pos}`);
});
