// Spatial geometry shared by every ONNX graph: padding carried from ZeroPadding2D, TF 'same' padding
// and a convolution's kernel, strides and dilations read from a tfjs layer config.
import type * as tf from '@tensorflow/tfjs';

export interface Pads {
  top: number;
  bottom: number;
  left: number;
  right: number;
}

export const NO_PADS: Pads = { top: 0, bottom: 0, left: 0, right: 0 };

export function addPads(a: Pads, b: Pads): Pads {
  return { top: a.top + b.top, bottom: a.bottom + b.bottom, left: a.left + b.left, right: a.right + b.right };
}

/** A ZeroPadding2D layer's padding. */
export function zeroPaddingOf(layer: tf.layers.Layer): Pads {
  const [[top, bottom], [left, right]] = layer.getConfig().padding as [[number, number], [number, number]];
  return { top: top!, bottom: bottom!, left: left!, right: right! };
}

/** TF 'same' total padding along one axis of size n (kernel k, stride s, dilation d). */
export function samePadTotal(n: number, k: number, s: number, d: number): number {
  return Math.max((Math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0);
}

/** TF 'same' padding [begin, end] along one axis: the odd pixel goes at the end. */
export function samePads(n: number, k: number, s: number, d: number): [number, number] {
  const total = samePadTotal(n, k, s, d);
  return [Math.floor(total / 2), total - Math.floor(total / 2)];
}

/** A 2-D window: kernel size, strides and dilations along height and width. */
export interface Window2D {
  kh: number;
  kw: number;
  sh: number;
  sw: number;
  dh: number;
  dw: number;
}

export interface ConvGeometry extends Window2D {
  padding: 'same' | 'valid';
}

function pair(v: unknown): [number, number] {
  const a = Array.isArray(v) ? v : [v, v];
  return [Number(a[0]), Number(a[1] ?? a[0])];
}

/** A Conv2D / DepthwiseConv2D / GroupedConv2D config's geometry; `why` names what is not supported. */
export function convGeometry(layer: tf.layers.Layer, unsupported: (why: 'channelsFirst' | 'padding') => never): ConvGeometry {
  const cfg = layer.getConfig();
  if (cfg.dataFormat === 'channelsFirst') unsupported('channelsFirst');
  if (cfg.padding !== 'same' && cfg.padding !== 'valid') unsupported('padding');
  const [kh, kw] = pair(cfg.kernelSize);
  const [sh, sw] = pair(cfg.strides ?? 1);
  const [dh, dw] = pair(cfg.dilationRate ?? 1);
  return { kh, kw, sh, sw, dh, dw, padding: cfg.padding };
}

/** All padding of a convolution: the pending `pre` plus 'same' padding computed on the padded size h x w. */
export function convPads(geo: ConvGeometry, pre: Pads, h: number, w: number): Pads {
  if (geo.padding !== 'same') return pre;
  const [t, b] = samePads(h, geo.kh, geo.sh, geo.dh);
  const [l, r] = samePads(w, geo.kw, geo.sw, geo.dw);
  return addPads(pre, { top: t, bottom: b, left: l, right: r });
}
