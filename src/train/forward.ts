// The training-mode forward pass of a backbone, layer by layer over the functional graph, with PyTorch's
// BatchNorm semantics instead of tfjs-layers': batch statistics normalise the batch, running statistics
// update with momentum 0.1 and the *unbiased* batch variance, and a BN without gamma (IResNet's frozen
// final BatchNorm1d) trains its beta alone (tfjs-layers cannot train a scale-free BN at all). The
// running-statistic updates are returned, not applied, so they happen once per step outside the tape.
import * as tf from '@tensorflow/tfjs';
import { compiledTrainForward, compiledTrainingEnabled, type BatchNormUpdate } from '../ort/train.ts';

export type { BatchNormUpdate } from '../ort/train.ts';

export interface TrainForwardOptions {
  /** Fine-tuning: normalise with the running statistics and leave them unchanged. */
  freezeBatchNorm?: boolean;
  /** Run as one compiled onnxruntime op on the ort engines (default true; false: layer by layer). */
  compiled?: boolean;
}

interface BnWeights {
  gamma?: tf.LayerVariable;
  beta?: tf.LayerVariable;
  movingMean: tf.LayerVariable;
  movingVariance: tf.LayerVariable;
  epsilon: number;
}

function bnWeights(layer: tf.layers.Layer): BnWeights {
  const find = (s: string) => layer.weights.find((w) => w.originalName.endsWith(`/${s}`));
  const cfg = layer.getConfig();
  return {
    gamma: find('gamma'),
    beta: find('beta'),
    movingMean: find('moving_mean')!,
    movingVariance: find('moving_variance')!,
    epsilon: (cfg.epsilon as number) ?? 1e-3,
  };
}

/** Per-channel sums of an [n, c] matrix as ones[1, n] x X: on wasm a matmul is ~20x faster than a reduction over the outer axis. */
function channelSum(x2: tf.Tensor2D, ones: tf.Tensor2D): tf.Tensor1D {
  return tf.matMul(ones, x2).reshape([x2.shape[1]]);
}

/**
 * y = gamma * (x - mean) / sqrt(var + eps) + beta over all axes but the last, with the closed-form
 * backward (dx = gamma * rstd / n * (n dy - sum dy - xhat sum(dy xhat))). tfjs's generic BatchNorm
 * gradient tiles every per-channel term to the full tensor; this one only broadcasts.
 */
function batchNormWithStats(x: tf.Tensor, gamma: tf.Tensor1D, beta: tf.Tensor1D, epsilon: number): { y: tf.Tensor; mean: tf.Tensor1D; variance: tf.Tensor1D } {
  const c = x.shape[x.shape.length - 1]!;
  const n = x.size / c;
  let mean!: tf.Tensor1D;
  let variance!: tf.Tensor1D;
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [xIn, g, b, save] = args as [tf.Tensor, tf.Tensor1D, tf.Tensor1D, tf.GradSaveFunc];
    const x2 = xIn.reshape([n, c]) as tf.Tensor2D;
    const ones = tf.ones([1, n]) as tf.Tensor2D;
    const m = tf.div(channelSum(x2, ones), n) as tf.Tensor1D;
    const centred = tf.sub(x2, m) as tf.Tensor2D;
    const v = tf.div(channelSum(tf.square(centred) as tf.Tensor2D, ones), n) as tf.Tensor1D;
    mean = tf.keep(m);
    variance = tf.keep(v);
    const rstd = tf.rsqrt(tf.add(v, epsilon));
    const xhat = tf.mul(centred, rstd);
    save([xhat, rstd, g, ones]);
    const value = tf.add(tf.mul(xhat, g), b).reshape(xIn.shape);
    return {
      value,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [xh, r, gm, o] = saved as [tf.Tensor2D, tf.Tensor1D, tf.Tensor1D, tf.Tensor2D];
        const dy2 = dy.reshape([n, c]) as tf.Tensor2D;
        const dbeta = channelSum(dy2, o);
        const dgamma = channelSum(tf.mul(dy2, xh) as tf.Tensor2D, o);
        const scale = tf.div(tf.mul(gm, r), n);
        const dx = tf.mul(scale, tf.sub(tf.sub(tf.mul(dy2, n), dbeta), tf.mul(xh, dgamma)));
        return [dx.reshape(xIn.shape), dgamma, dbeta];
      },
    };
  });
  const y = f(x, gamma, beta) as tf.Tensor;
  return { y, mean, variance };
}

/**
 * PReLU with one slope per channel: dx = dy * (x > 0 ? 1 : a), da = sum(dy * min(x, 0)). tfjs's own
 * gradient uses where/greater and a reduction over the outer axes, both slow on wasm.
 */
function preluTraining(x: tf.Tensor, alpha: tf.Tensor): tf.Tensor {
  const c = x.shape[x.shape.length - 1]!;
  const n = x.size / c;
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [xIn, a, save] = args as [tf.Tensor, tf.Tensor, tf.GradSaveFunc];
    const a1 = a.reshape([c]);
    save([xIn, a1]);
    return {
      value: tf.prelu(xIn, a1),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [xs, al] = saved as [tf.Tensor, tf.Tensor1D];
        // x > 0 ? 1 : a  ==  a + (1 - a) * step(x)
        const factor = tf.add(al, tf.mul(tf.sub(1, al), tf.step(xs)));
        const dx = tf.mul(dy, factor);
        // min(x, 0) as x - relu(x): unary and same-shape ops avoid wasm's slow broadcasting path.
        const da = channelSum(tf.mul(dy, tf.sub(xs, tf.relu(xs))).reshape([n, c]) as tf.Tensor2D, tf.ones([1, n]) as tf.Tensor2D);
        return [dx, da.reshape(a.shape)];
      },
    };
  });
  return f(x, alpha) as tf.Tensor;
}

