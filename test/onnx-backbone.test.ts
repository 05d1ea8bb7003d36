// ONNX graphs that are an IResNet or MobileFaceNet, whatever exported them, become the native network:
// torch2onnx fixtures (BN folded, shape subgraphs), the third-party fr_feature.onnx (MobileFaceNet scale 1,
// embedding conv, fixed batch), and an MXNet-style opset-8 IResNet built here with every quirk of the ONNX
// zoo's LResNet100E-IR. Outputs are checked against the fixtures' PyTorch outputs, against onnxruntime on
// the source graph, and (MXNet) against the same weights imported from the .pth; the input convention is
// detected and kept through an opset-11 re-export that onnxruntime runs.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import * as ort from 'onnxruntime-node';
import { initBackend } from '../src/backend/select.ts';
import { recogniseOnnxBackbone, tryRecogniseOnnxBackbone, NotRecognisedError } from '../src/convert/onnx-backbone.ts';
import { loadBackbone } from '../src/convert/load-backbone.ts';
import { importTorch } from '../src/convert/import-torch.ts';
import { exportOnnx } from '../src/onnx/export.ts';
import { applyInputConvention } from '../src/convert/onnx-input.ts';
import { onnx } from '../src/convert/onnx/reader.ts';
import { readTorchStateDict, type TorchTensor } from '../src/formats/torch.ts';
import { buildBackbone } from '../src/models/factory.ts';
import { loadStateDict } from '../src/convert/torch-mapping.ts';
import { readNpy } from '../src/formats/npy.ts';
import { adaptStandardInput, inputConventionOf, STANDARD_INPUT } from '../src/models/input-convention.ts';
import { assertFixtureClose, maxAbs, maxAbsDiff, nhwcToNchw } from './helpers/compare.ts';
import { sharedFixture, skipUnlessFixture } from './helpers/fixtures.ts';
import { frFeatureOnnx, FR_FEATURE_MISSING } from './helpers/third-party-model.ts';
import { mxnetStyleIResNet, withoutSpatial } from './helpers/mxnet-style-onnx.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'arcface-onnx-backbone-'));

before(async () => {
  await initBackend('wasm', { quiet: true });
});

function nchwToNhwc(data: Float32Array, [n, c, h, w]: number[]): tf.Tensor4D {
  return tf.tidy(() => tf.tensor4d(data, [n!, c!, h!, w!]).transpose([0, 2, 3, 1]) as tf.Tensor4D);
}

function predict(model: tf.LayersModel, x: tf.Tensor4D): Float32Array {
  return tf.tidy(() => (model.predict(x) as tf.Tensor).dataSync() as Float32Array);
}

/** onnxruntime on NCHW data, one image per run when the graph's batch is fixed at 1. */
async function ortRun(bytes: Uint8Array, nchw: Float32Array, shape: number[], perImage: boolean): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(bytes);
  const [n, c, h, w] = shape as [number, number, number, number];
  const px = c * h * w;
  const parts: Float32Array[] = [];
  for (let i = 0; i < (perImage ? n : 1); i++) {
    const data = perImage ? nchw.subarray(i * px, (i + 1) * px) : nchw;
    const out = await session.run({ [session.inputNames[0]!]: new ort.Tensor('float32', data.slice(), [perImage ? 1 : n, c, h, w]) });
    parts.push(out[session.outputNames[0]!]!.data as Float32Array);
  }
  await session.release();
  const all = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) (all.set(p, o), (o += p.length));
  return all;
}

/** The native IResNet filled from a state dict through the torch mapping (an independent path). */
function buildAndLoad(sd: Map<string, TorchTensor>): { model: tf.LayersModel } {
  const model = buildBackbone({ network: 'iresnet', layers: [1, 1, 1, 1], embeddingSize: 64 });
  loadStateDict(model, sd);
  return { model };
}

/** ORT against tfjs: the fixtures' bound (1e-4 absolute, plus 2e-5 of the output scale for mbf's ~90). */
function assertClose(got: Float32Array, want: Float32Array, what: string): void {
  assertFixtureClose(got, want, what);
}

