// Layers that move data without arithmetic: ZeroPadding2D (carried as pending pads that the next conv
// takes as its own, or a Pad node for any other reader), Flatten (tfjs flattens NHWC; the graphs hold
// NCHW) and Dropout (the identity at inference; training supports only rate 0).
import type * as tf from '@tensorflow/tfjs';
import type { InferContext, LayerFamily, Sym, TrainContext, TrainValue } from '../context.ts';
import { addPads, NO_PADS, zeroPaddingOf } from '../geometry.ts';

function padInfer(cx: InferContext, layer: tf.layers.Layer, inputs: Sym[], outputs: Sym[]): void {
  const x = cx.one(layer, inputs);
  if (layer.getConfig().dataFormat === 'channelsFirst') cx.fail(layer, 'channelsFirst is not supported');
  cx.set(outputs[0]!, { name: x.name, shape: x.shape, pads: addPads(x.pads ?? NO_PADS, zeroPaddingOf(layer)) });
}

function padTrain(cx: TrainContext, layer: tf.layers.Layer, ins: TrainValue[]): TrainValue {
  const x = cx.one(layer, ins);
  if (layer.getConfig().dataFormat === 'channelsFirst') cx.fail(layer, 'channelsFirst');
  const base = x.pads ? x.pads.base : x;
  const [n, c, hh, ww] = base.dims as [number, number, number, number];
  const pads = { ...addPads(x.pads ?? NO_PADS, zeroPaddingOf(layer)), base };
  return { name: `${base.name}+pad`, dims: [n, c, hh + pads.top + pads.bottom, ww + pads.left + pads.right], requiresGrad: base.requiresGrad, pads };
}

function flattenInfer(cx: InferContext, layer: tf.layers.Layer, inputs: Sym[], outputs: Sym[]): void {
  const x = cx.one(layer, inputs);
  const out = outputs[0]!;
  const shape = out.shape.slice(1) as number[];
  if (x.shape.length !== 3) {
    if (x.shape.length === 1) return cx.set(out, x);
    cx.fail(layer, `flattening a rank-${x.shape.length + 1} tensor is not supported`);
  }
  const g = cx.g;
  const [h, w, c] = x.shape as [number, number, number];
  if (h * w === 1) return cx.set(out, { name: g.node('Flatten', [cx.plain(x)], layer.name, { axis: 1 }), shape });
  if (cx.onlyDense(out)) return cx.set(out, { name: g.node('Flatten', [cx.plain(x)], layer.name, { axis: 1 }), shape, flatOf: [h, w, c] });
  // Someone needs the real NHWC order: transpose back before flattening.
  const nhwc = g.node('Transpose', [cx.plain(x)], `${layer.name}.nhwc`, { perm: [0, 2, 3, 1] });
  cx.set(out, { name: g.node('Flatten', [nhwc], layer.name, { axis: 1 }), shape });
}

function flattenTrain(cx: TrainContext, layer: tf.layers.Layer, ins: TrainValue[]): TrainValue {
  const x = cx.plain(cx.one(layer, ins));
  if (x.dims.length === 2) return x;
  const [n, c, h, w] = x.dims as [number, number, number, number];
  // tfjs flattens NHWC: transpose back first.
  const t = cx.f.node('Transpose', [x.name], 'flat_nhwc', { perm: [0, 2, 3, 1] });
  const y = cx.reshape(cx.f, t, [n, h * w * c], 'flat');
  const out: TrainValue = { name: y, dims: [n, h * w * c], requiresGrad: x.requiresGrad };
  cx.tape(() => {
    const dy = cx.gradOf(out);
    if (!dy || !x.requiresGrad) return;
    const r = cx.reshape(cx.b, dy, [n, h, w, c], 'dflat');
    cx.addGrad(x, cx.b.node('Transpose', [r], 'dflat_nchw', { perm: [0, 3, 1, 2] }));
  });
  return out;
}

export const zeroPaddingFamily: LayerFamily = { classes: ['ZeroPadding2D'], infer: padInfer, train: padTrain };
export const flattenFamily: LayerFamily = { classes: ['Flatten'], infer: flattenInfer, train: flattenTrain };
export const dropoutFamily: LayerFamily = {
  classes: ['Dropout'],
  infer: (cx, layer, inputs, outputs) => cx.set(outputs[0]!, cx.one(layer, inputs)),
  train: (cx, layer, ins) => {
    if (Number(layer.getConfig().rate) > 0) cx.fail(layer, 'dropout with rate > 0');
    return cx.one(layer, ins);
  },
};
