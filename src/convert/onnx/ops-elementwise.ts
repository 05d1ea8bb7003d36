// Element-wise ONNX ops on tensors of any rank: Relu, PRelu, BatchNormalization (inference), and
// Add/Sub/Mul/Div. A constant operand becomes a built-in layer when one can do it exactly:
// a scalar -> Rescaling (x*s + o), one varying axis -> BatchNormalization with mean 0, var 1,
// epsilon 0 (x*gamma + beta). Anything else (several axes, the batch axis) uses the OnnxOp layer.
import * as tf from '@tensorflow/tfjs';
import { type ConstTensor, floatData } from './const-tensor.ts';
import type { ConvertContext, SymValue, Value } from './context.ts';
import { symValue } from './context.ts';
import { constInLayout, flatRowPerm, identityPerm, inLayout, onnxShape, samePerm } from './layout.ts';
import { type OnnxOpKind, OnnxOp } from './onnx-op-layer.ts';

type BinaryKind = 'add' | 'sub' | 'rsub' | 'mul' | 'div' | 'rdiv';

/** Reorders a per-feature vector of a flat value's K axis into its stored order. */
function permuteRows(values: Float32Array, rowPerm: Int32Array): Float32Array {
  return Float32Array.from(rowPerm, (src) => values[src]);
}

/** A constant laid out like `x` is stored (batch axis included), or undefined if it cannot be. */
function storedConst(x: SymValue, c: ConstTensor): ConstTensor | undefined {
  if (!x.flat) return constInLayout(c, onnxShape(x).length, x.perm);
  const aligned = constInLayout(c, 2, [0, 1]);
  if (!aligned || aligned.shape[0] !== 1) return undefined;
  if (aligned.shape[1] === 1) return aligned;
  const data = floatData(aligned);
  if (!data) return undefined;
  return { dtype: 'float', shape: aligned.shape, data: permuteRows(data, flatRowPerm(x.flat)) };
}

/** Plain layout (identity perm, no flatten), for ops that cannot follow a permuted one. */
function plain(ctx: ConvertContext, x: SymValue): SymValue {
  if (!x.flat && samePerm(x.perm, identityPerm(x.perm.length))) return x;
  return symValue(inLayout(ctx, x, identityPerm(onnxShape(x).length)), identityPerm(onnxShape(x).length));
}

function isPowerOfTwo(v: number): boolean {
  if (v === 0 || !Number.isFinite(v)) return false;
  const l = Math.log2(Math.abs(v));
  return Number.isInteger(l);
}

function customOp(ctx: ConvertContext, x: SymValue, stored: ConstTensor, op: OnnxOpKind): Value {
  ctx.customLayerCount++;
  const layer = new OnnxOp({ op, constShape: stored.shape, name: ctx.layerName() });
  const data = floatData(stored)!;
  return symValue(ctx.apply(layer, x.t, [tf.tensor(data, stored.shape)]), x.perm, x.flat);
}

export function binaryWithConst(ctx: ConvertContext, x0: SymValue, c: ConstTensor, op: BinaryKind): Value {
  let x = x0;
  let stored = storedConst(x, c);
  if (!stored && x.flat) {
    x = plain(ctx, x);
    stored = storedConst(x, c);
  }
  if (!stored) throw ctx.error(`constant of shape [${c.shape}] has more axes than the tensor it is applied to`);
  const values = floatData(stored);
  if (!values) throw ctx.error('the constant operand depends on the batch size');
  const xShape = x.t.shape;
  const varying = stored.shape.flatMap((d, i) => (d !== 1 ? [i] : []));
  const fitsX = stored.shape.every((d, i) => d === 1 || d === xShape[i]);
  const exactDiv = op === 'div' && values.every((v) => isPowerOfTwo(v));
  const affine = op === 'add' || op === 'sub' || op === 'rsub' || op === 'mul' || exactDiv;
  const scaleOf = (v: number): number => (op === 'mul' ? v : op === 'div' ? 1 / v : op === 'rsub' ? -1 : 1);
  const offsetOf = (v: number): number => (op === 'add' || op === 'rsub' ? v : op === 'sub' ? -v : 0);
  if (affine && varying.length === 0) {
    const layer = tf.layers.rescaling({ scale: scaleOf(values[0]), offset: offsetOf(values[0]), name: ctx.layerName() });
    return symValue(ctx.apply(layer, x.t), x.perm, x.flat);
  }
  if (affine && varying.length === 1 && varying[0] !== 0 && fitsX) {
    const n = values.length;
    const layer = tf.layers.batchNormalization({ axis: varying[0], epsilon: 0, trainable: false, name: ctx.layerName() });
    const weights = [
      tf.tensor1d(values.map(scaleOf)),
      tf.tensor1d(values.map(offsetOf)),
      tf.zeros([n]),
      tf.ones([n]),
    ];
    return symValue(ctx.apply(layer, x.t, weights), x.perm, x.flat);
  }
  return customOp(ctx, x, stored, op);
}

