// Convolutions (Conv2D, DepthwiseConv2D, GroupedConv2D): weight layout, inference emission (with the
// BatchNorm folding), and the training forward and backward.
//
// Gradients, with no ONNX training operators:
//   dX = for stride 1, a Conv of dy with the filter flipped in space and in/out channels swapped within
//        each group (ORT's Conv is ~25% faster than its ConvTranspose); otherwise ConvTranspose with the
//        forward's weight, pads and strides (output_padding for rows no window reaches);
//   dW = the im2col matrix of x (unfolded by a Conv with one-hot filters) times dy, batched per image
//        and group; one GEMM over the batch where that is cheaper; 1x1: the strided x itself;
//   one window over the whole input (output 1x1): plain products for both.
// Depthwise convolutions run on onnxruntime's NCHWc kernels where TrainOptions.nchwcBlock allows.
import type * as tf from '@tensorflow/tfjs';
import type { GraphBuilder } from '../builder.ts';
import type { InferContext, LayerFamily, Sym, TrainContext, TrainValue } from '../context.ts';
import { convGeometry, convPads, NO_PADS, type Pads } from '../geometry.ts';
import { transposeArray } from '../../util/transpose.ts';
import { valuesOf, weightOf, type ConvWeights } from '../weights.ts';
import { batchNormParams, foldBatchNorm } from './batchnorm.ts';

/** Largest unfolded (im2col) matrix the filter gradient builds at once; bigger batches go in chunks. */
const UNFOLD_CHUNK_BYTES = 128 * 2 ** 20;

// ---- weight layout ---------------------------------------------------------------------------------

/** The permutation from a tfjs Conv2D / GroupedConv2D kernel [kh,kw,I/g,O] (HWIO) to ONNX's [O,I/g,kh,kw] (OIHW). */
const HWIO_TO_OIHW = [3, 2, 0, 1];
/** From a DepthwiseConv2D kernel [kh,kw,C,M] to [C,M,kh,kw], which is [C*M,1,kh,kw] (output channel c*M+m, as tfjs orders them). */
const DEPTHWISE_TO_OIHW = [2, 3, 0, 1];

export function hwioToOihw(data: Float32Array, [kh, kw, ci, co]: number[]): Pick<ConvWeights, 'weight' | 'dims'> {
  return { weight: transposeArray(data, [kh!, kw!, ci!, co!], HWIO_TO_OIHW), dims: [co!, ci!, kh!, kw!] };
}

export function depthwiseToOihw(data: Float32Array, [kh, kw, c, m]: number[]): Pick<ConvWeights, 'weight' | 'dims'> {
  return { weight: transposeArray(data, [kh!, kw!, c!, m!], DEPTHWISE_TO_OIHW), dims: [c! * m!, 1, kh!, kw!] };
}

/**
 * The same inside a graph as one Transpose (and a Reshape for depthwise): the fewest nodes, for the
 * single-op graphs that transpose the weight on every call. kernelToOnnx is the training graphs' form.
 */
export function kernelToOnnxDirect(g: GraphBuilder, w: string, s: { depthwise: boolean; kh: number; kw: number; o: number }): string {
  if (!s.depthwise) return g.node('Transpose', [w], 'w_oihw', { perm: HWIO_TO_OIHW });
  const t = g.node('Transpose', [w], 'w_cm', { perm: DEPTHWISE_TO_OIHW });
  return g.node('Reshape', [t, g.int64Init('dw_shape', [s.o, 1, s.kh, s.kw])], 'w_oihw');
}

/** The geometry of a kernel tensor inside a graph: tfjs [kh,kw,cg,o] (depthwise [kh,kw,c,m]: cg 1, o c*m). */
export interface KernelShape {
  kh: number;
  kw: number;
  /** Input channels per group. */
  cg: number;
  o: number;
}

function reshape(g: GraphBuilder, x: string, dims: number[], name: string): string {
  return g.node('Reshape', [x, g.int64Init(`${name}.shape`, dims)], name);
}

