// Element-wise layers: Add (any number of inputs) and ReLU / Activation('relu' | 'linear').
import type * as tf from '@tensorflow/tfjs';
import type { InferContext, LayerFamily, Sym, TrainContext, TrainValue } from '../context.ts';

function addInfer(cx: InferContext, layer: tf.layers.Layer, inputs: Sym[], outputs: Sym[]): void {
  const xs = inputs.map((t) => cx.input(layer, t));
  if (xs.some((v) => v.shape.length !== xs[0]!.shape.length)) cx.fail(layer, 'inputs of different ranks');
  let name = cx.plain(xs[0]!);
  for (let i = 1; i < xs.length; i++) name = cx.g.node('Add', [name, cx.plain(xs[i]!)], layer.name);
  cx.set(outputs[0]!, { name, shape: outputs[0]!.shape.slice(1) as number[] });
}

function addTrain(cx: TrainContext, _layer: tf.layers.Layer, ins: TrainValue[]): TrainValue {
  const xs = ins.map((v) => cx.plain(v));
  let y = xs[0]!.name;
  for (let i = 1; i < xs.length; i++) y = cx.f.node('Add', [y, xs[i]!.name], 'add');
  const out: TrainValue = { name: y, dims: xs[0]!.dims, requiresGrad: xs.some((v) => v.requiresGrad) };
  cx.tape(() => {
    const dy = cx.gradOf(out);
    if (!dy) return;
    for (const v of xs) cx.addGrad(v, dy);
  });
  return out;
}

/** 'relu' or 'linear' for a ReLU / Activation layer; `fail` names what else it is. */
function activationOf(layer: tf.layers.Layer, fail: (why: string) => never, maxValueWhy: string): 'relu' | 'linear' {
  const cfg = layer.getConfig();
  const isRelu = layer.getClassName() === 'ReLU';
  if (isRelu && cfg.maxValue != null) fail(maxValueWhy);
  const act = isRelu ? 'relu' : (cfg.activation as string);
  if (act !== 'relu' && act !== 'linear') fail(`activation "${act}"`);
  return act;
}

function reluInfer(cx: InferContext, layer: tf.layers.Layer, inputs: Sym[], outputs: Sym[]): void {
  const x = cx.one(layer, inputs);
  const act = activationOf(layer, (why) => cx.fail(layer, why.startsWith('activation') ? `${why} is not supported (linear or relu)` : why), 'ReLU with maxValue is not supported');
  if (act === 'linear') return cx.set(outputs[0]!, x);
  cx.set(outputs[0]!, { name: cx.g.node('Relu', [cx.plain(x)], layer.name), shape: outputs[0]!.shape.slice(1) as number[] });
}

function reluTrain(cx: TrainContext, layer: tf.layers.Layer, ins: TrainValue[]): TrainValue {
  const act = activationOf(layer, (why) => cx.fail(layer, why), 'ReLU with maxValue');
  if (act === 'linear') return cx.one(layer, ins);
  const x = cx.plain(cx.one(layer, ins));
  const y = cx.f.node('Relu', [x.name], 'relu');
  const out: TrainValue = { name: y, dims: x.dims, requiresGrad: x.requiresGrad };
  cx.tape(() => {
    const dy = cx.gradOf(out);
    if (!dy || !x.requiresGrad) return;
    const b = cx.b;
    const ys = cx.save(out);
    const zero = b.floatInit('zero', [1], Float32Array.of(0));
    cx.addGrad(x, b.node('Where', [b.node('Greater', [ys, zero], 'pos'), dy, zero], 'drelu'));
  });
  return out;
}

export const addFamily: LayerFamily = { classes: ['Add'], infer: addInfer, train: addTrain };
export const reluFamily: LayerFamily = { classes: ['ReLU', 'Activation'], infer: reluInfer, train: reluTrain };
