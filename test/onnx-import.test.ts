// ONNX import of the torch-exported fixtures (BN folded, shape subgraph in mbf), a save -> plain
// tfjs load round trip in a child process, and clear errors for bad files and unsupported ops.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/select.ts';
import { ArcfaceError } from '../src/errors.ts';
import { importOnnx, onnx } from '../src/convert/onnx/index.ts';
import { readNpy } from '../src/formats/npy.ts';
import { REPO_ROOT, sharedFixture, skipUnlessFixture } from './helpers/fixtures.ts';

before(async () => {
  await initBackend('wasm', { quiet: true });
});

function maxAbsDiff(got: ArrayLike<number>, want: ArrayLike<number>): { diff: number; bound: number } {
  assert.equal(got.length, want.length);
  let diff = 0;
  let max = 0;
  for (let i = 0; i < want.length; i++) {
    diff = Math.max(diff, Math.abs(got[i] - want[i]));
    max = Math.max(max, Math.abs(want[i]));
  }
  return { diff, bound: 1e-4 + 2e-5 * max };
}

/** NCHW fixture input as an NHWC tensor. */
function fixtureInput(dir: string, rows?: number): tf.Tensor4D {
  const a = readNpy(path.join(dir, 'input_nchw.npy'));
  return tf.tidy(() => {
    const x = tf.tensor4d(a.data as Float32Array, a.shape as [number, number, number, number]).transpose([0, 2, 3, 1]);
    return (rows ? x.slice(0, rows) : x) as tf.Tensor4D;
  });
}

for (const [name, embedding] of [['iresnet_tiny', 64], ['mbf', 128]] as const) {
  test(`${name}/backbone.onnx converts to layers and reproduces output.npy`, { skip: skipUnlessFixture(name, 'backbone.onnx') }, async () => {
    const dir = sharedFixture(name)!;
    const r = await importOnnx(path.join(dir, 'backbone.onnx'));
    assert.equal(r.inputName, 'input');
    assert.deepEqual(r.inputShapeNCHW, [null, 3, 112, 112]);
    assert.equal(r.inputLayout, 'nhwc');
    assert.deepEqual(r.outputNames, ['embedding']);
    assert.equal(r.normalisationBuiltIn, false);
    assert.equal(r.customLayerCount, 0, 'torch-exported face backbones need only built-in layers');
    assert.deepEqual(r.model.inputs[0].shape, [null, 112, 112, 3]);
    const x = fixtureInput(dir);
    const y = r.model.predict(x) as tf.Tensor;
    assert.deepEqual(y.shape, [2, embedding]);
    const want = readNpy(path.join(dir, 'output.npy'));
    const { diff, bound } = maxAbsDiff(await y.data(), want.data as Float32Array);
    assert.ok(diff <= bound, `max|got-expected| = ${diff} > ${bound}`);
    // Readable names from the ONNX nodes; the Flatten feeding Gemm costs no transpose layer.
    const names = r.model.layers.map((l) => l.name);
    assert.ok(names.every((n) => /^[A-Za-z0-9][-A-Za-z0-9._]*$/.test(n)));
    assert.ok(!r.model.layers.some((l) => l.getClassName() === 'Permute'), 'no run-time transpose');
    if (name === 'iresnet_tiny') assert.ok(names.includes('layer1_layer1.0_conv1_Conv'));
    tf.dispose([x, y]);
    r.model.dispose();
  });
}

