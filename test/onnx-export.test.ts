// ONNX export of the project's backbones: onnxruntime-node on the exported file equals the tfjs model
// (wasm backend) within the fixtures' bound, batch 1 and 5 through the same file, for r18, r50, mbf at
// 112x112 and the two imported insightface fixtures; BN folding and built-in normalisation change the graph
// but not the output; onnx.checker accepts the file; bad options are clear errors and leave no file.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import * as tf from '@tensorflow/tfjs';
import * as ort from 'onnxruntime-node';
import { initBackend } from '../src/backend/select.ts';
import { exportOnnx, NORMALISATION_BUILT_IN, NORMALISATION_OUTSIDE } from '../src/onnx/export.ts';
import { writeOnnx } from '../src/onnx/write.ts';
import { onnx } from '../src/convert/onnx/reader.ts';
import { importTorch } from '../src/convert/import-torch.ts';
import { buildBackbone, resolveSpec, type BackboneSpec } from '../src/models/factory.ts';
import { readNpy } from '../src/formats/npy.ts';
import { assertFixtureClose, maxAbs, nhwcToNchw } from './helpers/compare.ts';
import { sharedFixture, skipUnlessFixture } from './helpers/fixtures.ts';
import { randomInput, randomizeWeights } from './helpers/random-weights.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'arcface-onnx-export-'));

before(async () => {
  await initBackend('wasm', { quiet: true });
});

async function ortForward(session: ort.InferenceSession, x: tf.Tensor4D, input = 'data'): Promise<Float32Array> {
  const [n, h, w, c] = x.shape;
  const feed = { [input]: new ort.Tensor('float32', nhwcToNchw(x.dataSync(), x.shape), [n, c, h, w]) };
  const out = await session.run(feed);
  return out[session.outputNames[0]!]!.data as Float32Array;
}

function tfForward(model: tf.LayersModel, x: tf.Tensor4D): Float32Array {
  return tf.tidy(() => (model.predict(x) as tf.Tensor).dataSync() as Float32Array);
}

/** Exports, then compares ORT with tfjs on a batch of 5 and on its first image, through the same session. */
async function assertExportMatches(model: tf.LayersModel, bytes: Uint8Array, what: string, seed = 11): Promise<number> {
  const session = await ort.InferenceSession.create(bytes);
  const x5 = randomInput(model, 5, seed);
  const x1 = tf.tidy(() => x5.slice(0, 1));
  const want5 = tfForward(model, x5);
  const want1 = tfForward(model, x1);
  const out = maxAbs(want5);
  assert.ok(out >= 1 && out < 1e4, `${what}: tfjs output scale ${out} is outside [1, 1e4)`);
  assertFixtureClose(await ortForward(session, x5), want5, `${what} batch 5`);
  assertFixtureClose(await ortForward(session, x1), want1, `${what} batch 1`);
  tf.dispose([x5, x1]);
  await session.release();
  return out;
}

function decode(bytes: Uint8Array) {
  return onnx.ModelProto.decode(bytes);
}

function opCounts(bytes: Uint8Array): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const n of decode(bytes).graph!.node!) counts[n.opType!] = (counts[n.opType!] ?? 0) + 1;
  return counts;
}

for (const network of ['r18', 'r50', 'mbf']) {
  test(`${network} at 112x112: onnxruntime equals tfjs, batch 1 and 5 through one file`, async () => {
    const spec = resolveSpec({ network, embeddingSize: 128 });
    const model = buildBackbone(spec, { seed: 5 });
    randomizeWeights(model, { seed: 7 });
    const bytes = exportOnnx(model, { spec });
    const scale = await assertExportMatches(model, bytes, network);
    assert.ok(scale >= 1);

    const m = decode(bytes);
    const input = m.graph!.input![0]!;
    assert.equal(input.name, 'data');
    assert.deepEqual(
      input.type!.tensorType!.shape!.dim!.map((d) => d.dimParam || Number(d.dimValue)),
      ['batch', 3, 112, 112],
    );
    assert.equal(m.graph!.output![0]!.name, 'embedding');
    assert.deepEqual(m.graph!.output![0]!.type!.tensorType!.shape!.dim!.map((d) => d.dimParam || Number(d.dimValue)), ['batch', 128]);
    assert.equal(Number(m.opsetImport[0]!.version), 11);
    const meta = Object.fromEntries(m.metadataProps.map((p) => [p.key, p.value]));
    assert.equal(meta.network, network);
    assert.equal(meta.embedding_size, '128');
    assert.equal(meta.input_size, '112');
    assert.equal(meta.normalisation, NORMALISATION_OUTSIDE);
    assert.deepEqual(JSON.parse(meta.arcface_spec!), spec);
    model.dispose();
  });
}

