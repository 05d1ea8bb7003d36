// Small factories for the layers both backbone families use, named after the PyTorch module that
// holds the same weights, so that checkpoint import/export maps names one to one.
import * as tf from '@tensorflow/tfjs';
import { GroupedConv2D } from './grouped-conv.ts';

/** tfjs-layers' initializer type (not exported by name from @tensorflow/tfjs). */
export type Initializer = ReturnType<typeof tf.initializers.zeros>;

type Sym = tf.SymbolicTensor;

/** PyTorch BatchNorm defaults (eps 1e-5, momentum 0.1 -> tfjs decay 0.9). */
export function batchNorm(name: string, x: Sym, opts: { scale?: boolean } = {}): Sym {
  return tf.layers
    .batchNormalization({ name, axis: -1, epsilon: 1e-5, momentum: 0.9, scale: opts.scale ?? true })
    .apply(x) as Sym;
}

/** PReLU with one slope per channel, initialised to 0.25 like torch.nn.PReLU. */
export function prelu(name: string, x: Sym): Sym {
  return tf.layers
    .prelu({ name, sharedAxes: [1, 2], alphaInitializer: tf.initializers.constant({ value: 0.25 }) })
    .apply(x) as Sym;
}

export interface ConvArgs {
  filters: number;
  kernel: number;
  stride?: number;
  /** Symmetric zero padding as in torch.nn.Conv2d(padding=p). */
  pad?: number;
  /** torch's `groups`: 1 = dense, == in channels = depthwise, otherwise grouped. */
  groups?: number;
  init: Initializer;
}

/**
 * A bias-free convolution with PyTorch's padding semantics. TF's 'same' puts the odd pixel of a
 * stride-2 window at the end, torch pads both sides equally, so stride > 1 uses explicit zero padding.
 */
export function conv(name: string, x: Sym, a: ConvArgs): Sym {
  const stride = a.stride ?? 1;
  const pad = a.pad ?? 0;
  const inChannels = x.shape[x.shape.length - 1]!;
  const groups = a.groups ?? 1;
  let padding: 'same' | 'valid' = 'valid';
  if (pad > 0 && stride === 1 && 2 * pad === a.kernel - 1) padding = 'same';
  else if (pad > 0) x = tf.layers.zeroPadding2d({ name: `${name}.pad`, padding: pad }).apply(x) as Sym;
  const common = { name, kernelSize: a.kernel, strides: stride, padding, useBias: false };
  if (groups === 1) {
    return tf.layers.conv2d({ ...common, filters: a.filters, kernelInitializer: a.init }).apply(x) as Sym;
  }
  if (groups === inChannels && a.filters === inChannels) {
    return tf.layers.depthwiseConv2d({ ...common, depthMultiplier: 1, depthwiseInitializer: a.init }).apply(x) as Sym;
  }
  return new GroupedConv2D({ ...common, filters: a.filters, groups, kernelInitializer: a.init }).apply(x) as Sym;
}

/**
 * Kaiming-normal (fan_out, ReLU gain) as torch computes it: fan_out = out_channels * kh * kw,
 * not divided by groups, so a depthwise kernel gets std sqrt(2 / (C*k*k)).
 */
export function kaimingFanOut(outChannels: number, kernel: number, seed?: number): Initializer {
  return tf.initializers.randomNormal({ mean: 0, stddev: Math.sqrt(2 / (outChannels * kernel * kernel)), seed });
}

/** A deterministic stream of initializer seeds, so a model built with the same seed is the same model. */
export function seedStream(seed: number | undefined): () => number | undefined {
  let s = seed;
  return () => (s === undefined ? undefined : (s = (Math.imul(s ^ (s >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0));
}
