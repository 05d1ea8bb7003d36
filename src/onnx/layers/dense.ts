// Dense: inference as Gemm (with bias, weight stored [out, in] as torch exports nn.Linear) or MatMul,
// absorbing an NCHW-ordered flatten by permuting the kernel's rows; training as MatMul (+ Add).
import type * as tf from '@tensorflow/tfjs';
import type { InferContext, LayerFamily, Sym, TrainContext, TrainValue } from '../context.ts';
import { transposeArray } from '../../util/transpose.ts';
import { valuesOf, weightOf } from '../weights.ts';

/** Rows of a Dense kernel [H*W*C, O] fed by an NHWC flatten, reordered for an NCHW flatten (c*H*W + y*W + x). */
export function nchwRows(kernel: Float32Array, [h, w, c]: [number, number, number], out: number): Float32Array {
  return transposeArray(kernel, [h, w, c, out], [2, 0, 1, 3]);
}

function infer(cx: InferContext, layer: tf.layers.Layer, inputs: Sym[], outputs: Sym[]): void {
  const x = cx.one(layer, inputs);
  if (x.shape.length !== 1) cx.fail(layer, `Dense on a rank-${x.shape.length + 1} input is not supported (flatten first)`);
  const g = cx.g;
  const kernel = weightOf(layer, 'kernel')!;
  const [inF, outF] = kernel.shape as [number, number];
  let k = valuesOf(kernel); // [in, out]
  if (x.flatOf) k = nchwRows(k, x.flatOf, outF);
  const bias = weightOf(layer, 'bias');
  let name: string;
  if (bias) {
    const wT = transposeArray(k, [inF, outF], [1, 0]);
    const ins = [x.name, g.floatInit(`${layer.name}.weight`, [outF, inF], wT), g.floatInit(`${layer.name}.bias`, [outF], valuesOf(bias))];
    name = g.node('Gemm', ins, layer.name, { alpha: { float: 1 }, beta: { float: 1 }, transB: 1 });
  } else {
    name = g.node('MatMul', [x.name, g.floatInit(`${layer.name}.weight`, [inF, outF], k)], layer.name);
  }
  cx.set(outputs[0]!, { name: cx.activation(layer, name), shape: outputs[0]!.shape.slice(1) as number[] });
}

function train(cx: TrainContext, layer: tf.layers.Layer, ins: TrainValue[]): TrainValue {
  const x = cx.plain(cx.one(layer, ins));
  const cfg = layer.getConfig();
  if (((cfg.activation as string | undefined) ?? 'linear') !== 'linear') cx.fail(layer, `activation "${String(cfg.activation)}"`);
  if (x.dims.length !== 2) cx.fail(layer, 'rank-2 input expected');
  const kernel = layer.weights.find((wt) => /kernel$/.test(wt.originalName))!;
  const bias = layer.weights.find((wt) => /bias$/.test(wt.originalName));
  const k = cx.param(kernel, kernel.trainable);
  const ln = layer.name;
  let y = cx.f.node('MatMul', [x.name, k], `${ln}.mm`);
  if (bias) y = cx.f.node('Add', [y, cx.param(bias, bias.trainable)], ln);
  const out: TrainValue = { name: y, dims: [x.dims[0]!, kernel.shape[1]!], requiresGrad: true };
  cx.tape(() => {
    const dy = cx.gradOf(out);
    if (!dy) return;
    const b = cx.b;
    const xs = cx.save(x);
    if (kernel.trainable) cx.emitParamGrad(kernel, b.node('Gemm', [xs, dy], `${ln}.dk`, { transA: 1 }));
    if (bias?.trainable) cx.emitParamGrad(bias, b.node('ReduceSum', [dy, cx.i64(b, 'axes', [0])], `${ln}.db`, { keepdims: 0 }));
    if (x.requiresGrad) cx.addGrad(x, b.node('Gemm', [dy, cx.paramB(kernel)], `${ln}.dx`, { transB: 1 }));
  });
  return out;
}

export const denseFamily: LayerFamily = { classes: ['Dense'], infer, train };
