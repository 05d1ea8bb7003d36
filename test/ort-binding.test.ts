// The onnxruntime-node binding wrapper: runs a model synchronously with preallocated outputs, and
// refuses another version or a binding of another shape with an error naming the pinned version.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { ORT_VERSION, OrtBindingError, OrtSession, checkBinding } from '../src/ort/binding.ts';
import { buildMatMulGraph } from '../src/onnx/kernels.ts';

const require = createRequire(import.meta.url);

test('the installed onnxruntime-node is the pinned version and its binding has the expected shape', () => {
  const pkg = require('onnxruntime-node/package.json') as { version: string };
  assert.equal(pkg.version, ORT_VERSION);
  assert.doesNotThrow(() => checkBinding(pkg.version, require('onnxruntime-node/dist/binding.js')));
});

test('an incompatible version or binding shape fails loudly, naming the pinned version', () => {
  const mod = require('onnxruntime-node/dist/binding.js');
  const pinned = new RegExp(`onnxruntime-node ${ORT_VERSION.replace(/\./g, '\\.')}`);
  assert.throws(() => checkBinding('1.17.0', mod), (e: Error) => e instanceof OrtBindingError && pinned.test(e.message) && /found 1\.17\.0/.test(e.message));
  assert.throws(() => checkBinding(undefined, mod), (e: Error) => pinned.test(e.message) && /found no onnxruntime-node/.test(e.message));
  assert.throws(() => checkBinding(ORT_VERSION, { binding: {} }), (e: Error) => pinned.test(e.message) && /missing initOrt\(\), binding\.InferenceSession/.test(e.message));
  class NoRun {
    loadModel(): void {}
  }
  assert.throws(() => checkBinding(ORT_VERSION, { initOrt: () => {}, binding: { InferenceSession: NoRun } }), /missing InferenceSession\.run/);
});

test('a session runs synchronously, into a preallocated view at an offset of a larger buffer', () => {
  const g = buildMatMulGraph({ op: 'matmul', a: [1, 2, 3], b: [1, 3, 2], transposeA: false, transposeB: false, rank: 3 });
  const s = new OrtSession(g.model, { threads: 1 });
  const heap = new Float32Array(64);
  const a = heap.subarray(3, 9);
  a.set([1, 2, 3, 4, 5, 6]);
  const b = heap.subarray(17, 23);
  b.set([1, 0, 0, 1, 1, 1]);
  const out = heap.subarray(40, 44);
  const r = s.run({ a: { data: a, dims: [1, 2, 3] }, b: { data: b, dims: [1, 3, 2] } }, { out: { data: out, dims: [1, 2, 2] } });
  assert.deepEqual(Array.from(out), [4, 5, 10, 11]);
  assert.equal(r.out, out);
  assert.equal(heap[39], 0);
  assert.equal(heap[44], 0);
  s.dispose();
});
