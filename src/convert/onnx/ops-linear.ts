// ONNX Gemm and MatMul with a constant weight -> tfjs Dense. When the input is an NHWC map
// flattened in NHWC order (see `flat` in context.ts), the weight rows are permuted to match,
// so the converted model has no run-time transpose before its fully-connected layer.
import * as tf from '@tensorflow/tfjs';
import { type ConstTensor, alignShape, floatData, transposeConst } from './const-tensor.ts';
import type { ConvertContext, SymValue, Value } from './context.ts';
import { symValue } from './context.ts';
import { flatRowPerm, identityPerm, inLayout, onnxShape } from './layout.ts';
import { binaryWithConst } from './ops-elementwise.ts';

/** Dense(x @ kernel [K, N] + bias), permuting kernel rows for a flat input. */
function dense(ctx: ConvertContext, x: SymValue, kernel: Float32Array, K: number, N: number, bias?: Float32Array): SymValue {
  const xs = onnxShape(x);
  if (xs[xs.length - 1] !== null && xs[xs.length - 1] !== K) {
    throw ctx.error(`input has ${xs[xs.length - 1]} features but the weight has ${K} rows`);
  }
  let t = x.t;
  let rows = kernel;
  if (x.flat) {
    const perm = flatRowPerm(x.flat);
    rows = new Float32Array(K * N);
    for (let j = 0; j < K; j++) rows.set(kernel.subarray(perm[j] * N, perm[j] * N + N), j * N);
  } else {
    t = inLayout(ctx, x, identityPerm(xs.length));
  }
  const layer = tf.layers.dense({ units: N, useBias: bias !== undefined, name: ctx.layerName() });
  const weights: tf.Tensor[] = [tf.tensor2d(rows, [K, N])];
  if (bias) weights.push(tf.tensor1d(bias));
  return symValue(ctx.apply(layer, t, weights), identityPerm(xs.length));
}

function floats(ctx: ConvertContext, c: ConstTensor, what: string): Float32Array {
  const d = floatData(c);
  if (!d) throw ctx.error(`${what} must be a float constant`);
  return d;
}

export function convertGemm(ctx: ConvertContext, inputs: (Value | undefined)[]): Value[] {
  const a = ctx.sym(inputs[0], 'A');
  const b = ctx.const(inputs[1], 'B');
  const c = inputs[2] ? ctx.const(inputs[2], 'C') : undefined;
  if (ctx.int('transA', 0) === 1) throw ctx.error('transA on a computed input would move the batch axis');
  if (onnxShape(a).length !== 2 || b.shape.length !== 2) throw ctx.error('Gemm needs 2-D A and B');
  const bT = ctx.int('transB', 0) === 1 ? transposeConst(b, [1, 0]) : b;
  const [K, N] = bT.shape;
  const alpha = ctx.float('alpha', 1);
  const beta = ctx.float('beta', 1);
  const kernel = floats(ctx, bT, 'B');
  const scaled = alpha === 1 ? kernel : kernel.map((v) => v * alpha);
  if (!c) return [dense(ctx, a, scaled, K, N)];
  const cData = floats(ctx, c, 'C').map((v) => v * beta);
  const cShape = alignShape(c.shape, 2);
  if (cShape[0] === 1 && (cShape[1] === N || cShape[1] === 1)) {
    const bias = cShape[1] === N ? cData : new Float32Array(N).fill(cData[0]);
    return [dense(ctx, a, scaled, K, N, bias)];
  }
  // A bias that varies along the batch axis: add it as a constant after the Dense.
  const y = dense(ctx, a, scaled, K, N);
  return [binaryWithConst(ctx, y, { dtype: 'float', shape: c.shape, data: cData }, 'add')];
}

export function convertMatMul(ctx: ConvertContext, inputs: (Value | undefined)[]): Value[] {
  const a = ctx.sym(inputs[0], 'A');
  const b = ctx.const(inputs[1], 'B');
  if (b.shape.length !== 2) throw ctx.error(`only a 2-D constant B is supported (got [${b.shape}])`);
  if (onnxShape(a).length < 2) throw ctx.error('A must have a batch axis and a feature axis');
  const [K, N] = b.shape;
  return [dense(ctx, a, floats(ctx, b, 'B'), K, N)];
}
