// Layout bookkeeping. ONNX feature maps are NCHW; tfjs convolutions want NHWC. Every symbolic value
// carries the permutation between its ONNX axes and its stored axes, so transposes cost nothing
// until an operator needs a particular layout, and only then become a Permute layer.
import * as tf from '@tensorflow/tfjs';
import { type ConstTensor, type Dim, alignShape, sizeOf, stridesOf, transposeConst } from './const-tensor.ts';
import type { ConvertContext, SymValue } from './context.ts';

export function identityPerm(rank: number): number[] {
  return Array.from({ length: rank }, (_, i) => i);
}

/** NCHW -> NHWC for rank 4 (and the same idea for other ranks: channel axis last). */
export function channelsLastPerm(rank: number): number[] {
  return rank < 3 ? identityPerm(rank) : [0, ...identityPerm(rank).slice(2), 1];
}

export function invertPerm(perm: readonly number[]): number[] {
  const inv = new Array<number>(perm.length);
  perm.forEach((p, i) => (inv[p] = i));
  return inv;
}

export function isIdentity(perm: readonly number[]): boolean {
  return perm.every((p, i) => p === i);
}

export function samePerm(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((p, i) => p === b[i]);
}

/** The ONNX shape of a symbolic value (batch and unknown dims are null). */
export function onnxShape(v: SymValue): Dim[] {
  const stored = v.t.shape as Dim[];
  if (v.flat) return [stored[0], stored[1]];
  const out = new Array<Dim>(stored.length);
  v.perm.forEach((p, j) => (out[p] = stored[j]));
  return out;
}

/**
 * For a flat value: stored column j holds ONNX column rowPerm[j] (the NCHW flatten index of the
 * element that the NHWC flatten puts at j).
 */
export function flatRowPerm(flat: NonNullable<SymValue['flat']>): Int32Array {
  const storedShape = flat.shape;
  const rank = storedShape.length + 1;
  // ONNX (pre-flatten) shape without batch: onnx axis perm[j] has stored size storedShape[j-1].
  const onnxDims = new Array<number>(rank - 1);
  flat.perm.forEach((p, j) => {
    if (j > 0) onnxDims[p - 1] = storedShape[j - 1];
  });
  const onnxStrides = stridesOf(onnxDims);
  const n = sizeOf(storedShape);
  const out = new Int32Array(n);
  const idx = new Array<number>(storedShape.length).fill(0);
  for (let j = 0; j < n; j++) {
    let off = 0;
    for (let d = 0; d < idx.length; d++) off += idx[d] * onnxStrides[flat.perm[d + 1] - 1];
    out[j] = off;
    for (let d = idx.length - 1; d >= 0; d--) {
      if (++idx[d] < storedShape[d]) break;
      idx[d] = 0;
    }
  }
  return out;
}

/** The value's tensor stored in layout `perm` (adds Reshape/Permute/Flatten layers as needed). */
export function inLayout(ctx: ConvertContext, v: SymValue, perm: readonly number[]): tf.SymbolicTensor {
  let t = v.t;
  const cur = v.perm;
  if (v.flat) {
    if (isIdentity(perm) && perm.length === 2 && isIdentity(v.flat.perm)) return t;
    if (perm.length !== 2) throw ctx.error(`internal: flat value requested in rank ${perm.length}`);
    // Undo the NHWC flatten: unflatten, move to ONNX order, flatten again.
    t = ctx.apply(tf.layers.reshape({ targetShape: v.flat.shape, name: ctx.layerName('unflatten') }), t);
    const toOnnx = permuteDims(v.flat.perm, identityPerm(v.flat.perm.length));
    t = ctx.apply(tf.layers.permute({ dims: toOnnx, name: ctx.layerName('to_nchw') }), t);
    return ctx.apply(tf.layers.flatten({ name: ctx.layerName('flatten') }), t);
  }
  if (samePerm(cur, perm)) return t;
  if (cur.length !== perm.length) throw ctx.error(`internal: layout rank mismatch`);
  const dims = permuteDims(cur, perm);
  const suffix = isIdentity(perm) ? 'to_onnx_layout' : samePerm(perm, channelsLastPerm(perm.length)) ? 'to_nhwc' : 'permute';
  return ctx.apply(tf.layers.permute({ dims, name: ctx.layerName(suffix) }), t);
}

/** Permute-layer dims (1-based, batch excluded) taking layout `from` to layout `to`. */
function permuteDims(from: readonly number[], to: readonly number[]): number[] {
  const storedOf = invertPerm(from); // onnx axis -> stored axis in `from`
  return to.slice(1).map((onnxAxis) => storedOf[onnxAxis]);
}

/**
 * A constant operand broadcast against an ONNX value of rank `rank`, rearranged into the stored
 * layout `perm`: returns its stored-order shape (length `rank`, batch axis included) and data.
 * Undefined when the constant has more axes than the value.
 */
export function constInLayout(c: ConstTensor, rank: number, perm: readonly number[]): ConstTensor | undefined {
  if (c.shape.length > rank) return undefined;
  const aligned = { ...c, shape: alignShape(c.shape, rank) } as ConstTensor;
  return isIdentity(perm) ? aligned : transposeConst(aligned, perm);
}