/**
 * The transpose of the last two axes of x [..., a, kk] (kk the kernel's taps, a few) or, `tapsFirst`,
 * of x [..., kk, a]: a product with the kk x kk identity (onnxruntime's FusedMatMul, transposing one
 * operand), exact, at memory speed. As Transpose nodes, ORT's graph optimizers merge these with the
 * neighbouring 2-D transpose into one general 4-D permutation that its kernel runs ~4x slower (a
 * [3,3,512,512] kernel to OIHW: 23 ms against 6 ms, measured).
 */
function swapTaps(g: GraphBuilder, x: string, kk: number, tapsFirst: boolean, name: string): string {
  const eye = new Float32Array(kk * kk);
  for (let i = 0; i < kk; i++) eye[i * kk + i] = 1;
  const id = g.floatInit(`${name}.eye`, [kk, kk], eye);
  // [..., kk, a] -> [..., a, kk] = x^T I;  [..., a, kk] -> [..., kk, a] = I x^T.
  return tapsFirst ? g.contribNode('FusedMatMul', [x, id], name, { transA: 1 }) : g.contribNode('FusedMatMul', [id, x], name, { transB: 1 });
}

/** A tfjs kernel graph value -> ONNX's [o, cg, kh, kw] (dense, grouped and depthwise alike). */
export function kernelToOnnx(g: GraphBuilder, k: string, s: KernelShape, name: string): string {
  const kk = s.kh * s.kw;
  const t = g.node('Transpose', [reshape(g, k, [kk * s.cg, s.o], `${name}.k2`)], `${name}.kT`, { perm: [1, 0] }); // [o, kk*cg]
  if (s.cg === 1) return reshape(g, t, [s.o, 1, s.kh, s.kw], `${name}.w_oihw`);
  const t2 = kk === 1 ? t : swapTaps(g, reshape(g, t, [s.o, kk, s.cg], `${name}.k3`), kk, true, `${name}.kT2`);
  return reshape(g, t2, [s.o, s.cg, s.kh, s.kw], `${name}.w_oihw`);
}

/** ONNX [o, cg, kh, kw] -> the tfjs kernel layout `tfShape` (the inverse of kernelToOnnx). */
export function kernelFromOnnx(g: GraphBuilder, w: string, s: KernelShape, tfShape: number[], name: string): string {
  const kk = s.kh * s.kw;
  let t = reshape(g, w, [s.o, s.cg, kk], `${name}.d3`);
  if (s.cg > 1 && kk > 1) t = swapTaps(g, t, kk, false, `${name}.dT2`);
  const t2 = g.node('Transpose', [reshape(g, t, [s.o, kk * s.cg], `${name}.d2`)], `${name}.dT`, { perm: [1, 0] });
  return reshape(g, t2, tfShape, `${name}.dk`);
}

// ---- inference --------------------------------------------------------------------------------------