/** Two computed tensors of the same shape. */
function binarySym(ctx: ConvertContext, a0: SymValue, b0: SymValue, op: 'add' | 'sub' | 'mul'): Value {
  const sa = onnxShape(a0);
  const sb = onnxShape(b0);
  if (sa.length !== sb.length || sa.some((d, i) => d !== null && sb[i] !== null && d !== sb[i])) {
    throw ctx.error(`broadcasting between two computed tensors ([${sa}] and [${sb}]) is not supported`);
  }
  let a = a0;
  let b = b0;
  if (a.flat || b.flat) {
    const sameFlat = a.flat && b.flat && samePerm(a.flat.perm, b.flat.perm) && samePerm(a.flat.shape, b.flat.shape);
    if (!sameFlat) {
      a = plain(ctx, a);
      b = plain(ctx, b);
    }
  }
  const bt = a.flat ? b.t : inLayout(ctx, b, a.perm);
  if (op === 'mul') return symValue(ctx.apply(tf.layers.multiply({ name: ctx.layerName() }), [a.t, bt]), a.perm, a.flat);
  // a - b as a + (-1 * b): both steps are exact in IEEE arithmetic.
  const rhs = op === 'sub' ? ctx.apply(tf.layers.rescaling({ scale: -1, name: ctx.layerName('neg') }), bt) : bt;
  return symValue(ctx.apply(tf.layers.add({ name: ctx.layerName() }), [a.t, rhs]), a.perm, a.flat);
}

export function convertBinary(ctx: ConvertContext, inputs: (Value | undefined)[]): Value[] {
  const [a, b] = inputs;
  if (!a || !b) throw ctx.error('expects two inputs');
  const op = ctx.opType.toLowerCase() as 'add' | 'sub' | 'mul' | 'div';
  if (a.kind === 'sym' && b.kind === 'sym') {
    if (op === 'div') throw ctx.error('division of two computed tensors is not supported');
    return [binarySym(ctx, a, b, op)];
  }
  if (a.kind === 'sym' && b.kind === 'const') return [binaryWithConst(ctx, a, b.c, op)];
  if (a.kind === 'const' && b.kind === 'sym') {
    const swapped: BinaryKind = op === 'sub' ? 'rsub' : op === 'div' ? 'rdiv' : op;
    return [binaryWithConst(ctx, b, a.c, swapped)];
  }
  throw ctx.error('internal: constant inputs should have been folded');
}

export function convertRelu(ctx: ConvertContext, inputs: (Value | undefined)[]): Value[] {
  const x = ctx.sym(inputs[0], 'X');
  return [symValue(ctx.apply(tf.layers.reLU({ name: ctx.layerName() }), x.t), x.perm, x.flat)];
}

export function convertPRelu(ctx: ConvertContext, inputs: (Value | undefined)[]): Value[] {
  let x = ctx.sym(inputs[0], 'X');
  const slope = ctx.const(inputs[1], 'slope');
  if (x.flat) x = plain(ctx, x);
  const stored = storedConst(x, slope);
  if (!stored) throw ctx.error(`slope of shape [${slope.shape}] has more axes than the input`);
  const data = floatData(stored)!;
  const xShape = x.t.shape;
  const perAxis = stored.shape.slice(1).every((d, i) => d === 1 || d === xShape[i + 1]);
  if (stored.shape[0] !== 1 || !perAxis) return [customOp(ctx, x, stored, 'prelu')];
  // tfjs PReLU: alpha has the input's non-batch shape, with 1 on the shared axes.
  const sharedAxes = stored.shape.flatMap((d, i) => (i > 0 && d === 1 ? [i] : []));
  const layer = tf.layers.prelu({ sharedAxes: sharedAxes.length ? sharedAxes : undefined, name: ctx.layerName() });
  return [symValue(ctx.apply(layer, x.t, [tf.tensor(data, stored.shape.slice(1))]), x.perm, x.flat)];
}

export function convertBatchNorm(ctx: ConvertContext, inputs: (Value | undefined)[], outputCount: number): Value[] {
  const x = ctx.sym(inputs[0], 'X');
  if (ctx.int('training_mode', 0) === 1 || outputCount > 1) {
    throw ctx.error('training-mode BatchNormalization (running statistics outputs) is not supported');
  }
  const [scale, bias, mean, variance] = [1, 2, 3, 4].map((i) => {
    const d = floatData(ctx.const(inputs[i], ['scale', 'B', 'mean', 'var'][i - 1]));
    if (!d) throw ctx.error('BatchNormalization parameters must be float constants');
    return d;
  });
  const xs = onnxShape(x);
  const C = xs[1];
  if (xs.length < 2 || [scale, bias, mean, variance].some((p) => p.length !== C)) {
    throw ctx.error(`parameters of length ${scale.length} do not match ${C ?? 'unknown'} channels`);
  }
  const params = x.flat ? [scale, bias, mean, variance].map((p) => permuteRows(p, flatRowPerm(x.flat!))) : [scale, bias, mean, variance];
  const axis = x.flat ? 1 : x.perm.indexOf(1);
  const layer = tf.layers.batchNormalization({
    axis,
    epsilon: ctx.float('epsilon', 1e-5),
    momentum: ctx.float('momentum', 0.9),
    name: ctx.layerName(),
  });
  return [symValue(ctx.apply(layer, x.t, params.map((p) => tf.tensor1d(p))), x.perm, x.flat)];
}
