// Single-op ONNX graphs for the ort engine's convolution kernels: forward, input gradient (dX) and
// filter gradient (dW), dense and depthwise, on tfjs's NHWC tensors and [kh,kw,in,out] filters.
// Weights are graph INPUTS (they change every step). ORT's Conv is NCHW, so the layout changes are
// Transpose nodes inside the graph (C++), never JS loops. A 1x1 convolution needs no layout change
// at all: it is a MatMul over the channel axis.
//
// dW has no ONNX operator. dW[a,b,c,o] = sum_{n,i,j} xp[n, i*sh+a, j*sw+b, c] dy[n,i,j,o] is a
// convolution of x (channels as batch, batch as channels) with dy as a filter dilated by the stride,
// as in src/backend/wasm-conv-grad.ts. dX is ConvTranspose with the forward's pads; rows of x that
// no window reaches come from output_padding.
import { GraphBuilder } from './builder.ts';
import type { Window2D } from './geometry.ts';
import { kernelToOnnxDirect as onnxWeight } from './layers/conv.ts';

export type ConvOp = 'conv' | 'dx' | 'dw';

/** One convolution's geometry as tfjs resolves it (computeConv2DInfo), NHWC. */
export interface ConvSpec extends Window2D {
  op: ConvOp;
  depthwise: boolean;
  /** x: [n, h, w, c]; y: [n, oh, ow, o] (depthwise: o = c * m). */
  n: number;
  h: number;
  w: number;
  c: number;
  oh: number;
  ow: number;
  o: number;
  top: number;
  bottom: number;
  left: number;
  right: number;
  /**
   * Dense convs: 'nchw' = ORT's Conv on transposed tensors; 'im2col' = the kh*kw shifted windows of
   * x concatenated along channels and one GEMM, all NHWC (no transposes; pays at few channels).
   */
  variant?: 'nchw' | 'im2col';
  /** Forward only: a bias added to the output, and 'relu' or 'linear'. */
  bias?: boolean;
  activation?: 'linear' | 'relu';
}

const OPSET = 17;

export interface ConvGraph {
  model: Uint8Array;
  inputs: { name: string; dims: number[] }[];
  output: { name: string; dims: number[] };
}

function isPointwise(s: ConvSpec): boolean {
  return !s.depthwise && s.kh === 1 && s.kw === 1 && s.dh === 1 && s.dw === 1 && s.top === 0 && s.bottom === 0 && s.left === 0 && s.right === 0;
}

/** Every row/col of x from 0 with the stride (a 1x1 convolution's window starts). */
function strided(g: GraphBuilder, x: string, s: ConvSpec): string {
  if (s.sh === 1 && s.sw === 1) return x;
  const ends = [(s.oh - 1) * s.sh + 1, (s.ow - 1) * s.sw + 1];
  return g.node('Slice', [x, g.int64Init('st', [0, 0]), g.int64Init('en', ends), g.int64Init('ax', [1, 2]), g.int64Init('sp', [s.sh, s.sw])], 'strided');
}

/**
 * The im2col matrix in NHWC: [n, oh, ow, kh*kw*c], tap-major like a [kh,kw,c,o] filter reshaped to
 * [kh*kw*c, o]. Each tap is one strided Slice of the zero-padded x.
 */
function im2col(g: GraphBuilder, x: string, s: ConvSpec): string {
  const padded = s.top + s.bottom + s.left + s.right > 0 ? g.node('Pad', [x, g.int64Init('pads', [0, s.top, s.left, 0, 0, s.bottom, s.right, 0])], 'xpad') : x;
  const taps: string[] = [];
  const axes = g.int64Init('ax', [1, 2]);
  const steps = g.int64Init('sp', [s.sh, s.sw]);
  for (let a = 0; a < s.kh; a++) {
    for (let b = 0; b < s.kw; b++) {
      const st = [a * s.dh, b * s.dw];
      const en = [st[0]! + (s.oh - 1) * s.sh + 1, st[1]! + (s.ow - 1) * s.sw + 1];
      taps.push(g.node('Slice', [padded, g.int64Init('st', st), g.int64Init('en', en), axes, steps], 'tap'));
    }
  }
  return taps.length === 1 ? taps[0]! : g.node('Concat', taps, 'col', { axis: 3 });
}

function forward(g: GraphBuilder, s: ConvSpec): string {
  let y: string;
  if (!s.depthwise && s.variant === 'im2col') {
    y = g.node('MatMul', [im2col(g, 'x', s), g.node('Reshape', ['w', g.int64Init('w2', [s.kh * s.kw * s.c, s.o])], 'w2d')], 'mm');
  } else if (isPointwise(s)) {
    y = g.node('MatMul', [strided(g, 'x', s), g.node('Reshape', ['w', g.int64Init('w2', [s.c, s.o])], 'w2d')], 'mm');
  } else {
    const xt = g.node('Transpose', ['x'], 'x_nchw', { perm: [0, 3, 1, 2] });
    const yt = g.node('Conv', [xt, onnxWeight(g, 'w', s)], 'conv', {
      kernel_shape: [s.kh, s.kw],
      strides: [s.sh, s.sw],
      dilations: [s.dh, s.dw],
      pads: [s.top, s.left, s.bottom, s.right],
      group: s.depthwise ? s.c : 1,
    });
    y = g.node('Transpose', [yt], 'y_nhwc', { perm: [0, 2, 3, 1] });
  }
  if (s.bias) y = g.node('Add', [y, 'b'], 'bias');
  if (s.activation === 'relu') y = g.node('Relu', [y], 'relu');
  return y;
}