function infer(cx: InferContext, layer: tf.layers.Layer, inputs: Sym[], outputs: Sym[]): void {
  const x = cx.one(layer, inputs);
  const output = outputs[0]!;
  const cls = layer.getClassName();
  const cfg = layer.getConfig();
  const geo = convGeometry(layer, (why) => cx.fail(layer, why === 'channelsFirst' ? 'channelsFirst is not supported' : `padding "${cfg.padding}" is not supported`));
  const [h, w, cin] = x.shape as [number, number, number];
  const p = x.pads ?? NO_PADS;
  // TF 'same' puts the odd pixel at the end; computed on the (already padded) input size.
  const all = convPads(geo, p, h + p.top + p.bottom, w + p.left + p.right);
  const pads = [all.top, all.left, all.bottom, all.right];

  let weights: ConvWeights;
  let group = 1;
  if (cls === 'DepthwiseConv2D') {
    const k = weightOf(layer, 'depthwise_kernel')!;
    weights = depthwiseToOihw(valuesOf(k), k.shape as number[]);
    group = cin;
  } else {
    const k = weightOf(layer, 'kernel')!;
    weights = hwioToOihw(valuesOf(k), k.shape as number[]);
    if (cls === 'GroupedConv2D') group = Number(cfg.groups);
  }
  const bias = weightOf(layer, 'bias');
  if (bias) weights.bias = valuesOf(bias);

  // Fold a BatchNorm that is the conv's only consumer (torch's eval-mode export does the same).
  let out = output;
  const users = cx.consumers(output);
  const bnLayer = users[0];
  const act = (cfg.activation as string | undefined) ?? 'linear';
  if (
    cx.opts.foldBatchNorm &&
    users.length === 1 &&
    bnLayer!.getClassName() === 'BatchNormalization' &&
    bnLayer!.inboundNodes.length === 1 &&
    act === 'linear' &&
    !cx.isModelOutput(output) &&
    [-1, 3].includes(Number(bnLayer!.getConfig().axis))
  ) {
    weights = foldBatchNorm(weights, batchNormParams(bnLayer!));
    out = bnLayer!.inboundNodes[0]!.outputTensors[0]!;
  }
  const g = cx.g;
  const ins = [x.name, g.floatInit(`${layer.name}.weight`, weights.dims, weights.weight)];
  if (weights.bias) ins.push(g.floatInit(`${layer.name}.bias`, [weights.dims[0]], weights.bias));
  const name = g.node('Conv', ins, out === output ? layer.name : `${layer.name}+bn`, {
    kernel_shape: [geo.kh, geo.kw],
    strides: [geo.sh, geo.sw],
    pads,
    dilations: [geo.dh, geo.dw],
    group,
  });
  cx.set(out, { name: out === output ? cx.activation(layer, name) : name, shape: output.shape.slice(1) as number[] });
}

// ---- training ---------------------------------------------------------------------------------------

