// ONNX MaxPool / AveragePool / GlobalAveragePool (2-D) -> tfjs pooling layers in NHWC. Padding that
// tfjs' 'valid'/'same' cannot express falls back to the OnnxOp layer (ONNX pads MaxPool with -inf
// and, by default, leaves pads out of AveragePool's divisor).
import * as tf from '@tensorflow/tfjs';
import type { ConvertContext, Value } from './context.ts';
import { symValue } from './context.ts';
import { channelsLastPerm, inLayout, onnxShape } from './layout.ts';
import { OnnxOp } from './onnx-op-layer.ts';
import { type Pads4, isTfSame, isZero, resolvePads } from './padding.ts';

const NHWC = channelsLastPerm(4);

export function convertPool(ctx: ConvertContext, inputs: (Value | undefined)[], outputCount: number): Value[] {
  const kind = ctx.opType === 'MaxPool' ? 'max' : 'avg';
  const x = ctx.sym(inputs[0], 'X');
  const xs = onnxShape(x);
  if (xs.length !== 4) throw ctx.error(`only 2-D pooling on NCHW inputs is supported (input rank ${xs.length})`);
  if (outputCount > 1) throw ctx.error('the Indices output of MaxPool is not supported');
  const kernel = ctx.positiveInts('kernel_shape', 2);
  if (!kernel) throw ctx.error('kernel_shape must have 2 entries');
  const strides = ctx.positiveInts('strides', 2, [1, 1])!;
  const dilations = ctx.positiveInts('dilations', 2, [1, 1])!;
  const hw = [xs[2], xs[3]];
  const pads = resolvePads(ctx, hw, kernel, strides, dilations);
  const includePad = ctx.int('count_include_pad', 0) === 1;
  if (ctx.int('ceil_mode', 0) === 1) {
    // Ceil mode = extra padding at the end, ignored like the pads of a MaxPool.
    for (let i = 0; i < 2; i++) {
      const n = hw[i];
      if (n === null) throw ctx.error('ceil_mode needs a fixed input size');
      const span = n + pads[i] + pads[i + 2] - ((kernel[i] - 1) * dilations[i] + 1);
      const extra = Math.ceil(span / strides[i]) * strides[i] - span;
      if (extra > 0 && kind === 'avg' && includePad) throw ctx.error('ceil_mode with count_include_pad is not supported');
      pads[i + 2] += extra;
    }
  }
  const t = inLayout(ctx, x, NHWC);
  const dilated = dilations.some((d) => d > 1);
  const builtIn = (padding: 'same' | 'valid', input: tf.SymbolicTensor): tf.SymbolicTensor => {
    const args = { poolSize: kernel as [number, number], strides: strides as [number, number], padding, name: ctx.layerName() };
    return ctx.apply(kind === 'max' ? tf.layers.maxPooling2d(args) : tf.layers.averagePooling2d(args), input);
  };
  if (!dilated && isZero(pads)) return [symValue(builtIn('valid', t), NHWC)];
  // tfjs 'same' pools ignore the padded cells, as ONNX MaxPool and default AveragePool do.
  if (!dilated && !includePad && isTfSame(pads, hw, kernel, strides, dilations)) return [symValue(builtIn('same', t), NHWC)];
  if (!dilated && kind === 'avg' && includePad) {
    const pad = tf.layers.zeroPadding2d({ padding: [[pads[0], pads[2]], [pads[1], pads[3]]], name: ctx.layerName('pad') });
    return [symValue(builtIn('valid', ctx.apply(pad, t)), NHWC)];
  }
  if (dilated && strides.some((s) => s > 1)) throw ctx.error('dilated pooling with stride > 1 is not supported by tfjs');
  if (dilated && kind === 'avg' && includePad && !isZero(pads)) throw ctx.error('dilated AveragePool with count_include_pad is not supported');
  ctx.customLayerCount++;
  const layer = new OnnxOp({
    op: kind === 'max' ? 'maxpool' : 'avgpool',
    kernel,
    strides,
    dilations,
    pads: [...pads] as Pads4,
    name: ctx.layerName(),
  });
  return [symValue(ctx.apply(layer, t), NHWC)];
}

export function convertGlobalAveragePool(ctx: ConvertContext, inputs: (Value | undefined)[]): Value[] {
  const x = ctx.sym(inputs[0], 'X');
  const xs = onnxShape(x);
  if (xs.length !== 4) throw ctx.error(`only 2-D pooling on NCHW inputs is supported (input rank ${xs.length})`);
  const t = inLayout(ctx, x, NHWC);
  const [h, w, c] = [xs[2], xs[3], xs[1]];
  if (h !== null && w !== null) {
    const layer = tf.layers.averagePooling2d({ poolSize: [h, w], strides: [h, w], padding: 'valid', name: ctx.layerName() });
    return [symValue(ctx.apply(layer, t), NHWC)];
  }
  if (c === null) throw ctx.error('GlobalAveragePool needs a known channel count');
  const gap = ctx.apply(tf.layers.globalAveragePooling2d({ name: ctx.layerName() }), t);
  return [symValue(ctx.apply(tf.layers.reshape({ targetShape: [1, 1, c], name: ctx.layerName('keepdims') }), gap), NHWC)];
}
