// A tfjs layer's weights as the graph emitters read them.
import type * as tf from '@tensorflow/tfjs';

/** A layer's variable by its short name (`kernel`, `gamma`, …), or undefined. */
export function weightOf(layer: tf.layers.Layer, short: string): tf.LayerVariable | undefined {
  return layer.weights.find((w) => w.originalName.endsWith(`/${short}`) || w.name.endsWith(`/${short}`));
}

export function valuesOf(v: tf.LayerVariable): Float32Array {
  return Float32Array.from(v.read().dataSync() as Float32Array);
}

/** A convolution's ONNX weights (after any BatchNorm folding). */
export interface ConvWeights {
  /** [O, I/group, kh, kw]. */
  weight: Float32Array;
  dims: [number, number, number, number];
  bias?: Float32Array;
}