function train(cx: TrainContext, layer: tf.layers.Layer, ins: TrainValue[]): TrainValue {
  const xIn = cx.one(layer, ins);
  const cls = layer.getClassName();
  const cfg = layer.getConfig();
  const geo = convGeometry(layer, (why) => cx.fail(layer, why === 'channelsFirst' ? 'channelsFirst' : `padding "${String(cfg.padding)}"`));
  const act = (cfg.activation as string | undefined) ?? 'linear';
  if (act !== 'linear') cx.fail(layer, `fused activation "${act}"`);
  if (geo.dh !== 1 || geo.dw !== 1) cx.fail(layer, 'dilation');
  const { kh, kw, sh, sw } = geo;
  const base = xIn.pads ? xIn.pads.base : xIn;
  const pre: Pads = xIn.pads ?? NO_PADS;
  const [n, c, h0, w0] = base.dims as [number, number, number, number];
  // Padding on the (virtually) padded input, then moved onto the base tensor.
  const pads = convPads(geo, pre, xIn.dims[2]!, xIn.dims[3]!);
  const oh = Math.floor((h0 + pads.top + pads.bottom - kh) / sh) + 1;
  const ow = Math.floor((w0 + pads.left + pads.right - kw) / sw) + 1;

  const kernel = layer.weights.find((wt) => /(kernel|depthwise_kernel)$/.test(wt.originalName));
  if (!kernel) cx.fail(layer, 'no kernel');
  const bias = layer.weights.find((wt) => /bias$/.test(wt.originalName));
  let groups: number;
  let o: number;
  if (cls === 'DepthwiseConv2D') {
    const mult = kernel.shape[3]!;
    groups = c;
    o = c * mult;
  } else if (cls === 'GroupedConv2D') {
    groups = Number(cfg.groups);
    o = kernel.shape[3]!;
  } else {
    groups = 1;
    o = kernel.shape[3]!;
  }
  const cg = c / groups;
  const og = o / groups;
  const kName = cx.param(kernel, kernel.trainable);
  // A 1x1 output from one unpadded window over the whole input, dense or depthwise with multiplier 1.
  const whole = oh === 1 && ow === 1 && kh === h0 && kw === w0 && pads.top + pads.bottom + pads.left + pads.right === 0 && (groups === 1 || (groups === c && o === c));
  const bName = bias ? cx.param(bias, bias.trainable) : null;

  const kk = kh * kw;
  const ln = layer.name;
  const ks: KernelShape = { kh, kw, cg, o };
  // The input gradient of a stride-1 conv as a plain Conv of dy: filter flipped in space, in/out
  // channels swapped within each group, pads k-1-p.
  const flippedForDx = (g: GraphBuilder, k: string): string => {
    const flip = g.node('Slice', [k, g.int64Init('st', [-1, -1]), g.int64Init('en', [-(kh + 1), -(kw + 1)]), g.int64Init('ax', [0, 1]), g.int64Init('sp', [-1, -1])], `${ln}.kflip`);
    if (groups === 1) {
      const t = kk === 1 ? flip : swapTaps(g, reshape(g, flip, [kk, c * o], `${ln}.f3`), kk, true, `${ln}.fT`); // [c*o, kk]
      return reshape(g, t, [c, o, kh, kw], `${ln}.w_dx`);
    }
    const t = g.node('Transpose', [reshape(g, flip, [kk, cg, groups, og], `${ln}.f4`)], `${ln}.fT`, { perm: [2, 1, 3, 0] }); // [g, cg, og, kk]
    return reshape(g, t, [c, og, kh, kw], `${ln}.w_dx`);
  };
  const onnxPads = [pads.top, pads.left, pads.bottom, pads.right];
  const convAttrs = { kernel_shape: [kh, kw], strides: [sh, sw], pads: onnxPads, group: groups };
  const inputs = [base.name, kernelToOnnx(cx.f, kName, ks, ln)];
  if (bName) inputs.push(bName);
  // Depthwise on onnxruntime's blocked (NCHWc) kernels where the channels fill its blocks.
  const block = cx.opts.nchwcBlock ?? 0;
  const blocked = block > 0 && groups === c && o === c && c % block === 0;
  const y = blocked ? depthwiseNchwc(cx.f, base.name, inputs[1]!, bName, c, convAttrs, block, layer.name) : cx.f.node('Conv', inputs, layer.name, convAttrs);
  const out: TrainValue = { name: y, dims: [n, o, oh, ow], requiresGrad: true };

  cx.tape(() => {
    const dy = cx.gradOf(out);
    if (!dy) return;
    const b = cx.b;
    const flipPads = [kh - 1 - pads.top, kw - 1 - pads.left, kh - 1 - pads.bottom, kw - 1 - pads.right];
    if (whole) {
      // One window over the whole input (MobileFaceNet's global depthwise conv): products, no convolutions.
      const w = kernelToOnnx(b, cx.paramB(kernel), ks, ln);
      const g = wholeWindowGrads(b, ln, cx.save(base), dy, w, { n, c, o, kh, kw, depthwise: groups > 1 }, base.requiresGrad);
      if (g.dx) cx.addGrad(base, g.dx);
      if (kernel.trainable) cx.emitParamGrad(kernel, kernelFromOnnx(b, g.dw, ks, kernel.shape as number[], ln));
      if (bias?.trainable) cx.emitParamGrad(bias, cx.reshape(b, sumOverBatch(b, dy, n, o, `${ln}.db`), [o], `${ln}.db1`));
      return;
    }
    if (base.requiresGrad && sh === 1 && sw === 1 && flipPads.every((p) => p >= 0)) {
      const attrs = { kernel_shape: [kh, kw], strides: [1, 1], pads: flipPads, group: groups };
      const wFlip = flippedForDx(b, cx.paramB(kernel));
      const dx = blocked ? depthwiseNchwc(b, dy, wFlip, null, c, attrs, block, `${ln}.dx`) : b.node('Conv', [dy, wFlip], `${ln}.dx`, attrs);
      cx.addGrad(base, dx);
    } else if (base.requiresGrad) {
      const endH = sh * (oh - 1) + kh - pads.top - h0;
      const endW = sw * (ow - 1) + kw - pads.left - w0;
      const dx = b.node('ConvTranspose', [dy, kernelToOnnx(b, cx.paramB(kernel), ks, ln)], `${layer.name}.dx`, {
        kernel_shape: [kh, kw],
        strides: [sh, sw],
        pads: [pads.top, pads.left, Math.max(endH, 0), Math.max(endW, 0)],
        output_padding: [Math.max(-endH, 0), Math.max(-endW, 0)],
        group: groups,
      });
      cx.addGrad(base, dx);
    }
    const x = cx.save(base);
    let dwOnnx: string; // [o, cg, kh, kw]
    if (groups === 1 && kh === 1 && kw === 1 && pads.top + pads.left + pads.bottom + pads.right === 0) {
      dwOnnx = pointwiseFilterGrad(b, layer.name, x, dy, { n, c, o, oh, ow, sh, sw });
    } else if (groups === 1 && n * o * c * kk > c * kk * n * oh * ow + c * n * h0 * w0 + o * n * oh * ow) {
      dwOnnx = gemmFilterGrad(b, ln, x, dy, { n, c, h0, w0, o, oh, ow, kh, kw, sh, sw, pads });
    } else {
      dwOnnx = unfoldFilterGrad(b, layer.name, x, dy, { n, c, o, oh, ow, kh, kw, sh, sw, pads, groups, cg, og });
    }
    if (kernel.trainable) cx.emitParamGrad(kernel, kernelFromOnnx(b, dwOnnx, ks, kernel.shape as number[], ln));
    if (bias?.trainable) cx.emitParamGrad(bias, b.node('ReduceSum', [dy, b.int64Init('axes', [0, 2, 3])], `${layer.name}.db`, { keepdims: 0 }));
  });
  return out;
}