for (const [name, network, embeddingSize] of [['iresnet_tiny', 'iresnet', 64], ['mbf', 'mbf', 128]] as const) {
  test(`${name}/backbone.onnx (torch2onnx, BN folded) is recognised as the native ${network} and matches PyTorch and onnxruntime`, { skip: skipUnlessFixture(name) }, async () => {
    const file = sharedFixture(name, 'backbone.onnx')!;
    const r = recogniseOnnxBackbone(file);
    assert.equal(r.spec.network, network);
    assert.equal(r.spec.embeddingSize, embeddingSize);
    assert.equal(r.spec.inputSize, 112);
    if (network === 'iresnet') assert.deepEqual([r.spec.layers, r.spec.widths], [[1, 1, 1, 1], [64, 128, 256, 512]]);
    else assert.deepEqual([r.spec.blocks, r.spec.scale], [[1, 4, 6, 2], 2]);
    assert.deepEqual(r.input, STANDARD_INPUT);
    assert.ok(r.foldedBatchNorms > 0, 'torch folded BNs into the convolutions');
    const inp = readNpy(sharedFixture(name, 'input_nchw.npy')!);
    const want = readNpy(sharedFixture(name, 'output.npy')!).data as Float32Array;
    const x = nchwToNhwc(inp.data as Float32Array, inp.shape);
    const got = predict(r.model, x);
    assertFixtureClose(got, want, `${name} native vs PyTorch`);
    assertClose(got, await ortRun(fs.readFileSync(file), inp.data as Float32Array, inp.shape, false), `${name} native vs onnxruntime on the source graph`);
    // The same network as `arcface import --from backbone.pth` builds: same layer names and weights shapes.
    const { model: fromPth } = importTorch(sharedFixture(name, 'backbone.pth')!);
    assert.deepEqual(r.model.layers.map((l) => l.name), fromPth.layers.map((l) => l.name));
    assertFixtureClose(got, predict(fromPth, x), `${name} ONNX-converted vs .pth-imported`);
    tf.dispose([x]);
    r.model.dispose();
    fromPth.dispose();
  });
}

test('fr_feature.onnx (third-party MobileFaceNet, fixed batch 1, embedding as a 1x1 conv) is recognised and matches onnxruntime', { skip: frFeatureOnnx() ? false : FR_FEATURE_MISSING }, async () => {
  const file = frFeatureOnnx()!;
  const r = recogniseOnnxBackbone(file);
  assert.deepEqual([r.spec.network, r.spec.blocks, r.spec.scale, r.spec.embeddingSize, r.spec.inputSize], ['mbf', [1, 4, 6, 2], 1, 512, 112]);
  const x = tf.randomUniform([3, 112, 112, 3], -1, 1, 'float32', 7) as tf.Tensor4D;
  const got = predict(r.model, x); // batch 3 through a graph that was fixed at 1
  const want = await ortRun(fs.readFileSync(file), nhwcToNchw(x.dataSync(), x.shape), [3, 3, 112, 112], true);
  assertClose(got, want, 'fr_feature native vs onnxruntime');
  x.dispose();
  r.model.dispose();
});

test('an MXNet-style opset-8 IResNet (spatial=0 BN, [C,1,1] PReLU, Sub/Mul, Dropout, Flatten+Gemm, 2-D BN, batch 1) becomes the native IResNet', { skip: skipUnlessFixture('iresnet_tiny') }, async () => {
  const sd = readTorchStateDict(sharedFixture('iresnet_tiny', 'backbone.pth')!);
  // A 2-D BN gamma that is not 1 (the native `features` BN has none: it goes into the fc rows).
  const fw = sd.get('features.weight')!;
  sd.set('features.weight', { ...fw, data: Float32Array.from(fw.data as Float32Array, (_, i) => 0.5 + (i % 7) / 6) });
  const bytes = mxnetStyleIResNet(sd);
  const file = path.join(tmp, 'mxnet-style.onnx');
  fs.writeFileSync(file, bytes);
  // onnxruntime refuses the exporter's spatial=0 on [C] parameters, as it does for the zoo's model.
  await assert.rejects(ortRun(bytes, new Float32Array(3 * 112 * 112), [1, 3, 112, 112], true), /BatchNormalization.*Invalid input scale/s);
  const r = recogniseOnnxBackbone(file);
  assert.deepEqual([r.spec.network, r.spec.layers, r.spec.embeddingSize, r.spec.inputSize], ['iresnet', [1, 1, 1, 1], 64, 112]);
  assert.equal(r.input.order, 'RGB');
  assert.deepEqual([r.input.mean, r.input.std, r.input.normalisationInGraph], [[127.5, 127.5, 127.5], [128, 128, 128], true]);
  assert.equal(r.foldedBatchNorms, 0, 'MXNet keeps every BN as a node');

  // Raw 0..255 pixels, two images through the graph that had a fixed batch of 1.
  const inp = readNpy(sharedFixture('iresnet_tiny', 'input_nchw.npy')!);
  const raw = Float32Array.from(inp.data as Float32Array, (v) => Math.min(255, Math.max(0, v * 127.5 + 127.5)));
  const wantOrt = await ortRun(withoutSpatial(bytes), raw, inp.shape, true);
  // What the loader writes, (x - 127.5) / 127.5, converted to what the network takes: (x - 127.5) / 128.
  const std = nchwToNhwc(raw.map((v) => (v - 127.5) / 127.5), inp.shape);
  const adapted = std.dataSync().slice() as Float32Array;
  adaptStandardInput(adapted, r.input);
  const x = tf.tensor4d(adapted, std.shape);
  const got = predict(r.model, x);
  assertClose(got, wantOrt, 'native vs onnxruntime on the graph with spatial removed');
  // Independently: the .pth's weights through the torch mapping, on (x - 127.5) / 128.
  const { model: fromPth } = buildAndLoad(sd);
  const direct = nchwToNhwc(raw.map((v) => (v - 127.5) / 128), inp.shape);
  assertClose(got, predict(fromPth, direct), 'native vs the .pth on the same normalisation');
  tf.dispose([std, x, direct]);
  fromPth.dispose();

  // Re-exported at opset 11 it runs in onnxruntime, takes raw pixels like the original, and equals tfjs.
  const exported = applyInputConvention(exportOnnx(r.model, { opset: 11, spec: r.spec }), r.input);
  const m = onnx.ModelProto.decode(exported);
  assert.deepEqual(m.graph!.node!.slice(0, 2).map((n) => n.opType), ['Sub', 'Mul']);
  assert.equal(JSON.parse(m.metadataProps.find((p) => p.key === 'arcface_input')!.value!).std[0], 128);
  const reexported = await ortRun(exported, raw, inp.shape, false);
  assertClose(reexported, wantOrt, 'opset-11 re-export (raw input) vs the original graph');
  // ... and is recognised again with the same convention.
  const again = recogniseOnnxBackbone(exported);
  assert.deepEqual(again.input, r.input);
  again.model.dispose();
  r.model.dispose();
});

