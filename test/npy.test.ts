import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { encodeNpy, readNpy, writeNpy } from '../src/formats/npy.ts';

const FIXTURES = path.resolve(import.meta.dirname, '../../shared/fixtures');
const haveFixtures = existsSync(FIXTURES);
const skipMsg = haveFixtures ? false : `fixtures not found at ${FIXTURES}`;

// Bytes numpy 1.x writes for np.save(np.array([True, False, True])): header then 3 bytes.
function numpyBoolFile(): Uint8Array {
  const dict = "{'descr': '|b1', 'fortran_order': False, 'shape': (3,), }";
  const header = dict.padEnd(117, ' ') + '\n';
  const out = new Uint8Array(10 + header.length + 3);
  out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0, header.length & 0xff, header.length >> 8]);
  for (let i = 0; i < header.length; i++) out[10 + i] = header.charCodeAt(i);
  out.set([1, 0, 1], 10 + header.length);
  return out;
}

test('reads the embeddings fixture (f4, 1200x32) with numpy-checked values', { skip: skipMsg }, () => {
  const a = readNpy(path.join(FIXTURES, 'embeddings.npy'));
  assert.deepEqual(a.shape, [1200, 32]);
  assert.equal(a.dtype, 'f4');
  assert.ok(a.data instanceof Float32Array);
  // Values printed by numpy: np.load(...)[0,:3] and .sum(dtype=float64)
  assert.equal(a.data[0], Math.fround(0.06809849292039871));
  assert.equal(a.data[1], Math.fround(0.16027560830116272));
  assert.equal(a.data[2], Math.fround(0.19540207087993622));
  let s = 0;
  for (const v of a.data as Float32Array) s += v;
  assert.ok(Math.abs(s - -21.487634306414975) < 1e-9);
});

test('reads a numpy-written bool array', () => {
  const a = readNpy(numpyBoolFile(), 'bool.npy');
  assert.deepEqual(a.shape, [3]);
  assert.equal(a.dtype, 'b1');
  assert.deepEqual([...a.data as Uint8Array], [1, 0, 1]);
});

test('round-trips every dtype through a file, header 64-byte aligned', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'npy-'));
  try {
    const cases = [
      { shape: [2, 3], data: new Float32Array([1, -2.5, 3, 4, 5, 6e-8]) },
      { shape: [2], data: new Float64Array([Math.PI, -1e300]) },
      { shape: [1, 2, 2], data: new Int32Array([1, -2, 3, 2 ** 31 - 1]) },
      { shape: [2], data: new BigInt64Array([-1n, 2n ** 40n]) },
      { shape: [], data: new Uint8Array([200]) },
    ];
    for (const c of cases) {
      const f = path.join(dir, 'a.npy');
      writeNpy(f, c);
      const bytes = encodeNpy(c);
      assert.equal((bytes.length - c.data.byteLength) % 64, 0);
      const back = readNpy(f);
      assert.deepEqual(back.shape, c.shape);
      assert.deepEqual([...back.data], [...c.data]);
    }
    const b = readNpy(encodeNpy({ shape: [2], data: new Uint8Array([1, 0]), dtype: 'b1' }));
    assert.equal(b.dtype, 'b1');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('bad input gives errors naming the file and the problem', () => {
  assert.throws(() => readNpy(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]), 'x.npy'), /x\.npy.*magic/);
  const truncated = numpyBoolFile().subarray(0, 130);
  assert.throws(() => readNpy(truncated, 't.npy'), /t\.npy.*truncated/);
  const be = numpyBoolFile();
  const text = new TextDecoder('latin1').decode(be);
  const bad = new Uint8Array(be);
  bad.set(new TextEncoder().encode('>f8'), 10 + text.slice(10).indexOf('|b1'));
  assert.throws(() => readNpy(bad, 'be.npy'), /be\.npy.*big-endian/);
  assert.throws(() => readNpy('/nonexistent/q.npy'), /q\.npy/);
});