/**
 * The sum over the leading axis of t [n, ...] (`size` elements after it), flat: ones[1, n] . t[n, size].
 * ORT's ReduceSum over axis 0 runs ~1.5 ns per element here; the product, at memory speed, ~5x faster.
 */
function sumOverBatch(b: GraphBuilder, t: string, n: number, size: number, name: string): string {
  if (n === 1) return reshape(b, t, [1, size], name);
  const ones = b.floatInit(`${name}.ones`, [1, n], new Float32Array(n).fill(1));
  return b.node('MatMul', [ones, reshape(b, t, [n, size], `${name}.t2`)], name);
}

/**
 * A depthwise convolution (w [c, 1, kh, kw], c a multiple of `block`) on onnxruntime's NCHWc kernels:
 * the input reordered into channel blocks, the filter into [c/block, kh, kw, block] (its blocked
 * depthwise layout), the output back. With the two reorders, ~1.5x faster than its Conv here (mbf's
 * [32,128,56,56]: 24-31 against 16 ms, measured).
 */
function depthwiseNchwc(g: GraphBuilder, x: string, w: string, bias: string | null, c: number, attrs: Record<string, number[] | number>, block: number, name: string): string {
  const [kh, kw] = attrs.kernel_shape as number[];
  const w3 = reshape(g, w, [c / block, block, kh! * kw!], `${name}.wb3`);
  const wb = reshape(g, g.node('Transpose', [w3], `${name}.wbT`, { perm: [0, 2, 1] }), [c, 1, kh!, kw!], `${name}.wb`);
  const domain = 'com.microsoft.nchwc';
  const xb = g.contribNode('ReorderInput', [x], `${name}.xb`, { channels_last: 0 }, domain);
  const yb = g.contribNode('Conv', bias ? [xb, wb, bias] : [xb, wb], `${name}.yb`, attrs, domain);
  return g.contribNode('ReorderOutput', [yb], name, { channels: c, channels_last: 0 }, domain);
}

/**
 * The gradients of a convolution whose one window covers the whole input (output [n, o, 1, 1]),
 * w in ONNX layout: depthwise, dx[n,c,i,j] = dy[n,c] w[c,i,j] and dW[c,i,j] = sum_n dy[n,c] x[n,c,i,j];
 * dense, dx[n, (c,i,j)] = dy[n, o] . w[o, (c,i,j)] and dW = dy^T . x.
 */
