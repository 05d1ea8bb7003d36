// BatchNormalization: its parameters, the folding into a preceding convolution (inference), the
// inference node, and training (PyTorch semantics: batch statistics, biased variance to normalise, or
// the running statistics when BN is frozen for fine-tuning) with the closed-form backward
// dx = gamma rstd / n (n dy - sum dy - xhat sum(dy xhat)).
import type * as tf from '@tensorflow/tfjs';
import type { GraphBuilder } from '../builder.ts';
import { prod, type GraphBatchNorm, type InferContext, type LayerFamily, type Sym, type TrainContext, type TrainValue } from '../context.ts';
import { valuesOf, weightOf, type ConvWeights } from '../weights.ts';

/** BatchNormalization as a plain affine map: var = 1 - eps, so sqrt(var + eps) is exactly 1 (a power of two). */
const AFFINE_EPS = 2 ** -10;

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

function infer(cx: InferContext, layer: tf.layers.Layer, inputs: Sym[], outputs: Sym[]): void {
  const x = cx.one(layer, inputs);
  const rank = x.shape.length + 1;
  const axis = Number(layer.getConfig().axis);
  if (axis !== -1 && axis !== rank - 1) cx.fail(layer, `normalises axis ${axis}; only the channel (last) axis maps to ONNX`);
  const bn = batchNormParams(layer);
  const c = [bn.gamma.length];
  const g = cx.g;
  const ins = [
    cx.plain(x),
    g.floatInit(`${layer.name}.weight`, c, bn.gamma),
    g.floatInit(`${layer.name}.bias`, c, bn.beta),
    g.floatInit(`${layer.name}.running_mean`, c, bn.mean),
    g.floatInit(`${layer.name}.running_var`, c, bn.variance),
  ];
  const name = g.node('BatchNormalization', ins, layer.name, { epsilon: { float: bn.epsilon }, momentum: { float: 0.9 } });
  cx.set(outputs[0]!, { name, shape: outputs[0]!.shape.slice(1) as number[] });
}

/** Per-channel `x * scale` as a BatchNormalization node (mean 0, variance 1, epsilon 0: an exact multiply). */
export function channelScale(g: GraphBuilder, x: string, scale: Float32Array, name: string): string {
  const c = [scale.length];
  const ins = [
    x,
    g.floatInit(`${name}.scale`, c, scale),
    g.floatInit(`${name}.bias`, c, new Float32Array(scale.length)),
    g.floatInit(`${name}.mean`, c, new Float32Array(scale.length)),
    g.floatInit(`${name}.var`, c, new Float32Array(scale.length).fill(1)),
  ];
  return g.node('BatchNormalization', ins, name, { epsilon: { float: 0 } });
}

/**
 * x * scale + bias per channel (axis 1), scale and bias graph values of shape [ch], in one pass: an
 * inference BatchNormalization with mean 0 and var 1 - eps (ORT runs element-wise ops at memory speed,
 * so passes are the cost; two broadcast ops would be two passes).
 */
export function channelAffine(g: GraphBuilder, x: string, scale: string, bias: string, ch: number, name: string): string {
  const ins = [x, scale, bias, g.floatInit('zeros', [ch], new Float32Array(ch)), g.floatInit('one_minus_eps', [ch], new Float32Array(ch).fill(1 - AFFINE_EPS))];
  return g.node('BatchNormalization', ins, name, { epsilon: { float: AFFINE_EPS } });
}