for (const name of ['iresnet_tiny', 'mbf']) {
  test(`imported fixture ${name}: export equals tfjs and the fixture's torch output`, { skip: skipUnlessFixture(name, 'backbone.pth') }, async () => {
    const dir = sharedFixture(name)!;
    const { model, spec } = importTorch(path.join(dir, 'backbone.pth'));
    const bytes = exportOnnx(model, { spec });
    await assertExportMatches(model, bytes, name);
    // The fixture's own input and torch output, straight through onnxruntime.
    const inp = readNpy(path.join(dir, 'input_nchw.npy'));
    const want = readNpy(path.join(dir, 'output.npy'));
    const session = await ort.InferenceSession.create(bytes);
    const out = await session.run({ data: new ort.Tensor('float32', inp.data as Float32Array, inp.shape) });
    assertFixtureClose(out.embedding!.data as Float32Array, want.data as Float32Array, `${name} vs torch output.npy`);
    await session.release();
    // Folded, the graph has torch.onnx.export's layer ops (torch spells mbf's flatten as a Reshape subgraph).
    const folded = exportOnnx(model, { spec, foldBatchNorm: true });
    const torchOps = opCounts(fs.readFileSync(path.join(dir, 'backbone.onnx')));
    const ours = opCounts(folded);
    for (const op of ['Conv', 'BatchNormalization', 'PRelu', 'Add', 'Gemm', 'MatMul']) assert.equal(ours[op], torchOps[op], `${name}: ${op} nodes`);
    await assertExportMatches(model, folded, `${name} folded`);
    model.dispose();
  });
}

test('BN folding: torch-like graph (r18: 21 Conv, 10 BN left; mbf: 1 BN left), same output', async () => {
  for (const [spec, bnLeft, convs] of [
    [resolveSpec({ network: 'r18', inputSize: 32, embeddingSize: 64 }), 10, 21],
    [resolveSpec({ network: 'mbf', inputSize: 32, embeddingSize: 64 }), 1, 0],
  ] as [BackboneSpec, number, number][]) {
    const model = buildBackbone(spec, { seed: 1 });
    randomizeWeights(model, { seed: 2 });
    const plain = exportOnnx(model, { spec });
    const folded = exportOnnx(model, { spec, foldBatchNorm: true });
    const countPlain = opCounts(plain);
    const countFolded = opCounts(folded);
    const bnLayers = model.layers.filter((l) => l.getClassName() === 'BatchNormalization').length;
    assert.equal(countPlain.BatchNormalization, bnLayers, `${spec.network}: every BN is a node without folding`);
    assert.equal(countFolded.BatchNormalization, bnLeft, `${spec.network}: BNs left after folding`);
    if (convs) assert.equal(countFolded.Conv, convs);
    if (spec.network === 'r18') {
      assert.equal(countFolded.PRelu, 9);
      assert.equal(countFolded.Add, 8);
      assert.equal(countFolded.Gemm, 1);
    } else {
      assert.equal(countFolded.MatMul, 1, 'the bias-free linear is a MatMul');
    }
    await assertExportMatches(model, folded, `${spec.network} folded`);
    // Folded vs unfolded on the same input, both in onnxruntime.
    const a = await ort.InferenceSession.create(plain);
    const b = await ort.InferenceSession.create(folded);
    const x = randomInput(model, 3, 99);
    assertFixtureClose(await ortForward(b, x), await ortForward(a, x), `${spec.network} folded vs unfolded`);
    x.dispose();
    await Promise.all([a.release(), b.release()]);
    model.dispose();
  }
});

