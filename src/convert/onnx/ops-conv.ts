// ONNX Conv (2-D, any group count, optional bias) -> tfjs Conv2D / DepthwiseConv2D layers in NHWC.
// Grouped convolution (1 < groups < channels) becomes a depthwise conv with channel multiplier
// cout/groups followed by an exact sum over each group's inputs (a Dense with a 0/1 kernel), so a
// converted MobileFaceNet uses built-in layers only and loads in plain tfjs.
import * as tf from '@tensorflow/tfjs';
import { floatData } from './const-tensor.ts';
import type { ConvertContext, Value } from './context.ts';
import { symValue } from './context.ts';
import { channelsLastPerm, inLayout, onnxShape } from './layout.ts';
import { type Pads4, isTfSame, isZero, resolvePads } from './padding.ts';

const NHWC = channelsLastPerm(4);

/** Pads `t` explicitly when tfjs' own 'same'/'valid' cannot express `pads`; returns the padding mode. */
export function padForConv(
  ctx: ConvertContext,
  t: tf.SymbolicTensor,
  pads: Pads4,
  hw: (number | null)[],
  kernel: number[],
  strides: number[],
  dilations: number[],
): { t: tf.SymbolicTensor; padding: 'same' | 'valid' } {
  if (isZero(pads)) return { t, padding: 'valid' };
  if (isTfSame(pads, hw, kernel, strides, dilations)) return { t, padding: 'same' };
  const layer = tf.layers.zeroPadding2d({ padding: [[pads[0], pads[2]], [pads[1], pads[3]]], name: ctx.layerName('pad') });
  return { t: ctx.apply(layer, t), padding: 'valid' };
}

export function convertConv(ctx: ConvertContext, inputs: (Value | undefined)[]): Value[] {
  const x = ctx.sym(inputs[0], 'X');
  const w = ctx.const(inputs[1], 'W');
  const b = inputs[2] ? ctx.const(inputs[2], 'B') : undefined;
  const xs = onnxShape(x);
  if (w.shape.length !== 4 || xs.length !== 4) {
    throw ctx.error(`only 2-D convolutions on NCHW inputs are supported (input rank ${xs.length}, weight rank ${w.shape.length})`);
  }
  const [M, kc, kh, kw] = w.shape;
  const C = xs[1];
  if (C === null) throw ctx.error('the input channel count must be known');
  const groups = ctx.int('group', 1);
  if (!Number.isSafeInteger(groups) || groups < 1) throw ctx.error(`attribute group must be an integer >= 1, got ${groups}`);
  if (C % groups !== 0 || M % groups !== 0 || kc * groups !== C) {
    throw ctx.error(`weight [${w.shape}] does not fit ${C} input channels in ${groups} groups`);
  }
  const strides = ctx.positiveInts('strides', 2, [1, 1])!;
  const dilations = ctx.positiveInts('dilations', 2, [1, 1])!;
  if (dilations.some((d) => d > 1) && strides.some((s) => s > 1)) {
    throw ctx.error('dilation together with stride > 1 is not supported by tfjs convolutions');
  }
  const hw = [xs[2], xs[3]];
  const pads = resolvePads(ctx, hw, [kh, kw], strides, dilations);
  const wData = floatData(w)!;
  const bData = b ? floatData(b) : undefined;
  if (b && (!bData || bData.length !== M)) throw ctx.error(`bias has shape [${b.shape}], expected [${M}]`);

  const padded = padForConv(ctx, inLayout(ctx, x, NHWC), pads, hw, [kh, kw], strides, dilations);
  const common = {
    kernelSize: [kh, kw] as [number, number],
    strides: strides as [number, number],
    padding: padded.padding,
    dilationRate: dilations as [number, number],
    useBias: bData !== undefined,
  };
  const wT = (shape: number[], perm: number[], outShape?: number[]): tf.Tensor =>
    tf.tidy(() => {
      const t = tf.tensor(wData, shape).transpose(perm);
      return outShape ? t.reshape(outShape) : t;
    });

  if (groups === 1) {
    const layer = tf.layers.conv2d({ ...common, filters: M, name: ctx.layerName() });
    const weights = [wT([M, C, kh, kw], [2, 3, 1, 0])];
    if (bData) weights.push(tf.tensor1d(bData));
    return [symValue(ctx.apply(layer, padded.t, weights), NHWC)];
  }

  const m = M / groups; // outputs per group
  if (groups === C) {
    // Depthwise: output channel c*m + j reads input channel c.
    const layer = tf.layers.depthwiseConv2d({ ...common, depthMultiplier: m, name: ctx.layerName() });
    const weights = [wT([C, m, kh, kw], [2, 3, 0, 1])];
    if (bData) weights.push(tf.tensor1d(bData));
    return [symValue(ctx.apply(layer, padded.t, weights), NHWC)];
  }

  // Grouped: depthwise channel (g*kc + i)*m + j = input channel g*kc+i times W[g*m+j, i]; the
  // bias rides on the i = 0 term so the group sum adds it exactly once.
  const dw = tf.layers.depthwiseConv2d({ ...common, depthMultiplier: m, name: ctx.layerName() });
  const dwWeights = [wT([groups, m, kc, kh, kw], [3, 4, 0, 2, 1], [kh, kw, C, m])];
  if (bData) {
    const bias = new Float32Array(C * m);
    for (let g = 0; g < groups; g++) for (let j = 0; j < m; j++) bias[g * kc * m + j] = bData[g * m + j];
    dwWeights.push(tf.tensor1d(bias));
  }
  const y = ctx.apply(dw, padded.t, dwWeights);
  const [, oh, ow] = y.shape;
  if (oh === null || ow === null) throw ctx.error('grouped convolution needs a fixed input size');
  const perGroup = ctx.apply(tf.layers.reshape({ targetShape: [oh * ow * groups, kc * m], name: ctx.layerName('groups') }), y);
  const sumKernel = new Float32Array(kc * m * m);
  for (let i = 0; i < kc; i++) for (let j = 0; j < m; j++) sumKernel[(i * m + j) * m + j] = 1;
  const sum = tf.layers.dense({ units: m, useBias: false, trainable: false, name: ctx.layerName('group_sum') });
  const summed = ctx.apply(sum, perGroup, [tf.tensor2d(sumKernel, [kc * m, m])]);
  const out = ctx.apply(tf.layers.reshape({ targetShape: [oh, ow, M], name: ctx.layerName('merge') }), summed);
  return [symValue(out, NHWC)];
}
