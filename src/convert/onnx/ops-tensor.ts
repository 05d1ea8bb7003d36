// ONNX tensor-shape ops on computed tensors: Flatten, Reshape, Transpose, Concat, Unsqueeze,
// Squeeze. The batch axis must stay the first axis (a tfjs layers model cannot move it). Flattening
// an NHWC-stored map is free: the value is marked `flat` and Gemm/MatMul/BN reorder their weights.
import * as tf from '@tensorflow/tfjs';
import { type Dim, sizeOf, staticInts, valuesOf } from './const-tensor.ts';
import type { ConvertContext, SymValue, Value } from './context.ts';
import { symValue } from './context.ts';
import { constInLayout, identityPerm, inLayout, invertPerm, isIdentity, onnxShape } from './layout.ts';
import { OnnxOp } from './onnx-op-layer.ts';
import { normAxis, resolveReshape } from './static-eval.ts';

/** Flatten to [batch, rest]; free for an NHWC-stored map (marked flat). */
function flattenToBatch(ctx: ConvertContext, x: SymValue): SymValue {
  const xs = onnxShape(x);
  if (xs.length === 2) return x;
  const storedRest = (x.t.shape as Dim[]).slice(1);
  if (!isIdentity(x.perm) && storedRest.every((d) => d !== null)) {
    const t = ctx.apply(tf.layers.flatten({ name: ctx.layerName() }), x.t);
    return symValue(t, [0, 1], { shape: storedRest as number[], perm: x.perm });
  }
  const t = inLayout(ctx, x, identityPerm(xs.length));
  return symValue(ctx.apply(tf.layers.flatten({ name: ctx.layerName() }), t), [0, 1]);
}

/** Reshape keeping the batch axis; `rest` is the new non-batch shape (one -1 allowed). */
function reshapeRest(ctx: ConvertContext, x: SymValue, rest: number[]): SymValue {
  const xs = onnxShape(x);
  const t = inLayout(ctx, x, identityPerm(xs.length));
  return symValue(ctx.apply(tf.layers.reshape({ targetShape: rest, name: ctx.layerName() }), t), identityPerm(rest.length + 1));
}

export function convertFlatten(ctx: ConvertContext, inputs: (Value | undefined)[]): Value[] {
  const x = ctx.sym(inputs[0], 'input');
  const xs = onnxShape(x);
  const axis = ctx.int('axis', 1);
  const a = axis < 0 ? axis + xs.length : axis;
  if (a < 1 || a > xs.length) throw ctx.error(`Flatten axis ${axis} would merge the batch axis, which a layers model keeps separate`);
  if (xs.slice(1, a).some((d) => d !== 1)) {
    throw ctx.error(`Flatten axis ${axis} on [${xs}] would merge the batch axis, which a layers model keeps separate`);
  }
  if (a === xs.length) return [reshapeRest(ctx, x, [1])];
  return [flattenToBatch(ctx, x)];
}

export function convertReshape(ctx: ConvertContext, inputs: (Value | undefined)[]): Value[] {
  const x = ctx.sym(inputs[0], 'data');
  const xs = onnxShape(x);
  const target = resolveReshape(ctx, xs, valuesOf(ctx.const(inputs[1], 'shape')), ctx.int('allowzero', 0) === 1);
  const rest = target.slice(1);
  const inRest = xs.slice(1);
  if (rest.some((d) => d === null)) throw ctx.error(`Reshape target [${target}] has run-time dimensions past the batch axis`);
  // The first target dim must be the batch: symbolic (from Shape), copied (0), or -1/number whose rest matches.
  if (target[0] !== null) {
    const known = inRest.every((d) => d !== null);
    const restKnown = (rest as number[]).filter((d) => d !== -1);
    const fits =
      known &&
      (rest.includes(-1)
        ? sizeOf(inRest as number[]) % sizeOf(restKnown) === 0
        : sizeOf(rest as number[]) === sizeOf(inRest as number[]));
    if (!fits || (target[0] === -1 && rest.includes(-1))) {
      throw ctx.error(`Reshape from [${xs}] to [${target}] changes the batch axis, which a layers model keeps separate`);
    }
  }
  const r = rest as number[];
  if (r.length === 1 && (x.flat || xs.length === 2)) return [x];
  if (r.length === 1) return [flattenToBatch(ctx, x)];
  return [reshapeRest(ctx, x, r)];
}

