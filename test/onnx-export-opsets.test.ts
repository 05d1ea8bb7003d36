// ONNX export across opsets 9/11/13/17 and for every layer kind the exporter maps, on a small hand-built
// model that hits the awkward cases (asymmetric ZeroPadding2D merged into a conv and, for a second
// consumer, a Pad node; TF 'same' padding with stride 2 on an odd size; depthwise multiplier 2; grouped
// conv; fused activations; an NHWC flatten feeding both Gemm and MatMul; a flatten or 4-D map as output),
// and on custom backbones (other widths, input and embedding sizes, mbf_large). Unsupported layers are
// clear errors naming the layer.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import * as ort from 'onnxruntime-node';
import { initBackend } from '../src/backend/select.ts';
import { exportOnnx } from '../src/onnx/export.ts';
import { irVersionFor } from '../src/onnx/builder.ts';
import { importOnnx } from '../src/convert/onnx/importer.ts';
import { onnx } from '../src/convert/onnx/reader.ts';
import { GroupedConv2D } from '../src/models/grouped-conv.ts';
import { buildBackbone, resolveSpec } from '../src/models/factory.ts';
import { assertFixtureClose, maxAbs, nhwcToNchw } from './helpers/compare.ts';
import { randomInput, randomizeWeights } from './helpers/random-weights.ts';

type Sym = tf.SymbolicTensor;

before(async () => {
  await initBackend('wasm', { quiet: true });
});

/** ORT output for an NHWC batch, as NCHW (4-D outputs) or [N, F]. */
async function ortForward(session: ort.InferenceSession, x: tf.Tensor4D): Promise<Float32Array> {
  const [n, h, w, c] = x.shape;
  const out = await session.run({ data: new ort.Tensor('float32', nhwcToNchw(x.dataSync(), x.shape), [n, c, h, w]) });
  return out[session.outputNames[0]!]!.data as Float32Array;
}

/** tfjs output in the layout the ONNX graph gives (NCHW for maps). */
function tfForward(model: tf.LayersModel, x: tf.Tensor4D): Float32Array {
  return tf.tidy(() => {
    const y = model.predict(x) as tf.Tensor;
    return (y.rank === 4 ? nhwcToNchw(y.dataSync(), y.shape) : y.dataSync()) as Float32Array;
  });
}

async function assertMatches(model: tf.LayersModel, bytes: Uint8Array, what: string): Promise<void> {
  const session = await ort.InferenceSession.create(bytes);
  for (const n of [5, 1]) {
    const x = randomInput(model, n, 20 + n);
    const want = tfForward(model, x);
    const scale = maxAbs(want);
    assert.ok(scale >= 1 && scale < 1e4, `${what}: output scale ${scale} outside [1, 1e4)`);
    assertFixtureClose(await ortForward(session, x), want, `${what} batch ${n}`);
    x.dispose();
  }
  await session.release();
}

/** Every layer kind the exporter maps, wired to hit the layout corner cases. Returns three views of one graph. */
function zoo(): { full: tf.LayersModel; flat: tf.LayersModel; map: tf.LayersModel } {
  const L = tf.layers;
  const input = tf.input({ shape: [9, 9, 3], name: 'data' });
  const padded = L.zeroPadding2d({ name: 'pad', padding: [[1, 2], [0, 1]] }).apply(input) as Sym; // 12x10
  const a = L.conv2d({ name: 'a', filters: 4, kernelSize: 3, useBias: true, activation: 'relu' }).apply(padded) as Sym; // 10x8
  const b1 = L.prelu({ name: 'b1', sharedAxes: [1, 2] }).apply(padded) as Sym; // needs a real Pad node
  const b = L.conv2d({ name: 'b', filters: 4, kernelSize: 3, useBias: false }).apply(b1) as Sym;
  const s = L.add({ name: 's' }).apply([a, b]) as Sym;
  const bnMap = L.batchNormalization({ name: 'bn_map', epsilon: 1e-3 }).apply(s) as Sym; // follows Add: never folded
  const d = L.depthwiseConv2d({ name: 'd', kernelSize: 3, strides: 2, padding: 'same', depthMultiplier: 2, useBias: true }).apply(bnMap) as Sym; // 5x4x8
  const gc = new GroupedConv2D({ name: 'gc', filters: 8, kernelSize: 3, padding: 'same', groups: 4 }).apply(d) as Sym;
  const bn = L.batchNormalization({ name: 'bn', center: false }).apply(gc) as Sym; // folded into gc
  const r = L.reLU({ name: 'r' }).apply(bn) as Sym;
  const f = L.flatten({ name: 'f' }).apply(r) as Sym; // 5*4*8 = 160, NHWC order
  const dr = L.dropout({ name: 'dr', rate: 0.5 }).apply(f) as Sym;
  const e1 = L.dense({ name: 'e1', units: 6, useBias: true }).apply(dr) as Sym; // Gemm
  const e2 = L.dense({ name: 'e2', units: 6, useBias: false }).apply(f) as Sym; // MatMul
  const e = L.add({ name: 'e' }).apply([e1, e2]) as Sym;
  const out = L.batchNormalization({ name: 'out', scale: false }).apply(e) as Sym;
  const full = tf.model({ inputs: input, outputs: out, name: 'zoo' });
  return {
    full,
    flat: tf.model({ inputs: input, outputs: f, name: 'zoo_flat' }), // flatten as output: real NHWC order
    map: tf.model({ inputs: input, outputs: r, name: 'zoo_map' }), // 4-D output, NCHW in ONNX
  };
}

