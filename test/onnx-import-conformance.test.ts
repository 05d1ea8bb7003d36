// ONNX's own node conformance cases (Debian libonnx-testdata) for every operator the importer
// supports: each case's first input is the model input, the others are fed as constants. Every
// discovered case must either match the expected output or be listed below with the reason,
// and a listed case must fail with a clear ArcfaceError (so the list cannot go stale silently).
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/select.ts';
import { ArcfaceError } from '../src/errors.ts';
import { type ConstTensor, importOnnx, readOnnxModel, readTensorProto } from '../src/convert/onnx/index.ts';

const ROOT = '/usr/share/libonnx-testdata/data/node';
const skipAll = existsSync(ROOT) ? false : `ONNX test data not installed (apt-get install libonnx-testdata gives ${ROOT})`;

/** The operator set (plus Div and Squeeze, which the importer also converts). */
const OPS = new Set([
  'Conv', 'BatchNormalization', 'PRelu', 'Relu', 'Add', 'Sub', 'Mul', 'Div', 'Flatten', 'Reshape', 'Gemm', 'MatMul',
  'Identity', 'Dropout', 'MaxPool', 'AveragePool', 'GlobalAveragePool', 'Concat', 'Transpose', 'Shape', 'Gather',
  'Unsqueeze', 'Squeeze', 'Constant',
]);

const REQUIRED = [
  'test_conv_with_strides_padding', 'test_conv_with_strides_no_padding', 'test_conv_with_autopad_same',
  'test_batchnorm_example', 'test_batchnorm_epsilon', 'test_prelu_example', 'test_prelu_broadcast',
  'test_globalaveragepool', 'test_maxpool_2d_default', 'test_maxpool_2d_pads', 'test_averagepool_2d_default',
  'test_relu', 'test_add_bcast', 'test_mul_bcast', 'test_flatten_axis1', 'test_gemm_default_vector_bias',
];

const BATCH = 'moves data across the first axis, which tfjs layers keep as the separate batch axis';
const UINT8 = 'uint8 input: tfjs layers models take float32 inputs';
const ONE_D = '1-D input: a layers model needs a feature axis besides the batch axis';
const SKIPPED: Record<string, string> = {
  test_add_uint8: UINT8, test_sub_uint8: UINT8, test_mul_uint8: UINT8, test_div_uint8: UINT8, test_maxpool_2d_uint8: UINT8,
  test_div_example: ONE_D, test_mul_example: ONE_D, test_sub_example: ONE_D, test_dropout_default_old: ONE_D,
  test_averagepool_1d_default: '1-D pooling (only 2-D image pooling is converted)',
  test_maxpool_1d_default: '1-D pooling (only 2-D image pooling is converted)',
  test_averagepool_3d_default: '3-D pooling (only 2-D image pooling is converted)',
  test_maxpool_3d_default: '3-D pooling (only 2-D image pooling is converted)',
  test_maxpool_with_argmax_2d_precomputed_pads: 'MaxPool Indices output (no tfjs layer returns argmax)',
  test_maxpool_with_argmax_2d_precomputed_strides: 'MaxPool Indices output (no tfjs layer returns argmax)',
  test_batchnorm_epsilon_training_mode: 'training-mode BatchNormalization (outputs running statistics)',
  test_batchnorm_example_training_mode: 'training-mode BatchNormalization (outputs running statistics)',
  test_dropout_default_mask: 'Dropout mask output', test_dropout_default_mask_ratio: 'Dropout mask output',
  test_training_dropout: 'training-mode Dropout (random)', test_training_dropout_default: 'training-mode Dropout (random)',
  test_training_dropout_zero_ratio: 'training-mode Dropout (random)',
  test_training_dropout_mask: 'Dropout mask output', test_training_dropout_default_mask: 'Dropout mask output',
  test_training_dropout_zero_ratio_mask: 'Dropout mask output',
  test_concat_1d_axis_0: BATCH, test_concat_1d_axis_negative_1: BATCH, test_concat_2d_axis_0: BATCH,
  test_concat_2d_axis_negative_2: BATCH, test_concat_3d_axis_0: BATCH, test_concat_3d_axis_negative_3: BATCH,
  test_flatten_axis0: BATCH, test_flatten_axis2: BATCH, test_flatten_axis3: BATCH, test_flatten_negative_axis1: BATCH,
  test_flatten_negative_axis2: BATCH, test_flatten_negative_axis4: BATCH,
  test_reshape_allowzero_reordered: BATCH, test_reshape_negative_extended_dims: BATCH, test_reshape_one_dim: BATCH,
  test_reshape_reordered_all_dims: BATCH,
  test_transpose_all_permutations_2: BATCH, test_transpose_all_permutations_3: BATCH,
  test_transpose_all_permutations_4: BATCH, test_transpose_all_permutations_5: BATCH, test_transpose_default: BATCH,
  test_unsqueeze_axis_0: BATCH, test_squeeze: BATCH,
  test_gemm_all_attributes: `transA on the computed input ${BATCH}`, test_gemm_transposeA: `transA on the computed input ${BATCH}`,
  test_matmul_3d: 'batched MatMul with a 3-D constant (only a 2-D constant weight maps to Dense)',
  test_matmul_4d: 'batched MatMul with a 4-D constant (only a 2-D constant weight maps to Dense)',
  test_gather_0: 'Gather on a computed tensor (Gather is converted only in shape arithmetic)',
  test_gather_1: 'Gather on a computed tensor (Gather is converted only in shape arithmetic)',
  test_gather_2d_indices: 'Gather on a computed tensor (Gather is converted only in shape arithmetic)',
  test_gather_negative_indices: 'Gather on a computed tensor (Gather is converted only in shape arithmetic)',
  test_constant: 'no graph input: the output is a constant, not a layers computation',
  test_identity_opt: 'optional-typed input (not a tensor)',
  test_identity_sequence: 'sequence-typed input (not a tensor)',
};
for (const s of ['', '_clip_end', '_clip_start', '_end_1', '_end_negative_1', '_example', '_start_1', '_start_1_end_2', '_start_1_end_negative_1', '_start_negative_1']) {
  SKIPPED[`test_shape${s}`] = 'the output is the (constant) input shape, not a layers computation';
}