test('the graph eps (2e-5) is carried exactly (a Mul 1/127.5 variant against the PyTorch output)', { skip: skipUnlessFixture('iresnet_tiny') }, async () => {
  const sd = readTorchStateDict(sharedFixture('iresnet_tiny', 'backbone.pth')!);
  const r = recogniseOnnxBackbone(mxnetStyleIResNet(sd, { scale: 1 / 127.5 }));
  const inp = readNpy(sharedFixture('iresnet_tiny', 'input_nchw.npy')!);
  const x = nchwToNhwc(inp.data as Float32Array, inp.shape); // (x - 127.5) / 127.5 is what this graph computes
  assertFixtureClose(predict(r.model, x), readNpy(sharedFixture('iresnet_tiny', 'output.npy')!).data as Float32Array, 'eps 2e-5 graph vs PyTorch (eps 1e-5, var + 1e-5)');
  x.dispose();
  r.model.dispose();
});

test('graphs that are not an IResNet/MobileFaceNet say why and load as generic tfjs models', async () => {
  // Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm: a valid face-model shape, not a native network.
  const F = onnx.TensorProto.DataType.FLOAT;
  const w = (name: string, dims: number[]) => ({ name, dims, dataType: F, floatData: Array.from({ length: dims.reduce((a, b) => a * b, 1) }, (_, i) => Math.sin(i) * 0.1) });
  const vi = (name: string, dims: (number | string)[]) => ({ name, type: { tensorType: { elemType: F, shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } } } });
  const bytes = onnx.ModelProto.encode(
    onnx.ModelProto.create({
      irVersion: 7,
      opsetImport: [{ domain: '', version: 11 }],
      graph: {
        name: 'tiny',
        node: [
          { opType: 'Conv', input: ['x', 'cw'], output: ['c'], attribute: [{ name: 'kernel_shape', type: 7, ints: [3, 3] }, { name: 'pads', type: 7, ints: [1, 1, 1, 1] }] },
          { opType: 'Relu', input: ['c'], output: ['r'] },
          { opType: 'GlobalAveragePool', input: ['r'], output: ['g'] },
          { opType: 'Flatten', input: ['g'], output: ['f'] },
          { opType: 'Gemm', input: ['f', 'fw'], output: ['y'], attribute: [{ name: 'transB', type: 2, i: 1 }] },
        ],
        initializer: [w('cw', [8, 3, 3, 3]), w('fw', [16, 8])],
        input: [vi('x', ['n', 3, 32, 32])],
        output: [vi('y', ['n', 16])],
      },
    }),
  ).finish();
  const r = tryRecogniseOnnxBackbone(bytes);
  assert.ok(r instanceof NotRecognisedError);
  assert.match(r.message, /operator Relu .*is not part of an IResNet\/MobileFaceNet/);
  const file = path.join(tmp, 'generic.onnx');
  fs.writeFileSync(file, bytes);
  const loaded = await loadBackbone(file);
  assert.equal(loaded.spec, undefined);
  assert.match(loaded.note!, /generic tfjs model \(not an IResNet\/MobileFaceNet/);
  assert.deepEqual(inputConventionOf(loaded.model), STANDARD_INPUT);
  const x = tf.randomUniform([2, 32, 32, 3], -1, 1, 'float32', 3) as tf.Tensor4D;
  assert.ok(maxAbsDiff(predict(loaded.model, x), await ortRun(bytes, nhwcToNchw(x.dataSync(), x.shape), [2, 3, 32, 32], false)) < 1e-5);
  assert.ok(maxAbs(predict(loaded.model, x)) > 0);
  x.dispose();
  loaded.model.dispose();
});