/** Pads (>0) or crops (<0) axis `axis` of a rank-`rank` tensor at its end by `amount`. */
function fitEnd(g: GraphBuilder, t: string, rank: number, axis: number, amount: number): string {
  if (amount === 0) return t;
  if (amount < 0) {
    return g.node('Slice', [t, g.int64Init('st', [0]), g.int64Init('en', [amount]), g.int64Init('ax', [axis])], 'crop');
  }
  const pads = new Array<number>(2 * rank).fill(0);
  pads[rank + axis] = amount;
  return g.node('Pad', [t, g.int64Init('pads', pads)], 'pad');
}

function inputGrad(g: GraphBuilder, s: ConvSpec): string {
  if (isPointwise(s)) {
    const wT = g.node('Transpose', [g.node('Reshape', ['w', g.int64Init('w2', [s.c, s.o])], 'w2d')], 'wT', { perm: [1, 0] });
    let dx = g.node('MatMul', ['dy', wT], 'mm'); // [n, oh, ow, c]
    if (s.sh === 1 && s.sw === 1) return dx;
    // Zero-stuff: each dy position feeds the window start (i*sh, j*sw).
    dx = g.node('Reshape', [dx, g.int64Init('s6', [s.n, s.oh, 1, s.ow, 1, s.c])], 'r6');
    dx = g.node('Pad', [dx, g.int64Init('pads', [0, 0, 0, 0, 0, 0, 0, 0, s.sh - 1, 0, s.sw - 1, 0])], 'stuff');
    dx = g.node('Reshape', [dx, g.int64Init('s4', [s.n, s.oh * s.sh, s.ow * s.sw, s.c])], 'r4');
    dx = fitEnd(g, dx, 4, 1, s.h - s.oh * s.sh);
    return fitEnd(g, dx, 4, 2, s.w - s.ow * s.sw);
  }
  const dyt = g.node('Transpose', ['dy'], 'dy_nchw', { perm: [0, 3, 1, 2] });
  // End pads so that exactly h x w comes out; rows no window reaches (negative pad) are output_padding zeros.
  const endH = s.sh * (s.oh - 1) + s.kh - s.top - s.h;
  const endW = s.sw * (s.ow - 1) + s.kw - s.left - s.w;
  const dxt = g.node('ConvTranspose', [dyt, onnxWeight(g, 'w', s)], 'convT', {
    kernel_shape: [s.kh, s.kw],
    strides: [s.sh, s.sw],
    pads: [s.top, s.left, Math.max(endH, 0), Math.max(endW, 0)],
    output_padding: [Math.max(-endH, 0), Math.max(-endW, 0)],
    group: s.depthwise ? s.c : 1,
  });
  return g.node('Transpose', [dxt], 'dx_nhwc', { perm: [0, 2, 3, 1] });
}

function filterGrad(g: GraphBuilder, s: ConvSpec): string {
  if (isPointwise(s)) {
    const p = s.n * s.oh * s.ow;
    const x2 = g.node('Reshape', [strided(g, 'x', s), g.int64Init('x2', [p, s.c])], 'x2d');
    const dy2 = g.node('Reshape', ['dy', g.int64Init('dy2', [p, s.o])], 'dy2d');
    const dw = g.node('Gemm', [x2, dy2], 'xTdy', { transA: 1 }); // [c, o]
    return g.node('Reshape', [dw, g.int64Init('w4', [1, 1, s.c, s.o])], 'dw');
  }
  if (!s.depthwise && s.variant === 'im2col') {
    const k = s.kh * s.kw * s.c;
    const p = s.n * s.oh * s.ow;
    const col = g.node('Reshape', [im2col(g, 'x', s), g.int64Init('c2', [p, k])], 'col2d');
    const dy2 = g.node('Reshape', ['dy', g.int64Init('dy2', [p, s.o])], 'dy2d');
    const dw = g.node('Gemm', [col, dy2], 'colTdy', { transA: 1 }); // [kh*kw*c, o]
    return g.node('Reshape', [dw, g.int64Init('w4', [s.kh, s.kw, s.c, s.o])], 'dw');
  }
  // x as [c, n, h, w] (depthwise: [1, c*n, h, w], group c), dy as a filter [o, n, oh, ow].
  let xt = g.node('Transpose', ['x'], 'x_cnhw', { perm: [3, 0, 1, 2] });
  if (s.depthwise) xt = g.node('Reshape', [xt, g.int64Init('x1', [1, s.c * s.n, s.h, s.w])], 'x_1cnhw');
  // End pads that make the output exactly kh x kw; negative ones crop rows no window reaches.
  const endH = (s.oh - 1) * s.sh + s.kh - s.h - s.top;
  const endW = (s.ow - 1) * s.sw + s.kw - s.w - s.left;
  xt = fitEnd(g, xt, 4, 2, Math.min(endH, 0));
  xt = fitEnd(g, xt, 4, 3, Math.min(endW, 0));
  const dyt = g.node('Transpose', ['dy'], 'dy_onhw', { perm: [3, 0, 1, 2] });
  let dw = g.node('Conv', [xt, dyt], 'conv', {
    kernel_shape: [s.oh, s.ow],
    dilations: [s.sh, s.sw],
    pads: [s.top, s.left, Math.max(endH, 0), Math.max(endW, 0)],
    group: s.depthwise ? s.c : 1,
  }); // [c, o, kh, kw] (depthwise: [1, c*m, kh, kw])
  if (s.depthwise) dw = g.node('Reshape', [dw, g.int64Init('cm', [s.c, s.o / s.c, s.kh, s.kw])], 'dw_cm');
  return g.node('Transpose', [dw], 'dw_hwio', { perm: [2, 3, 0, 1] });
}