interface Case {
  name: string;
  dir: string;
}

function discover(): Case[] {
  if (skipAll) return [];
  const cases: Case[] = [];
  for (const name of readdirSync(ROOT).sort()) {
    const file = path.join(ROOT, name, 'model.onnx');
    if (!existsSync(file)) continue;
    const ops = readOnnxModel(file).model.graph!.node!.map((n) => n.opType ?? '');
    if (ops.every((op) => OPS.has(op))) cases.push({ name, dir: path.join(ROOT, name) });
  }
  return cases;
}

/** Runs one case; returns the worst |got - expected| relative to the fixtures' bound (<= 1 passes). */
async function runCase(c: Case): Promise<number> {
  const file = path.join(c.dir, 'model.onnx');
  const graph = readOnnxModel(file).model.graph!;
  const inits = new Set((graph.initializer ?? []).map((i) => i.name));
  const inputNames = (graph.input ?? []).map((i) => i.name ?? '').filter((n) => !inits.has(n));
  const data = path.join(c.dir, 'test_data_set_0');
  const inputs = inputNames.map((_, i) => readTensorProto(path.join(data, `input_${i}.pb`)));
  const expected = (graph.output ?? []).map((_, i) => readTensorProto(path.join(data, `output_${i}.pb`)));
  const constants: Record<string, ConstTensor> = {};
  inputNames.slice(1).forEach((n, i) => (constants[n] = inputs[i + 1]));
  const r = await importOnnx(file, { constants });
  try {
    let worst = 0;
    const got = tf.tidy(() => {
      const x0 = tf.tensor(Array.from(inputs[0].data as ArrayLike<number>), inputs[0].shape, 'float32');
      const x = r.inputLayout === 'nhwc' ? x0.transpose([0, 2, 3, 1]) : x0;
      const ys = r.model.predict(x);
      return (Array.isArray(ys) ? ys : [ys]).map((y, i) => (r.outputLayouts[i] === 'nhwc' ? y.transpose([0, 3, 1, 2]) : y));
    });
    got.forEach((y, i) => {
      const want = expected[i];
      assert.deepEqual(y.shape, want.shape, `output ${i} shape`);
      const g = y.dataSync();
      const w = want.data as ArrayLike<number>;
      let diff = 0;
      let max = 0;
      for (let k = 0; k < w.length; k++) {
        diff = Math.max(diff, Math.abs(g[k] - (w[k] as number)));
        max = Math.max(max, Math.abs(w[k] as number));
      }
      worst = Math.max(worst, diff / (1e-4 + 2e-5 * max));
    });
    tf.dispose(got);
    return worst;
  } finally {
    r.model.dispose();
  }
}

before(async () => {
  await initBackend('wasm', { quiet: true });
});

const cases = discover();

test('the test data holds every required case', { skip: skipAll }, () => {
  const names = new Set(cases.map((c) => c.name));
  for (const n of REQUIRED) {
    assert.ok(names.has(n), `${n} not found among the discovered cases`);
    assert.ok(!(n in SKIPPED), `${n} is required and cannot be skipped`);
  }
  assert.ok(cases.length >= 100, `only ${cases.length} cases discovered`);
});

for (const c of cases) {
  const reason = SKIPPED[c.name];
  if (reason) {
    test(`${c.name} is refused with a clear error (skipped: ${reason})`, async () => {
      await assert.rejects(runCase(c), (e: unknown) => e instanceof ArcfaceError);
    });
  } else {
    test(`${c.name} matches ONNX's expected output`, async () => {
      const worst = await runCase(c);
      assert.ok(worst <= 1, `max|got-expected| is ${worst.toFixed(2)}x the bound 1e-4 + 2e-5*max|expected|`);
    });
  }
}
