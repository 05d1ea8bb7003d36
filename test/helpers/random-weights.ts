// Random but well-scaled weights for any backbone, so that equivalence tests compare outputs of unit
// scale. The reference initialisation in eval mode (BN statistics 0/1) gives ~1e-6 for mbf and
// overflows r100, where a test comparing against zero or infinity would prove nothing.
// Kernels get N(0, 1/fan_in), PReLU slopes, BN gammas and betas random values, and every BN's moving
// statistics come from one eager forward pass over a random batch (perturbed so they are not exact),
// so each BN sees inputs of about unit scale whatever the depth.
import * as tf from '@tensorflow/tfjs';

/** mulberry32: a small seeded PRNG. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function normal(rand: () => number): () => number {
  return () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
}

function fill(n: number, f: () => number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = f();
  return out;
}

function write(v: tf.LayerVariable, data: Float32Array): void {
  const t = tf.tensor(data, v.shape as number[]);
  v.write(t);
  t.dispose(); // the variable keeps its own reference to the data
}

const size = (v: tf.LayerVariable): number => (v.shape as number[]).reduce((a, b) => a * b, 1);

function weight(layer: tf.layers.Layer, short: string): tf.LayerVariable | undefined {
  return layer.weights.find((w) => w.originalName.endsWith(`/${short}`) || w.name.endsWith(`/${short}`));
}

/** A uniform [-1, 1) NHWC batch for `model`'s input (seeded). */
export function randomInput(model: tf.LayersModel, batch: number, seed: number): tf.Tensor4D {
  const [, h, w, c] = model.inputs[0]!.shape as number[];
  const rand = prng(seed);
  return tf.tensor4d(fill(batch * h! * w! * c!, () => rand() * 2 - 1), [batch, h!, w!, c!]);
}

export interface RandomWeightsOptions {
  seed?: number;
  /** Images in the calibration batch (default 4). */
  calibrationBatch?: number;
}

/** Overwrites every weight of `model` in place (see the file comment). Works on any backend. */
export function randomizeWeights(model: tf.LayersModel, opts: RandomWeightsOptions = {}): void {
  const seed = opts.seed ?? 1;
  const rand = prng(seed);
  const gauss = normal(rand);
  const uniform = (lo: number, hi: number) => () => lo + (hi - lo) * rand();

  for (const layer of model.layers) {
    const cls = layer.getClassName();
    const kernel = weight(layer, 'kernel') ?? weight(layer, 'depthwise_kernel');
    if (kernel) {
      const s = kernel.shape as number[];
      // Conv [kh,kw,cin/g,out] and Dense [in,out]: fan_in is all but the last axis; depthwise [kh,kw,C,M]: kh*kw.
      const fanIn = cls === 'DepthwiseConv2D' ? s[0]! * s[1]! : s.slice(0, -1).reduce((a, b) => a * b, 1);
      const std = 1 / Math.sqrt(fanIn);
      write(kernel, fill(size(kernel), () => gauss() * std));
    }
    const bias = weight(layer, 'bias');
    if (bias) write(bias, fill(bias.shape[0]!, uniform(-0.1, 0.1)));
    const alpha = weight(layer, 'alpha');
    if (alpha) write(alpha, fill(size(alpha), uniform(0.05, 0.45)));
    const gamma = weight(layer, 'gamma');
    if (gamma) write(gamma, fill(gamma.shape[0]!, uniform(0.6, 1.4)));
    const beta = weight(layer, 'beta');
    if (beta) write(beta, fill(beta.shape[0]!, uniform(-0.3, 0.3)));
  }
  calibrateBatchNorms(model, opts.calibrationBatch ?? 4, seed + 1, rand, gauss);
}

/** Eager forward pass, node by node; each BN gets moving statistics near its input's real ones. */
function calibrateBatchNorms(model: tf.LayersModel, batch: number, seed: number, rand: () => number, gauss: () => number): void {
  const values = new Map<number, tf.Tensor>();
  const uses = new Map<number, number>();
  const nodes = model.layers.flatMap((layer) => layer.inboundNodes.map((node) => ({ layer, node })));
  for (const { node } of nodes) for (const t of node.inputTensors) uses.set(t.id, (uses.get(t.id) ?? 0) + 1);
  values.set(model.inputs[0]!.id, randomInput(model, batch, seed));
  let pending = nodes.filter(({ layer }) => layer.getClassName() !== 'InputLayer');
  while (pending.length) {
    const ready = pending.filter(({ node }) => node.inputTensors.every((t) => values.has(t.id)));
    if (!ready.length) throw new Error('randomizeWeights: the model graph has nodes unreachable from its input');
    for (const { layer, node } of ready) {
      const xs = node.inputTensors.map((t) => values.get(t.id)!);
      if (layer.getClassName() === 'BatchNormalization') setMovingStatistics(layer, xs[0]!, rand, gauss);
      const y = layer.apply(xs.length === 1 ? xs[0]! : xs) as tf.Tensor;
      values.set(node.outputTensors[0]!.id, y);
      for (const t of node.inputTensors) {
        const left = uses.get(t.id)! - 1;
        uses.set(t.id, left);
        if (left === 0) values.get(t.id)!.dispose();
      }
    }
    pending = pending.filter((p) => !ready.includes(p));
  }
  for (const t of values.values()) if (!t.isDisposed) t.dispose();
}

function setMovingStatistics(layer: tf.layers.Layer, x: tf.Tensor, rand: () => number, gauss: () => number): void {
  const c = x.shape[x.shape.length - 1]!;
  let mean: Float32Array;
  let variance: Float32Array;
  if (x.rank === 2) {
    // A BN1d sees only `batch` samples per feature: use the statistics pooled over all features.
    const m = tf.tidy(() => tf.moments(x));
    const [mu, v] = [m.mean.dataSync()[0]!, m.variance.dataSync()[0]!];
    tf.dispose([m.mean, m.variance]);
    mean = new Float32Array(c).fill(mu);
    variance = new Float32Array(c).fill(v);
  } else {
    const m = tf.tidy(() => tf.moments(x, [0, 1, 2]));
    mean = Float32Array.from(m.mean.dataSync());
    variance = Float32Array.from(m.variance.dataSync());
    tf.dispose([m.mean, m.variance]);
  }
  // Near, not equal to, the real statistics: a BN that only re-centres would hide a wrong mean or variance.
  for (let i = 0; i < c; i++) {
    const sd = Math.sqrt(variance[i]! + 1e-5);
    mean[i] = mean[i]! + 0.1 * sd * gauss();
    variance[i] = variance[i]! * (0.7 + 0.7 * rand()) + 1e-3;
  }
  write(weight(layer, 'moving_mean')!, mean);
  write(weight(layer, 'moving_variance')!, variance);
}
