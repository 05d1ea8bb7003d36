// tfjs weight layouts -> ONNX (torch) layouts, and BatchNorm folding into a convolution's weights.
// Same conventions as ../torch-mapping.ts: conv HWIO -> OIHW, depthwise [kh,kw,C,M] -> [C*M,1,kh,kw].
import type * as tf from '@tensorflow/tfjs';
import { transposeArray } from '../util/transpose.ts';

/** A layer's variable by its short name (`kernel`, `gamma`, …), or undefined. */
export function weightOf(layer: tf.layers.Layer, short: string): tf.LayerVariable | undefined {
  return layer.weights.find((w) => w.originalName.endsWith(`/${short}`) || w.name.endsWith(`/${short}`));
}

export function valuesOf(v: tf.LayerVariable): Float32Array {
  return Float32Array.from(v.read().dataSync() as Float32Array);
}

export interface ConvWeights {
  /** [O, I/group, kh, kw]. */
  weight: Float32Array;
  dims: [number, number, number, number];
  bias?: Float32Array;
}

/** Conv2D / GroupedConv2D kernel [kh,kw,I/g,O] -> [O,I/g,kh,kw]. */
export function convKernel(kernel: tf.LayerVariable): Pick<ConvWeights, 'weight' | 'dims'> {
  const [kh, kw, ci, co] = kernel.shape as number[];
  return { weight: transposeArray(valuesOf(kernel), [kh!, kw!, ci!, co!], [3, 2, 0, 1]), dims: [co!, ci!, kh!, kw!] };
}

/** DepthwiseConv2D kernel [kh,kw,C,M] -> [C*M,1,kh,kw] (output channel c*M+m, as tfjs orders them). */
export function depthwiseKernel(kernel: tf.LayerVariable): Pick<ConvWeights, 'weight' | 'dims'> {
  const [kh, kw, c, m] = kernel.shape as number[];
  return { weight: transposeArray(valuesOf(kernel), [kh!, kw!, c!, m!], [2, 3, 0, 1]), dims: [c! * m!, 1, kh!, kw!] };
}

export interface BatchNormParams {
  gamma: Float32Array;
  beta: Float32Array;
  mean: Float32Array;
  variance: Float32Array;
  epsilon: number;
}

/** A BatchNormalization layer's parameters; scale:false means gamma 1, center:false beta 0. */
export function batchNormParams(layer: tf.layers.Layer): BatchNormParams {
  const mean = valuesOf(weightOf(layer, 'moving_mean')!);
  const c = mean.length;
  const gamma = weightOf(layer, 'gamma');
  const beta = weightOf(layer, 'beta');
  return {
    gamma: gamma ? valuesOf(gamma) : new Float32Array(c).fill(1),
    beta: beta ? valuesOf(beta) : new Float32Array(c),
    mean,
    variance: valuesOf(weightOf(layer, 'moving_variance')!),
    epsilon: layer.getConfig().epsilon as number,
  };
}

/**
 * conv then BN as one conv (what torch.onnx.export does in eval mode), computed in float64:
 * W' = W * s, b' = (b - mean) * s + beta with s = gamma / sqrt(var + eps), per output channel.
 */
export function foldBatchNorm(conv: ConvWeights, bn: BatchNormParams): ConvWeights {
  const out = conv.dims[0];
  if (bn.mean.length !== out) throw new Error(`BatchNorm has ${bn.mean.length} channels, the conv ${out}`);
  const per = conv.weight.length / out;
  const weight = new Float32Array(conv.weight.length);
  const bias = new Float32Array(out);
  for (let o = 0; o < out; o++) {
    const s = bn.gamma[o]! / Math.sqrt(bn.variance[o]! + bn.epsilon);
    for (let i = o * per; i < (o + 1) * per; i++) weight[i] = conv.weight[i]! * s;
    bias[o] = ((conv.bias?.[o] ?? 0) - bn.mean[o]!) * s + bn.beta[o]!;
  }
  return { weight, dims: conv.dims, bias };
}

/** Rows of a Dense kernel [H*W*C, O] fed by an NHWC flatten, reordered for an NCHW flatten (c*H*W + y*W + x). */
export function nchwRows(kernel: Float32Array, [h, w, c]: [number, number, number], out: number): Float32Array {
  return transposeArray(kernel, [h, w, c, out], [2, 0, 1, 3]);
}

/** PReLU alpha [H',W',C] (H', W' are 1 where shared) -> ONNX slope [C,H',W']; rank-1 alphas stay. */
export function preluSlope(alpha: tf.LayerVariable): { slope: Float32Array; dims: number[] } {
  const shape = alpha.shape as number[];
  const data = valuesOf(alpha);
  if (shape.length === 1) return { slope: data, dims: shape };
  if (shape.length !== 3) throw new Error(`PReLU alpha of rank ${shape.length} is not supported`);
  return { slope: transposeArray(data, shape, [2, 0, 1]), dims: [shape[2]!, shape[0]!, shape[1]!] };
}