function batchNormTraining(layer: tf.layers.Layer, x: tf.Tensor, updates: BatchNormUpdate[] | null, frozen: boolean): tf.Tensor {
  const w = bnWeights(layer);
  // A frozen gamma (IResNet's final BatchNorm1d) is a constant 1: no variable, no gradient.
  const c = x.shape[x.shape.length - 1]!;
  const gamma = (w.gamma ? w.gamma.read() : tf.ones([c])) as tf.Tensor1D;
  const beta = (w.beta ? w.beta.read() : tf.zeros([c])) as tf.Tensor1D;
  if (frozen) return tf.batchNorm(x, w.movingMean.read(), w.movingVariance.read(), beta, gamma, w.epsilon);
  const { y, mean, variance } = batchNormWithStats(x, gamma, beta, w.epsilon);
  const n = x.size / c;
  if (updates) {
    // Kept past the gradient tape's tidy; the caller applies and disposes them.
    updates.push({ layer, mean, variance: tf.keep(tf.mul(variance, n / Math.max(n - 1, 1))) as tf.Tensor1D });
    variance.dispose();
  } else {
    tf.dispose([mean, variance]);
  }
  return y;
}

/** True for a BatchNorm over the last (channel) axis, the one batchNormTraining computes; others run as tfjs trains them. */
function normalisesLastAxis(layer: tf.layers.Layer, rank: number): boolean {
  const axis = layer.getConfig().axis;
  const a = Array.isArray(axis) ? (axis.length === 1 ? Number(axis[0]) : NaN) : Number(axis ?? -1);
  return a === -1 || a === rank - 1;
}

/**
 * Runs `model` on `x` in training mode (dropout active, BN on batch statistics). Collects each BN's batch
 * statistics into `updates` (pass null to skip). Call inside `tf.variableGrads` for the gradients.
 */
export function trainForward(model: tf.LayersModel, x: tf.Tensor, updates: BatchNormUpdate[] | null, opts: TrainForwardOptions = {}): tf.Tensor {
  // On the ort engines the whole backbone is one compiled op (src/ort/train.ts) where it can be.
  if ((opts.compiled ?? true) && compiledTrainingEnabled()) {
    const y = compiledTrainForward(model, x, updates, opts.freezeBatchNorm ?? false);
    if (y) return y;
  }
  const values = new Map<number, tf.Tensor>();
  values.set(model.inputs[0]!.id, x);
  for (const layer of model.layers) {
    if (layer.getClassName() === 'InputLayer') continue;
    const node = layer.inboundNodes[0]!;
    const inputs = node.inputTensors.map((s) => {
      const v = values.get(s.id);
      if (!v) throw new Error(`trainForward: input of ${layer.name} not computed (graph not in topological order?)`);
      return v;
    });
    const cls = layer.getClassName();
    const out =
      cls === 'BatchNormalization' && normalisesLastAxis(layer, inputs[0]!.rank)
        ? batchNormTraining(layer, inputs[0]!, updates, opts.freezeBatchNorm ?? false)
        : cls === 'PReLU' && layer.weights.length === 1 && layer.weights[0]!.shape.slice(0, -1).every((d) => d === 1)
          ? preluTraining(inputs[0]!, layer.weights[0]!.read())
          : (layer.apply(inputs.length === 1 ? inputs[0]! : inputs, { training: true }) as tf.Tensor);
    values.set(node.outputTensors[0]!.id, out);
  }
  return values.get(model.outputs[0]!.id)!;
}

/**
 * The torch momentum of a BatchNorm layer: 1 - its tfjs momentum (0.1 for this project's backbones, whose
 * layers say 0.9; 0.01 for a Keras model's default 0.99), so any tfjs model's BNs keep their own rate.
 */
function torchMomentum(layer: tf.layers.Layer): number {
  const m = layer.getConfig().momentum;
  return typeof m === 'number' && m >= 0 && m < 1 ? 1 - m : 0.1;
}

/**
 * running = (1 - momentum) * running + momentum * batch; disposes the updates. `momentum` overrides each
 * layer's own (torch 0.1 for the native backbones).
 */
export function applyBatchNormUpdates(updates: BatchNormUpdate[], momentumOverride?: number): void {
  tf.tidy(() => {
    for (const u of updates) {
      const w = bnWeights(u.layer);
      const momentum = momentumOverride ?? torchMomentum(u.layer);
      w.movingMean.write(tf.add(tf.mul(w.movingMean.read(), 1 - momentum), tf.mul(u.mean, momentum)));
      w.movingVariance.write(tf.add(tf.mul(w.movingVariance.read(), 1 - momentum), tf.mul(u.variance, momentum)));
    }
  });
  for (const u of updates) tf.dispose([u.mean, u.variance]);
  updates.length = 0;
}

/** The trainable variables of a backbone (a scale-free BN has no gamma, so the frozen gamma never trains). */
export function trainableVariables(model: tf.LayersModel): tf.Variable[] {
  return model.trainableWeights.map((w) => w.read() as tf.Variable);
}