function wholeWindowGrads(
  b: GraphBuilder,
  name: string,
  x: string,
  dy: string,
  w: string,
  s: { n: number; c: number; o: number; kh: number; kw: number; depthwise: boolean },
  needDx: boolean,
): { dx: string | null; dw: string } {
  const kk = s.kh * s.kw;
  if (s.depthwise) {
    const dy4 = reshape(b, dy, [s.n, s.c, 1, 1], `${name}.dy4`);
    const dx = needDx ? b.node('Mul', [dy4, reshape(b, w, [1, s.c, s.kh, s.kw], `${name}.w4`)], `${name}.dx`) : null;
    const dw = sumOverBatch(b, b.node('Mul', [x, dy4], `${name}.xdy`), s.n, s.c * kk, `${name}.dwsum`);
    return { dx, dw: reshape(b, dw, [s.c, 1, s.kh, s.kw], `${name}.dw`) };
  }
  const dy2 = reshape(b, dy, [s.n, s.o], `${name}.dy2`);
  const dx = needDx ? reshape(b, b.node('MatMul', [dy2, reshape(b, w, [s.o, s.c * kk], `${name}.w2`)], `${name}.dxm`), [s.n, s.c, s.kh, s.kw], `${name}.dx`) : null;
  const dw = b.node('Gemm', [dy2, reshape(b, x, [s.n, s.c * kk], `${name}.x2`)], `${name}.gemm`, { transA: 1 });
  return { dx, dw: reshape(b, dw, [s.o, s.c, s.kh, s.kw], `${name}.dw`) };
}

/** 1x1, no padding: dW[o, c] = dy[o, (n,i,j)] . x[(n,i,j), c] on the strided x. */
function pointwiseFilterGrad(b: GraphBuilder, name: string, x: string, dy: string, s: { n: number; c: number; o: number; oh: number; ow: number; sh: number; sw: number }): string {
  let xs = x;
  if (s.sh > 1 || s.sw > 1) {
    const ends = [(s.oh - 1) * s.sh + 1, (s.ow - 1) * s.sw + 1];
    xs = b.node('Slice', [x, b.int64Init('st', [0, 0]), b.int64Init('en', ends), b.int64Init('ax', [2, 3]), b.int64Init('sp', [s.sh, s.sw])], `${name}.xs`);
  }
  const p = s.oh * s.ow;
  // Per image: dy[n] [o, p] . x[n]^T [p, c], summed over n as one batched MatMul + ReduceSum.
  const x3 = reshape(b, xs, [s.n, s.c, p], `${name}.x3`);
  const dy3 = reshape(b, dy, [s.n, s.o, p], `${name}.dy3`);
  const xT = b.node('Transpose', [x3], `${name}.xT`, { perm: [0, 2, 1] });
  const mm = b.node('MatMul', [dy3, xT], `${name}.dwn`);
  return reshape(b, sumOverBatch(b, mm, s.n, s.o * s.c, `${name}.dw2`), [s.o, s.c, 1, 1], `${name}.dw`);
}

/**
 * k x k (any groups): the im2col matrix comes from ONE Conv of x with constant one-hot filters
 * (group c, kh*kw outputs per channel: a multithreaded unfold; Slice/Concat copies run on one
 * thread), then per image and group dy [og, p] . col^T [p, cg*kh*kw] as a batched MatMul that ORT
 * fuses with the transpose, summed over the batch. Output channel order c*kh*kw + tap is already
 * ONNX's [o, cg, kh, kw] weight order.
 */