test('converted iresnet_tiny saves and loads with plain tf.loadLayersModel in another process', { skip: skipUnlessFixture('iresnet_tiny', 'backbone.onnx') }, async () => {
  const dir = sharedFixture('iresnet_tiny')!;
  const r = await importOnnx(path.join(dir, 'backbone.onnx'));
  const tmp = mkdtempSync(path.join(tmpdir(), 'onnx-import-'));
  try {
    // The standard tfjs layout (model.json + weights.bin), as tfjs-node's file:// handler writes it.
    await r.model.save(
      tf.io.withSaveHandler(async (art) => {
        writeFileSync(path.join(tmp, 'weights.bin'), new Uint8Array(art.weightData as ArrayBuffer));
        const json = {
          modelTopology: art.modelTopology,
          format: art.format,
          generatedBy: art.generatedBy,
          convertedBy: art.convertedBy,
          userDefinedMetadata: art.userDefinedMetadata,
          weightsManifest: [{ paths: ['weights.bin'], weights: art.weightSpecs }],
        };
        writeFileSync(path.join(tmp, 'model.json'), JSON.stringify(json));
        return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
      }),
    );
    const x = fixtureInput(dir, 1);
    writeFileSync(path.join(tmp, 'input.bin'), new Uint8Array((await x.data()).buffer));
    x.dispose();
    // Only @tensorflow/tfjs: no project code, no custom layer registered.
    const child = `
      import * as tf from '@tensorflow/tfjs';
      import fs from 'node:fs';
      const dir = process.argv[1];
      const json = JSON.parse(fs.readFileSync(dir + '/model.json', 'utf8'));
      const bin = fs.readFileSync(dir + '/weights.bin');
      const model = await tf.loadLayersModel(tf.io.fromMemory({
        modelTopology: json.modelTopology,
        weightSpecs: json.weightsManifest[0].weights,
        weightData: bin.buffer.slice(bin.byteOffset, bin.byteOffset + bin.byteLength),
        userDefinedMetadata: json.userDefinedMetadata,
      }));
      const inp = fs.readFileSync(dir + '/input.bin');
      const x = tf.tensor4d(new Float32Array(inp.buffer, inp.byteOffset, inp.byteLength / 4), [1, 112, 112, 3]);
      const y = model.predict(x);
      process.stdout.write(JSON.stringify({ shape: y.shape, data: Array.from(y.dataSync()), meta: model.getUserDefinedMetadata() }));
    `;
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', child, tmp], { cwd: REPO_ROOT, encoding: 'utf8' });
    const res = JSON.parse(out) as { shape: number[]; data: number[]; meta: { onnx: { inputName: string } } };
    assert.deepEqual(res.shape, [1, 64]);
    assert.equal(res.meta.onnx.inputName, 'input');
    const want = readNpy(path.join(dir, 'output.npy'));
    const { diff, bound } = maxAbsDiff(res.data, (want.data as Float32Array).subarray(0, 64));
    assert.ok(diff <= bound, `max|got-expected| = ${diff} > ${bound}`);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
    r.model.dispose();
  }
});

/** A one-node model: x[1,3,8,8] -> op -> y. */
function tinyModel(opType: string, nodeName: string): Uint8Array {
  const vi = (name: string) => ({
    name,
    type: { tensorType: { elemType: onnx.TensorProto.DataType.FLOAT, shape: { dim: [1, 3, 8, 8].map((d) => ({ dimValue: d })) } } },
  });
  const model = onnx.ModelProto.create({
    irVersion: 7,
    opsetImport: [{ domain: '', version: 11 }],
    graph: {
      name: 'tiny',
      node: [
        { name: 'relu0', opType: 'Relu', input: ['x'], output: ['h'] },
        { name: nodeName, opType, input: ['h'], output: ['y'] },
      ],
      input: [vi('x')],
      output: [vi('y')],
    },
  });
  return onnx.ModelProto.encode(model).finish();
}

test('an unsupported operator is an ArcfaceError naming the node, the operator and the file', async () => {
  await assert.rejects(
    importOnnx(tinyModel('Softmax', 'head/softmax_7'), { name: 'tiny.onnx' }),
    (e: unknown) =>
      e instanceof ArcfaceError && /tiny\.onnx/.test(e.message) && /head\/softmax_7/.test(e.message) && /Softmax/.test(e.message),
  );
});

test('a truncated or non-ONNX file is an ArcfaceError naming the file', async () => {
  const tmp = mkdtempSync(path.join(tmpdir(), 'onnx-bad-'));
  try {
    const good = tinyModel('Relu', 'relu1');
    const r = await importOnnx(good, { name: 'ok.onnx' }); // the intact bytes do convert
    assert.equal(r.model.layers.length, 3);
    r.model.dispose();
    const truncated = path.join(tmp, 'truncated.onnx');
    writeFileSync(truncated, good.subarray(0, good.length - 20));
    await assert.rejects(importOnnx(truncated), (e: unknown) => e instanceof ArcfaceError && e.message.includes(truncated));
    const text = path.join(tmp, 'notes.onnx');
    writeFileSync(text, 'this is a text file, not a protobuf model\n'.repeat(20));
    await assert.rejects(importOnnx(text), (e: unknown) => e instanceof ArcfaceError && e.message.includes(text) && /not a valid ONNX/.test(e.message));
    const missing = path.join(tmp, 'missing.onnx');
    await assert.rejects(importOnnx(missing), (e: unknown) => e instanceof ArcfaceError && e.message.includes(missing));
    assert.ok(readFileSync(truncated).length > 0);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});
