import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { unpickle, pickle, PickleObject, PickleError, PyTuple, PyFloat } from '../src/formats/pickle.ts';
import { sharedFixture, skipUnlessFixture } from './helpers/fixtures.ts';

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

for (const name of ['pairs_py2.bin', 'pairs_py3.bin', 'pairs_numpy_bool.bin']) {
  test(`unpickle ${name}: image bytes and flags`, { skip: skipUnlessFixture(name) }, () => {
    const expected = JSON.parse(fs.readFileSync(sharedFixture('pairs_expected.json')!, 'utf8'));
    const [images, issame] = unpickle(fs.readFileSync(sharedFixture(name)!)) as [Uint8Array[], unknown[]];
    assert.equal(images.length, expected.jpeg_sha256.length);
    assert.deepEqual(images.map(sha), expected.jpeg_sha256);
    assert.equal(issame.length, expected.num_pairs);
    if (name === 'pairs_numpy_bool.bin') {
      // numpy.bool_ scalars come back as objects naming their class; the .bin reader maps them.
      const first = issame[0] as PickleObject;
      assert.equal(first.cls.qualname, 'numpy.core.multiarray.scalar');
      const raw = issame.map((o) => ((o as PickleObject).args[1] as Uint8Array)[0] === 1);
      assert.deepEqual(raw, expected.issame);
    } else {
      assert.deepEqual(issame, expected.issame);
    }
  });
}

test('round trip of every value kind at protocols 2 and 4', () => {
  const bytes = Uint8Array.from({ length: 300 }, (_, i) => (i * 37) & 0xff);
  const value = [
    null, true, false, 0, 255, 256, 65535, 65536, -1, -(2 ** 31), 2 ** 40, -(2 ** 40), 12345678901234567890n,
    1.5, new PyFloat(2), 'héllo', bytes, bytes.subarray(0, 3), new PyTuple([1, 'a']), new PyTuple([1, 2, 3, 4]),
    new Map<unknown, unknown>([['k', [1, 2]], [3, 'v']]), Array.from({ length: 2500 }, (_, i) => i),
  ];
  for (const protocol of [2, 4] as const) {
    const back = unpickle(pickle(value, { protocol })) as unknown[];
    assert.equal(back.length, value.length);
    assert.deepEqual(back.slice(0, 13), value.slice(0, 13));
    assert.equal(back[13], 1.5);
    assert.equal(back[14], 2);
    assert.equal(back[15], 'héllo');
    assert.deepEqual(back[16], bytes);
    assert.deepEqual(back[17], bytes.subarray(0, 3));
    assert.deepEqual(back[18], [1, 'a']);
    assert.deepEqual(back[19], [1, 2, 3, 4]);
    assert.deepEqual(back[20], new Map<unknown, unknown>([['k', [1, 2]], [3, 'v']]));
    assert.equal((back[21] as number[]).length, 2500);
    assert.equal((back[21] as number[])[2499], 2499);
  }
});

test('truncated or foreign input is a PickleError with an offset', () => {
  const good = pickle([Uint8Array.of(1, 2, 3), [true]]);
  assert.throws(() => unpickle(good.subarray(0, good.length - 3)), PickleError);
  assert.throws(() => unpickle(Uint8Array.of(0x80, 2, 0xff)), /unsupported opcode 0xff \(pickle byte 2\)/);
  assert.throws(() => unpickle(new TextEncoder().encode('{"json": true}')), PickleError);
});

const py = '/usr/bin/python3';
test('Python reads what we write (py2-style str as bytes)', { skip: fs.existsSync(py) ? false : `${py} not installed` }, () => {
  const data = pickle([[Uint8Array.of(0xff, 0xd8, 0, 10), Uint8Array.of(1)], [true, false]], { protocol: 2 });
  const r = spawnSync(py, ['-c', "import pickle,sys; b,s=pickle.loads(sys.stdin.buffer.read(), encoding='bytes'); print(repr(b), s)"], {
    input: data,
  });
  assert.equal(r.status, 0, r.stderr?.toString());
  assert.equal(r.stdout.toString().trim(), "[b'\\xff\\xd8\\x00\\n', b'\\x01'] [True, False]");
});