export function convertTranspose(ctx: ConvertContext, inputs: (Value | undefined)[]): Value[] {
  let x = ctx.sym(inputs[0], 'data');
  const rank = onnxShape(x).length;
  const p = ctx.ints('perm') ?? identityPerm(rank).reverse();
  if (p.length !== rank) throw ctx.error(`perm [${p}] does not match rank ${rank}`);
  if (p[0] !== 0) throw ctx.error(`Transpose perm [${p}] moves the batch axis, which a layers model keeps first`);
  if (x.flat) x = symValue(inLayout(ctx, x, [0, 1]), [0, 1]);
  // A relabelling: stored axis j held input axis perm[j], which is output axis pinv[perm[j]].
  const pinv = invertPerm(p);
  return [symValue(x.t, x.perm.map((a) => pinv[a]))];
}

export function convertConcat(ctx: ConvertContext, inputs: (Value | undefined)[]): Value[] {
  const present = inputs.filter((v): v is Value => v !== undefined);
  const syms = present.filter((v): v is SymValue => v.kind === 'sym');
  const rank = onnxShape(syms[0]).length;
  const axis = normAxis(ctx, ctx.int('axis', 0), rank);
  if (axis === 0) throw ctx.error('Concat along the batch axis is not supported in a layers model');
  const first = syms[0].flat ? symValue(inLayout(ctx, syms[0], [0, 1]), [0, 1]) : syms[0];
  const perm = first.perm;
  const storedAxis = perm.indexOf(axis);
  if (syms.length === present.length) {
    const ts = syms.map((s, i) => (i === 0 ? first.t : inLayout(ctx, s, perm)));
    return [symValue(ctx.apply(tf.layers.concatenate({ axis: storedAxis, name: ctx.layerName() }), ts), perm)];
  }
  if (present.length !== 2) throw ctx.error('Concat of a computed tensor with several constants is not supported');
  const c = ctx.const(present.find((v) => v.kind === 'const'), 'constant operand');
  if (c.shape.length !== rank) throw ctx.error(`constant of shape [${c.shape}] does not match rank ${rank}`);
  const stored = constInLayout(c, rank, perm)!;
  ctx.customLayerCount++;
  const layer = new OnnxOp({ op: 'concat', axis: storedAxis, constFirst: present[0].kind === 'const', constShape: stored.shape, name: ctx.layerName() });
  const data = stored.dtype === 'float' ? stored.data : Float32Array.from(valuesOf(stored) as number[]);
  return [symValue(ctx.apply(layer, first.t, [tf.tensor(data, stored.shape)]), perm)];
}

export function convertUnsqueezeSqueeze(ctx: ConvertContext, inputs: (Value | undefined)[]): Value[] {
  const x = ctx.sym(inputs[0], 'data');
  const xs = onnxShape(x);
  const axesIn = inputs[1] ? staticInts(ctx.const(inputs[1], 'axes')) : ctx.ints('axes');
  let out: Dim[];
  if (ctx.opType === 'Unsqueeze') {
    if (!axesIn) throw ctx.error('Unsqueeze needs axes');
    const rank = xs.length + axesIn.length;
    const axes = axesIn.map((a) => normAxis(ctx, a, rank));
    let k = 0;
    out = Array.from({ length: rank }, (_, i) => (axes.includes(i) ? 1 : xs[k++]));
    if (axes.includes(0)) throw ctx.error('Unsqueeze at axis 0 would move the batch axis');
  } else {
    const axes = axesIn ? axesIn.map((a) => normAxis(ctx, a, xs.length)) : xs.flatMap((d, i) => (i > 0 && d === 1 ? [i] : []));
    if (axes.includes(0)) throw ctx.error('Squeeze of axis 0 would remove the batch axis');
    out = xs.filter((_, i) => !axes.includes(i));
  }
  const rest = out.slice(1);
  if (rest.some((d) => d === null)) throw ctx.error('needs a fixed shape past the batch axis');
  if (rest.length === 0) throw ctx.error('the result would have no axis besides the batch axis');
  return [reshapeRest(ctx, x, rest as number[])];
}
