// A hand-built ONNX graph with what the fixtures lack, checked against onnxruntime-node: input
// normalisation in the graph (scalar and per-channel), grouped conv with bias, stride-2 padded
// MaxPool on an even size (ONNX -inf padding), Concat of branches, the torch Shape/Gather/
// Unsqueeze/Concat -> Reshape idiom on a 4x4 map feeding Gemm(transB), and a 4-D second output.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as ort from 'onnxruntime-node';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/select.ts';
import { importOnnx, onnx } from '../src/convert/onnx/index.ts';

before(async () => {
  await initBackend('wasm', { quiet: true });
});

/** Deterministic uniform values in [lo, hi). */
function uniform(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return lo + ((hi - lo) * s) / 2 ** 32;
  });
}

const F = onnx.TensorProto.DataType.FLOAT;
const I64 = onnx.TensorProto.DataType.INT64;
const floatInit = (name: string, dims: number[], data: Float32Array) => ({ name, dims, dataType: F, floatData: Array.from(data) });
const node = (name: string, opType: string, input: string[], output: string[], attribute: object[] = []) => ({ name, opType, input, output, attribute });
const ints = (name: string, v: number[]) => ({ name, type: onnx.AttributeProto.AttributeType.INTS, ints: v });
const int = (name: string, v: number) => ({ name, type: onnx.AttributeProto.AttributeType.INT, i: v });
const valueInfo = (name: string, dims: (number | string)[]) => ({
  name,
  type: { tensorType: { elemType: F, shape: { dim: dims.map((d) => (typeof d === 'string' ? { dimParam: d } : { dimValue: d })) } } },
});

function buildModel(): Uint8Array {
  const graph = {
    name: 'synthetic_face_head',
    initializer: [
      floatInit('c127', [], Float32Array.of(127.5)),
      floatInit('c_scale', [], Float32Array.of(0.0078125)),
      floatInit('mean_rgb', [1, 3, 1, 1], Float32Array.of(0.1, -0.2, 0.05)),
      floatInit('w1', [8, 3, 3, 3], uniform(216, 1, -0.5, 0.5)),
      floatInit('b1', [8], uniform(8, 2)),
      floatInit('slope', [1], Float32Array.of(0.25)),
      floatInit('w2', [8, 2, 3, 3], uniform(144, 3, -0.5, 0.5)),
      floatInit('b2', [8], uniform(8, 4)),
      floatInit('w3', [8, 8, 1, 1], uniform(64, 5, -0.5, 0.5)),
      floatInit('w_fc', [10, 256], uniform(2560, 6, -0.1, 0.1)),
      floatInit('b_fc', [10], uniform(10, 7)),
    ],
    node: [
      node('norm/Sub', 'Sub', ['data', 'c127'], ['x1']),
      node('norm/Mul', 'Mul', ['x1', 'c_scale'], ['x2']),
      node('norm/SubMean', 'Sub', ['x2', 'mean_rgb'], ['x3']),
      node('stem/Conv', 'Conv', ['x3', 'w1', 'b1'], ['c1'], [ints('kernel_shape', [3, 3]), ints('pads', [1, 1, 1, 1]), ints('strides', [2, 2])]),
      node('stem/PRelu', 'PRelu', ['c1', 'slope'], ['p1']),
      node('group/Conv', 'Conv', ['p1', 'w2', 'b2'], ['g1'], [ints('kernel_shape', [3, 3]), ints('pads', [1, 1, 1, 1]), int('group', 4)]),
      node('pool/MaxPool', 'MaxPool', ['g1'], ['m1'], [ints('kernel_shape', [3, 3]), ints('pads', [1, 1, 1, 1]), ints('strides', [2, 2])]),
      node('proj/Conv', 'Conv', ['m1', 'w3'], ['c3'], [ints('kernel_shape', [1, 1])]),
      node('cat/Concat', 'Concat', ['m1', 'c3'], ['cat'], [int('axis', 1)]),
      node('cat/Relu', 'Relu', ['cat'], ['r1']),
      node('drop/Dropout', 'Dropout', ['r1'], ['d1']),
      node('flat/Shape', 'Shape', ['d1'], ['s1']),
      node('flat/Constant', 'Constant', [], ['zero'], [{ name: 'value', type: onnx.AttributeProto.AttributeType.TENSOR, t: { dims: [], dataType: I64, int64Data: [0] } }]),
      node('flat/Gather', 'Gather', ['s1', 'zero'], ['n'], [int('axis', 0)]),
      node('flat/Unsqueeze', 'Unsqueeze', ['n'], ['n1'], [ints('axes', [0])]),
      node('flat/Constant_1', 'Constant', [], ['minus1'], [{ name: 'value', type: onnx.AttributeProto.AttributeType.TENSOR, t: { dims: [1], dataType: I64, int64Data: [-1] } }]),
      node('flat/Concat', 'Concat', ['n1', 'minus1'], ['shape'], [int('axis', 0)]),
      node('flat/Reshape', 'Reshape', ['d1', 'shape'], ['flat']),
      node('fc/Gemm', 'Gemm', ['flat', 'w_fc', 'b_fc'], ['embedding'], [int('transB', 1)]),
      node('gap/GlobalAveragePool', 'GlobalAveragePool', ['r1'], ['pooled']),
    ],
    input: [valueInfo('data', ['N', 3, 16, 16])],
    output: [valueInfo('embedding', ['N', 10]), valueInfo('pooled', ['N', 16, 1, 1])],
  };
  const model = onnx.ModelProto.create({ irVersion: 6, producerName: 'arcface-ts-test', opsetImport: [{ domain: '', version: 11 }], graph });
  return onnx.ModelProto.encode(model).finish();
}