test('embedded normalisation: raw 0..255 input gives the normalised model output', async () => {
  const spec = resolveSpec({ network: 'mbf', inputSize: 48, embeddingSize: 32 });
  const model = buildBackbone(spec, { seed: 3 });
  randomizeWeights(model, { seed: 4 });
  const bytes = exportOnnx(model, { spec, embedNormalization: true, foldBatchNorm: true });
  const m = decode(bytes);
  assert.deepEqual(m.graph!.node!.slice(0, 2).map((n) => n.opType), ['Sub', 'Mul']);
  assert.equal(m.metadataProps.find((p) => p.key === 'normalisation')!.value, NORMALISATION_BUILT_IN);
  const raw = tf.tidy(() => tf.randomUniform([4, 48, 48, 3], 0, 256, 'int32', 5).toFloat()) as tf.Tensor4D;
  const normalised = tf.tidy(() => raw.sub(127.5).div(127.5)) as tf.Tensor4D;
  const session = await ort.InferenceSession.create(bytes);
  const want = tfForward(model, normalised);
  assert.ok(maxAbs(want) >= 1);
  assertFixtureClose(await ortForward(session, raw), want, 'raw input through the built-in normalisation');
  tf.dispose([raw, normalised]);
  await session.release();
  model.dispose();
});

test('onnx.checker.check_model accepts exports (python3-onnx)', async (t) => {
  const probe = spawnSync('/usr/bin/python3', ['-c', 'import onnx'], { encoding: 'utf8' });
  if (probe.status !== 0) {
    t.skip('/usr/bin/python3 has no onnx module (apt-get install python3-onnx)');
    return;
  }
  const spec = resolveSpec({ network: 'iresnet', layers: [1, 1, 1, 1], widths: [8, 16, 16, 32], inputSize: 32, embeddingSize: 16 });
  const model = buildBackbone(spec, { seed: 1 });
  const files: string[] = [];
  for (const opset of [9, 11, 13, 17]) {
    const file = path.join(tmp, `check-${opset}.onnx`);
    writeOnnx(file, model, { spec, opset, foldBatchNorm: opset === 13, embedNormalization: opset === 17 });
    files.push(file);
  }
  const mbfSpec = resolveSpec({ network: 'mbf', inputSize: 32, embeddingSize: 16 });
  const mbf = buildBackbone(mbfSpec, { seed: 1 });
  files.push(path.join(tmp, 'check-mbf.onnx'));
  writeOnnx(files.at(-1)!, mbf, { spec: mbfSpec });
  const script = 'import sys, onnx\nfor f in sys.argv[1:]:\n    onnx.checker.check_model(onnx.load(f), full_check=True)\nprint("ok", len(sys.argv) - 1)';
  const r = spawnSync('/usr/bin/python3', ['-c', script, ...files], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /ok 5/);
  model.dispose();
  mbf.dispose();
});

test('bad options and unwritable paths: clear errors, no file left behind', () => {
  const spec = resolveSpec({ network: 'mbf', inputSize: 32, embeddingSize: 16 });
  const model = buildBackbone(spec, { seed: 1 });
  assert.throws(() => exportOnnx(model, { opset: 8 }), { name: 'ArcfaceError', message: /opset 8 is not supported: choose 9\.\.17/ });
  assert.throws(() => exportOnnx(model, { opset: 18 }), /opset 18 is not supported/);
  assert.throws(() => exportOnnx(model, { spec: { ...spec, embeddingSize: 512 } }), /embedding size 512, the model outputs 16/);
  assert.throws(() => exportOnnx(model, { spec: { ...spec, inputSize: 112 } }), /input size 112, the model takes 32/);
  const target = path.join(tmp, 'missing-dir', 'model.onnx');
  assert.throws(() => writeOnnx(target, model, { spec }), (e: Error) => e.name === 'ArcfaceError' && e.message.includes(target));
  assert.equal(fs.existsSync(path.dirname(target)), false);
  // Nothing but the finished file appears in the target directory.
  const ok = path.join(tmp, 'ok', 'model.onnx');
  fs.mkdirSync(path.dirname(ok));
  writeOnnx(ok, model, { spec });
  assert.deepEqual(fs.readdirSync(path.dirname(ok)), ['model.onnx']);
  model.dispose();
});
