// PReLU: slope layout, the inference node (or, for onnxruntime's CPU engine, the Relu rewrite), and
// training: y = x + (a - 1) min(x, 0), dx = dy (a + (1 - a) [x > 0]), da = sum(dy min(x, 0)).
// ORT's PRelu and Where kernels run 3-6x slower per element than its Min, Mul, Add and
// BatchNormalization (per-channel broadcast; measured in the mbf training step, worst at 14x14 maps),
// so the training graphs spell PReLU with those.
import type * as tf from '@tensorflow/tfjs';
import type { GraphBuilder } from '../builder.ts';
import { prod, type InferContext, type LayerFamily, type Sym, type TrainContext, type TrainValue } from '../context.ts';
import { transposeArray } from '../../util/transpose.ts';
import { valuesOf, weightOf } from '../weights.ts';
import { channelAffine, channelScale } from './batchnorm.ts';

/** PReLU alpha [H',W',C] (H', W' are 1 where shared) -> ONNX slope [C,H',W']; rank-1 alphas stay. */
export function preluSlope(alpha: tf.LayerVariable): { slope: Float32Array; dims: number[] } {
  const shape = alpha.shape as number[];
  const data = valuesOf(alpha);
  if (shape.length === 1) return { slope: data, dims: shape };
  if (shape.length !== 3) throw new Error(`PReLU alpha of rank ${shape.length} is not supported`);
  return { slope: transposeArray(data, shape, [2, 0, 1]), dims: [shape[2]!, shape[0]!, shape[1]!] };
}

/** PReLU(y) = y + (1 - alpha) * Relu(-y), per channel (see InferOptions.preluAsRelu). */
function preluAsRelu(g: GraphBuilder, layer: tf.layers.Layer, y: string, alpha: Float32Array): string {
  const negated = channelScale(g, y, new Float32Array(alpha.length).fill(-1), `${layer.name}.neg`);
  const negPart = g.node('Relu', [negated], `${layer.name}.relu`);
  const scaled = channelScale(g, negPart, alpha.map((a) => 1 - a), `${layer.name}.scale`);
  return g.node('Add', [scaled, y], layer.name);
}

function infer(cx: InferContext, layer: tf.layers.Layer, inputs: Sym[], outputs: Sym[]): void {
  const x = cx.one(layer, inputs);
  const shape = outputs[0]!.shape.slice(1) as number[];
  const { slope, dims } = preluSlope(weightOf(layer, 'alpha')!);
  if (cx.opts.preluAsRelu && dims.length === 3 && dims[1] === 1 && dims[2] === 1) return cx.set(outputs[0]!, { name: preluAsRelu(cx.g, layer, cx.plain(x), slope), shape });
  const name = cx.g.node('PRelu', [cx.plain(x), cx.g.floatInit(`${layer.name}.weight`, dims, slope)], layer.name);
  cx.set(outputs[0]!, { name, shape });
}

/**
 * x + (a - 1) min(x, 0), `a` broadcast per channel: exactly x where x > 0. Its zero is a rank-0 scalar
 * and the backward's [1]: equal nodes would be merged in a one-graph step, keeping this
 * activation-sized min alive until the backward.
 */
function preluNodes(g: GraphBuilder, x: string, a: string, name: string): string {
  const aMinus1 = g.node('Sub', [a, g.floatInit('one', [1], Float32Array.of(1))], `${name}.am1`);
  const neg = g.node('Min', [x, g.floatInit('zero0', [], Float32Array.of(0))], `${name}.min`);
  return g.node('Add', [x, g.node('Mul', [neg, aMinus1], `${name}.negs`)], name);
}

function train(cx: TrainContext, layer: tf.layers.Layer, ins: TrainValue[]): TrainValue {
  const x = cx.plain(cx.one(layer, ins));
  const alphaV = layer.weights[0]!;
  const ch = x.dims[1]!;
  if (prod(alphaV.shape as number[]) !== ch) cx.fail(layer, 'PReLU slope must be one per channel');
  const rank = x.dims.length;
  const bshape = rank === 4 ? [ch, 1, 1] : [ch];
  const ln = layer.name;
  const a = cx.reshape(cx.f, cx.param(alphaV, alphaV.trainable), bshape, `${ln}.a`);
  const y = preluNodes(cx.f, x.name, a, ln);
  const out: TrainValue = {
    name: y,
    dims: x.dims,
    requiresGrad: true,
    rematKind: 'prelu',
    remat: () => preluNodes(cx.b, cx.save(x), cx.reshape(cx.b, cx.paramB(alphaV), bshape, `${ln}.aR`), `${ln}.yR`),
  };
  cx.tape(() => {
    const dy = cx.gradOf(out);
    if (!dy) return;
    const b = cx.b;
    const xs = cx.save(x);
    const zero = b.floatInit('zero', [1], Float32Array.of(0));
    if (alphaV.trainable) {
      const neg = b.node('Min', [xs, zero], `${ln}.neg`);
      const da = b.node('ReduceSum', [b.node('Mul', [dy, neg], `${ln}.dyn`), cx.i64(b, 'axes', rank === 4 ? [0, 2, 3] : [0])], `${ln}.da`, { keepdims: 0 });
      cx.emitParamGrad(alphaV, cx.reshape(b, da, alphaV.shape as number[], `${ln}.da_t`));
    }
    if (!x.requiresGrad) return;
    // The slope per element, a + (1 - a) [x > 0], as one affine pass over the mask.
    const aFlat = cx.reshape(b, cx.paramB(alphaV), [ch], `${ln}.aB`);
    const oneMinusA = b.node('Sub', [b.floatInit('one', [1], Float32Array.of(1)), aFlat], `${ln}.1ma`);
    const mask = b.node('Cast', [b.node('Greater', [xs, zero], `${ln}.pos`)], `${ln}.posf`, { to: 1 });
    const dx = b.node('Mul', [dy, channelAffine(b, mask, oneMinusA, aFlat, ch, `${ln}.slope`)], `${ln}.dx`);
    cx.addGrad(x, dx);
  });
  return out;
}

export const preluFamily: LayerFamily = { classes: ['PReLU'], infer, train };