function train(cx: TrainContext, layer: tf.layers.Layer, ins: TrainValue[]): TrainValue {
  const x = cx.plain(cx.one(layer, ins));
  const cfg = layer.getConfig();
  const rank = x.dims.length;
  const axis = Number(cfg.axis);
  if (axis !== -1 && axis !== rank - 1 && !(rank === 4 && axis === 3)) cx.fail(layer, `axis ${axis}`);
  const find = (s: string) => layer.weights.find((wt) => wt.originalName.endsWith(`/${s}`));
  const gammaV = find('gamma');
  const betaV = find('beta');
  const meanV = find('moving_mean')!;
  const varV = find('moving_variance')!;
  const eps = Number(cfg.epsilon ?? 1e-3);
  const ch = x.dims[1]!;
  const count = prod(x.dims) / ch;
  const axes = rank === 4 ? [0, 2, 3] : [0];
  const bshape = rank === 4 ? [ch, 1, 1] : [ch];
  const f = cx.f;
  const ln = layer.name;
  if (gammaV) cx.param(gammaV, gammaV.trainable);
  if (betaV) cx.param(betaV, betaV.trainable);
  const frozen = cx.opts.freezeBatchNorm ?? false;
  const epsInit = (g: GraphBuilder) => g.floatInit('eps', [1], Float32Array.of(eps));
  let mean: string; // [1, c, 1, 1] (frozen: [c, 1, 1])
  let rstd: string;
  let meanFlat: string; // [c], BatchNormalization's inputs
  let varFlat: string;
  /** The output, when the statistics node already normalised. */
  let normalised: string | undefined;
  if (frozen) {
    meanFlat = cx.param(meanV, false);
    varFlat = cx.param(varV, false);
    mean = cx.reshape(f, meanFlat, bshape, `${ln}.rm`);
    const v = cx.reshape(f, varFlat, bshape, `${ln}.rv`);
    rstd = f.node('Reciprocal', [f.node('Sqrt', [f.node('Add', [v, epsInit(f)], `${ln}.ve`)], `${ln}.sd`)], `${ln}.rstd`);
  } else {
    // onnxruntime's training-mode BatchNormalization: normalises with the batch statistics and, with
    // momentum 0, returns them as its running mean and (biased) variance: one kernel instead of a
    // mean, a centred copy, a sum of squares and an inference BN.
    const bn: GraphBatchNorm = { layer, mean: `${ln}:mean`, variance: `${ln}:var`, channels: ch, count };
    f.reserve(bn.mean);
    f.reserve(bn.variance);
    const y = f.reserve(ln);
    const unit = f.floatInit('ones', [ch], new Float32Array(ch).fill(1));
    const none = f.floatInit('zeros', [ch], new Float32Array(ch));
    f.nodeWithOutputs(
      'BatchNormalization',
      [x.name, gammaV ? cx.paramName(gammaV) : unit, betaV ? cx.paramName(betaV) : none, none, unit],
      ln,
      { epsilon: { float: eps }, momentum: { float: 0 }, training_mode: 1 },
      [y, bn.mean, bn.variance],
    );
    cx.addBatchNorm(bn);
    const dims = rank === 4 ? [1, ch, 1, 1] : [1, ch];
    mean = cx.reshape(f, bn.mean, dims, `${ln}.mean`);
    const v = cx.reshape(f, bn.variance, dims, `${ln}.var`);
    rstd = f.node('Reciprocal', [f.node('Sqrt', [f.node('Add', [v, epsInit(f)], `${ln}.ve`)], `${ln}.sd`)], `${ln}.rstd`);
    meanFlat = bn.mean;
    varFlat = bn.variance;
    normalised = y;
  }
  // Frozen: y = gamma (x - mean) / sqrt(var + eps) + beta with the running statistics, an inference BN.
  const ones = (g: GraphBuilder) => g.floatInit('ones', [ch], new Float32Array(ch).fill(1));
  const zeros = (g: GraphBuilder) => g.floatInit('zeros', [ch], new Float32Array(ch));
  const y =
    normalised ??
    f.node(
      'BatchNormalization',
      [x.name, gammaV ? cx.paramName(gammaV) : ones(f), betaV ? cx.paramName(betaV) : zeros(f), meanFlat, varFlat],
      ln,
      { epsilon: { float: eps } },
    );
  const statDims = frozen ? bshape : rank === 4 ? [1, ch, 1, 1] : [1, ch];
  // x - mean inside the backward, shared by the recomputed output and the gradient.
  let centredName: string | undefined;
  const centredB = (): string => {
    if (centredName) return centredName;
    const b = cx.b;
    const meanB = frozen ? cx.reshape(b, cx.paramB(meanV), bshape, `${ln}.rmB`) : cx.toB(mean, statDims);
    // x + (-mean), exactly x - mean, but not the forward's Sub node: in a one-graph step ORT would merge
    // the two and keep that activation-sized difference alive from the forward to the backward.
    return (centredName = b.node('Add', [cx.save(x), b.node('Neg', [meanB], `${ln}.negmB`)], `${ln}.xcB`));
  };
  const out: TrainValue = {
    name: y,
    dims: x.dims,
    requiresGrad: true,
    rematKind: 'bn',
    remat: () => {
      const b = cx.b;
      const stat = (name: string, v: tf.LayerVariable) => (frozen ? cx.paramB(v) : cx.toB(name, [ch]));
      return b.node(
        'BatchNormalization',
        [cx.save(x), gammaV ? cx.paramB(gammaV) : ones(b), betaV ? cx.paramB(betaV) : zeros(b), stat(meanFlat, meanV), stat(varFlat, varV)],
        `${ln}.yR`,
        { epsilon: { float: eps } },
      );
    },
  };

  cx.tape(() => {
    const dy = cx.gradOf(out);
    if (!dy) return;
    const b = cx.b;
    const ax = cx.i64(b, 'axes', axes);
    // Statistics: saved (small) when computed from the batch; from the params when frozen.
    const rstdB = cx.toB(rstd, statDims);
    const xc = centredB();
    const dbeta = b.node('ReduceSum', [dy, ax], `${ln}.dbeta`, { keepdims: 1 });
    // dgamma = sum(dy xhat) = rstd sum(dy (x - mean))
    const dgamma = b.node('Mul', [b.node('ReduceSum', [b.node('Mul', [dy, xc], `${ln}.dyx`), ax], `${ln}.sdyx`, { keepdims: 1 }), rstdB], `${ln}.dgamma`);
    if (gammaV?.trainable) cx.emitParamGrad(gammaV, cx.reshape(b, dgamma, [ch], `${ln}.dg`));
    if (betaV?.trainable) cx.emitParamGrad(betaV, cx.reshape(b, dbeta, [ch], `${ln}.db`));
    if (!x.requiresGrad) return;
    const gammaB = gammaV ? cx.reshape(b, cx.paramB(gammaV), bshape, `${ln}.gB`) : null;
    const gr = gammaB ? b.node('Mul', [gammaB, rstdB], `${ln}.gr`) : rstdB;
    let dx: string;
    if (frozen) dx = b.node('Mul', [dy, gr], `${ln}.dx`);
    else {
      // dx = gr (dy - mean(dy) - xhat mean(dy xhat)) = dy gr + (x - mean) B + C, with the per-channel
      // B = -gr rstd dgamma / n and C = -gr dbeta / n: four passes over the activation instead of six.
      const negInv = b.floatInit('neg_inv_n', [1], Float32Array.of(-1 / count));
      const bCoef = b.node('Mul', [b.node('Mul', [gr, rstdB], `${ln}.grr`), b.node('Mul', [dgamma, negInv], `${ln}.mdg`)], `${ln}.B`);
      const cCoef = b.node('Mul', [gr, b.node('Mul', [dbeta, negInv], `${ln}.mdb`)], `${ln}.C`);
      // dy gr + C as one pass: an inference BatchNormalization with mean 0 and var 1 - eps is the
      // per-channel affine map (ORT runs every element-wise op at memory speed: passes are the cost).
      const flat = (t: string, name: string) => cx.reshape(b, t, [ch], name);
      const affine = channelAffine(b, dy, flat(gr, `${ln}.grF`), flat(cCoef, `${ln}.CF`), ch, `${ln}.dyg`);
      dx = b.node('Add', [affine, b.node('Mul', [xc, bCoef], `${ln}.xcb`)], `${ln}.dx`);
    }
    cx.addGrad(x, dx);
  });
  return out;
}

export const batchNormFamily: LayerFamily = { classes: ['BatchNormalization'], infer, train };