test('opsets 9, 11, 13, 17 all run in onnxruntime and equal tfjs, folded and unfolded', async () => {
  const { full, flat, map } = zoo();
  randomizeWeights(full, { seed: 12 });
  for (const opset of [9, 11, 13, 17]) {
    for (const foldBatchNorm of [false, true]) {
      const bytes = exportOnnx(full, { opset, foldBatchNorm });
      const m = onnx.ModelProto.decode(bytes);
      assert.equal(Number(m.opsetImport[0]!.version), opset);
      assert.equal(Number(m.irVersion), irVersionFor(opset));
      const ops = m.graph!.node!.map((n) => n.opType);
      assert.equal(ops.filter((o) => o === 'Pad').length, 1, 'one Pad (for the PReLU); the convs take the padding');
      assert.equal(ops.filter((o) => o === 'BatchNormalization').length, foldBatchNorm ? 2 : 3);
      assert.ok(ops.includes('Gemm') && ops.includes('MatMul') && !ops.includes('Transpose'));
      await assertMatches(full, bytes, `zoo opset ${opset}${foldBatchNorm ? ' folded' : ''}`);
    }
    const flatBytes = exportOnnx(flat, { opset });
    assert.ok(onnx.ModelProto.decode(flatBytes).graph!.node!.some((n) => n.opType === 'Transpose'));
    await assertMatches(flat, flatBytes, `flatten output, opset ${opset}`);
    const mapBytes = exportOnnx(map, { opset, foldBatchNorm: true });
    const dims = onnx.ModelProto.decode(mapBytes).graph!.output![0]!.type!.tensorType!.shape!.dim!;
    assert.deepEqual(dims.map((d) => d.dimParam || Number(d.dimValue)), ['batch', 8, 5, 4]);
    await assertMatches(map, mapBytes, `4-D output, opset ${opset}`);
  }
  full.dispose();
});

test('custom backbones: other widths, input and embedding sizes, mbf_large', async () => {
  for (const spec of [
    resolveSpec({ network: 'iresnet', layers: [1, 2, 1, 1], widths: [16, 24, 32, 40], inputSize: 48, embeddingSize: 40 }),
    resolveSpec({ network: 'mbf_large', inputSize: 32, embeddingSize: 24 }),
  ]) {
    const model = buildBackbone(spec, { seed: 2 });
    randomizeWeights(model, { seed: 3 });
    await assertMatches(model, exportOnnx(model, { spec, opset: 13, foldBatchNorm: true }), spec.network);
    model.dispose();
  }
});

test('round trip tfjs -> ONNX -> tfjs (the project importer) keeps the output and the metadata', async () => {
  for (const [network, opts] of [
    ['r18', { opset: 9 }],
    ['mbf', { opset: 17, foldBatchNorm: true, embedNormalization: true }],
  ] as const) {
    const spec = resolveSpec({ network, inputSize: 32, embeddingSize: 32 });
    const model = buildBackbone(spec, { seed: 4 });
    randomizeWeights(model, { seed: 5 });
    const back = await importOnnx(exportOnnx(model, { spec, ...opts }), { name: `${network}.onnx` });
    assert.equal(back.customLayerCount, 0);
    assert.equal(back.normalisationBuiltIn, 'embedNormalization' in opts);
    assert.equal(back.metadata.network, network);
    const x = randomInput(model, 3, 6);
    const raw = tf.tidy(() => ('embedNormalization' in opts ? x.mul(127.5).add(127.5) : x.clone()) as tf.Tensor4D);
    const want = tfForward(model, x);
    assert.ok(maxAbs(want) >= 1);
    assertFixtureClose(tfForward(back.model, raw), want, `${network} round trip`);
    tf.dispose([x, raw]);
    back.model.dispose();
    model.dispose();
  }
});

test('unsupported layers and activations name the layer', () => {
  const input = tf.input({ shape: [8, 8, 3] });
  const pooled = tf.layers.maxPooling2d({ name: 'pool1', poolSize: 2 }).apply(input) as Sym;
  const pool = tf.model({ inputs: input, outputs: tf.layers.flatten().apply(pooled) as Sym });
  assert.throws(() => exportOnnx(pool), { name: 'ArcfaceError', message: /layer "pool1" \(MaxPooling2D\): this layer type has no ONNX export/ });
  const tanh = tf.model({ inputs: input, outputs: tf.layers.conv2d({ name: 'c_tanh', filters: 2, kernelSize: 1, activation: 'tanh' }).apply(input) as Sym });
  assert.throws(() => exportOnnx(tanh), /layer "c_tanh" \(Conv2D\): activation "tanh" is not supported/);
  pool.dispose();
  tanh.dispose();
});