function unfoldFilterGrad(
  b: GraphBuilder,
  name: string,
  x: string,
  dy: string,
  s: { n: number; c: number; o: number; oh: number; ow: number; kh: number; kw: number; sh: number; sw: number; pads: Pads; groups: number; cg: number; og: number },
): string {
  const kk = s.kh * s.kw;
  const onehot = new Float32Array(s.c * kk * kk);
  for (let c = 0; c < s.c; c++) for (let t = 0; t < kk; t++) onehot[(c * kk + t) * kk + t] = 1;
  const w = b.floatInit(`${name}.unfold_w`, [s.c * kk, 1, s.kh, s.kw], onehot);
  const p = s.oh * s.ow;
  const g = s.groups;
  // The unfolded matrix is kh*kw times x: build it a few images at a time (peak memory).
  const per = Math.max(1, Math.floor(UNFOLD_CHUNK_BYTES / (4 * s.c * kk * p)));
  const parts: string[] = [];
  for (let i = 0; i < s.n; i += per) {
    const m = Math.min(per, s.n - i);
    const cut = (t: string, what: string) =>
      m === s.n ? t : b.node('Slice', [t, b.int64Init('st', [i]), b.int64Init('en', [i + m]), b.int64Init('ax', [0])], `${name}.${what}${i}`);
    const col = b.node('Conv', [cut(x, 'x'), w], `${name}.unfold`, {
      kernel_shape: [s.kh, s.kw],
      strides: [s.sh, s.sw],
      pads: [s.pads.top, s.pads.left, s.pads.bottom, s.pads.right],
      group: s.c,
    }); // [m, c*kk, oh, ow]
    const col4 = reshape(b, col, [m, g, s.cg * kk, p], `${name}.col4`);
    const dy4 = reshape(b, cut(dy, 'dy'), [m, g, s.og, p], `${name}.dy4`);
    const colT = b.node('Transpose', [col4], `${name}.colT`, { perm: [0, 1, 3, 2] });
    const mm = b.node('MatMul', [dy4, colT], `${name}.mm`); // [m, g, og, cg*kk]
    parts.push(sumOverBatch(b, mm, m, s.o * s.cg * kk, `${name}.sum`));
  }
  const sum = parts.length === 1 ? parts[0]! : b.node('Sum', parts, `${name}.sumall`);
  return reshape(b, sum, [s.o, s.cg, s.kh, s.kw], `${name}.dw`);
}

/**
 * Dense k x k where the per-image partial products would outweigh the activations (late stages,
 * o > oh*ow): one GEMM over the whole batch, dy [o, (n,p)] . col [(c,tap), (n,p)]^T, the columns
 * unfolded from x as [c*n, 1, h, w] images and transposed once.
 */
function gemmFilterGrad(
  b: GraphBuilder,
  name: string,
  x: string,
  dy: string,
  s: { n: number; c: number; h0: number; w0: number; o: number; oh: number; ow: number; kh: number; kw: number; sh: number; sw: number; pads: Pads },
): string {
  const kk = s.kh * s.kw;
  const p = s.oh * s.ow;
  const onehot = new Float32Array(kk * kk);
  for (let t = 0; t < kk; t++) onehot[t * kk + t] = 1;
  const w = b.floatInit(`${name}.unfold_w`, [kk, 1, s.kh, s.kw], onehot);
  const xt = reshape(b, b.node('Transpose', [x], `${name}.x_cn`, { perm: [1, 0, 2, 3] }), [s.c * s.n, 1, s.h0, s.w0], `${name}.x_planes`);
  const col = b.node('Conv', [xt, w], `${name}.unfold`, {
    kernel_shape: [s.kh, s.kw],
    strides: [s.sh, s.sw],
    pads: [s.pads.top, s.pads.left, s.pads.bottom, s.pads.right],
  }); // [c*n, kk, oh, ow]
  const colT = b.node('Transpose', [reshape(b, col, [s.c, s.n, kk, p], `${name}.col4`)], `${name}.colT`, { perm: [0, 2, 1, 3] });
  const col2 = reshape(b, colT, [s.c * kk, s.n * p], `${name}.col2`);
  const dy2 = reshape(b, b.node('Transpose', [dy], `${name}.dyT`, { perm: [1, 0, 2, 3] }), [s.o, s.n * p], `${name}.dy2`);
  const dw = b.node('Gemm', [dy2, col2], `${name}.gemm`, { transB: 1 }); // [o, (c, tap)]
  return reshape(b, dw, [s.o, s.c, s.kh, s.kw], `${name}.dw`);
}

export const convFamily: LayerFamily = { classes: ['Conv2D', 'DepthwiseConv2D', 'GroupedConv2D'], infer, train };