test('a graph with built-in normalisation, grouped conv, padded MaxPool and shape-computed Reshape matches onnxruntime', async () => {
  const bytes = buildModel();
  const batch = 3;
  const input = uniform(batch * 3 * 16 * 16, 11, 0, 255);
  const session = await ort.InferenceSession.create(bytes);
  const ref = await session.run({ data: new ort.Tensor('float32', input, [batch, 3, 16, 16]) });

  const r = await importOnnx(bytes, { name: 'synthetic.onnx' });
  assert.equal(r.inputName, 'data');
  assert.deepEqual(r.inputShapeNCHW, [null, 3, 16, 16]);
  assert.equal(r.normalisationBuiltIn, true);
  assert.deepEqual(r.outputLayouts, ['onnx', 'nhwc']);
  assert.equal(r.customLayerCount, 1, 'only the -inf padded MaxPool needs the OnnxOp layer');
  const classes = r.model.layers.map((l) => l.getClassName());
  assert.ok(!classes.includes('Permute'), 'NCHW flatten order is folded into the Gemm weights');
  assert.ok(classes.includes('Rescaling') && classes.includes('DepthwiseConv2D'));

  const [emb, pooled] = tf.tidy(() => {
    const x = tf.tensor4d(input, [batch, 3, 16, 16]).transpose([0, 2, 3, 1]);
    const [e, p] = r.model.predict(x) as tf.Tensor[];
    return [e, p.transpose([0, 3, 1, 2])];
  });
  for (const [got, name] of [[emb, 'embedding'], [pooled, 'pooled']] as const) {
    const want = ref[name].data as Float32Array;
    assert.deepEqual(got.shape, ref[name].dims);
    const g = got.dataSync();
    let diff = 0;
    let max = 0;
    want.forEach((w, i) => {
      diff = Math.max(diff, Math.abs(g[i] - w));
      max = Math.max(max, Math.abs(w));
    });
    assert.ok(max > 0.5, `${name}: reference output too small to be a meaningful check (${max})`);
    assert.ok(diff <= 1e-4 + 2e-5 * max, `${name}: max|got-expected| = ${diff}`);
  }
  tf.dispose([emb, pooled]);
  r.model.dispose();
});