function filterDims(s: ConvSpec): number[] {
  return [s.kh, s.kw, s.c, s.depthwise ? s.o / s.c : s.o];
}

/** A batched matrix product as tfjs's BatchMatMul kernel sees it: a [ba, m, k] . b [bb, k, n] (ba or bb may be 1). */
export interface MatMulSpec {
  op: 'matmul';
  a: [number, number, number];
  b: [number, number, number];
  transposeA: boolean;
  transposeB: boolean;
  /** 2: the kernel was called with 2-D a and b (batch 1), and returns [m, n]. */
  rank: 2 | 3;
}

export function buildMatMulGraph(s: MatMulSpec): ConvGraph {
  const g = new GraphBuilder(OPSET);
  g.reserve('a');
  g.reserve('b');
  const m = s.transposeA ? s.a[2] : s.a[1];
  const n = s.transposeB ? s.b[1] : s.b[2];
  const batch = Math.max(s.a[0], s.b[0]);
  let out: string;
  if (s.a[0] === 1 && s.b[0] === 1) {
    // One GEMM with the transposes as flags (no copies).
    const a2 = g.node('Reshape', ['a', g.int64Init('a2', [s.a[1], s.a[2]])], 'a2d');
    const b2 = g.node('Reshape', ['b', g.int64Init('b2', [s.b[1], s.b[2]])], 'b2d');
    const y = g.node('Gemm', [a2, b2], 'gemm', { transA: s.transposeA ? 1 : 0, transB: s.transposeB ? 1 : 0 });
    out = s.rank === 2 ? y : g.node('Reshape', [y, g.int64Init('y3', [1, m, n])], 'y3d');
  } else {
    const a = s.transposeA ? g.node('Transpose', ['a'], 'aT', { perm: [0, 2, 1] }) : 'a';
    const b = s.transposeB ? g.node('Transpose', ['b'], 'bT', { perm: [0, 2, 1] }) : 'b';
    out = g.node('MatMul', [a, b], 'mm');
  }
  g.reserve('out');
  g.rename(out, 'out');
  const inputs = [{ name: 'a', dims: [...s.a] }, { name: 'b', dims: [...s.b] }];
  const output = { name: 'out', dims: s.rank === 2 ? [m, n] : [batch, m, n] };
  return { model: g.encode({ graphName: 'ort_matmul', inputs, outputs: [output], metadata: {}, producerVersion: '0' }), inputs, output };
}

/** The ONNX model for `spec`, with its input and output names and shapes. */
export function buildConvGraph(spec: ConvSpec): ConvGraph {
  const g = new GraphBuilder(OPSET);
  const xDims = [spec.n, spec.h, spec.w, spec.c];
  const yDims = [spec.n, spec.oh, spec.ow, spec.o];
  let inputs: { name: string; dims: number[] }[];
  let out: string;
  let outDims: number[];
  if (spec.op === 'conv') {
    inputs = [{ name: 'x', dims: xDims }, { name: 'w', dims: filterDims(spec) }];
    if (spec.bias) inputs.push({ name: 'b', dims: [spec.o] });
    for (const i of inputs) g.reserve(i.name);
    out = forward(g, spec);
    outDims = yDims;
  } else if (spec.op === 'dx') {
    inputs = [{ name: 'dy', dims: yDims }, { name: 'w', dims: filterDims(spec) }];
    for (const i of inputs) g.reserve(i.name);
    out = inputGrad(g, spec);
    outDims = xDims;
  } else {
    inputs = [{ name: 'x', dims: xDims }, { name: 'dy', dims: yDims }];
    for (const i of inputs) g.reserve(i.name);
    out = filterGrad(g, spec);
    outDims = filterDims(spec);
  }
  const name = 'out';
  g.reserve(name);
  g.rename(out, name);
  const model = g.encode({ graphName: `ort_${spec.op}`, inputs, outputs: [{ name, dims: outDims }], metadata: {}, producerVersion: '0' });
  return { model, inputs, output: { name, dims: outDims } };
}
