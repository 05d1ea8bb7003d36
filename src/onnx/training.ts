// A backbone's whole training step as two ONNX graphs, for onnxruntime to run in C++ on all cores:
//   forward:  image (NHWC) + weights -> embedding, each BatchNorm's batch mean/variance, and the
//             activations the backward needs ("saved");
//   backward: d(embedding) + saved + weights -> the gradient of every trainable weight.
// tfjs then sees one op per step (src/backend/ort-train.ts) instead of ~300 kernels whose element-wise
// parts run in JS (cpu) or on a 4 GB heap (wasm). Inside, everything is NCHW (ORT's Conv layout):
// one Transpose of the image in, one before the NHWC-ordered Flatten. The semantics are trainForward's
// (src/train/forward.ts): PyTorch BatchNorm (batch statistics, biased variance to normalise), or the
// running statistics when BN is frozen for fine-tuning.
//
// Gradients, with no ONNX training operators:
//   conv dX = ConvTranspose with the forward's weight, pads and strides (output_padding for rows no
//             window reaches);
//   conv dW = the im2col matrix of x (unfolded by a Conv with one-hot filters) times dy, batched
//             per image and group (1x1: the strided x itself);
//   BN      = the closed form dx = gamma rstd / n (n dy - sum dy - xhat sum(dy xhat));
//   PReLU   = Where(x > 0, dy, a dy), da = sum(dy min(x, 0)).
import type * as tf from '@tensorflow/tfjs';
import { GraphBuilder } from './builder.ts';

const OPSET = 18;

/** BatchNormalization as a plain affine map: var = 1 - eps, so sqrt(var + eps) is exactly 1 (a power of two). */
const AFFINE_EPS = 2 ** -10;

/** Largest unfolded (im2col) matrix the filter gradient builds at once; bigger batches go in chunks. */
const UNFOLD_CHUNK_BYTES = 128 * 2 ** 20;

/** A trainable or statistic weight the graphs take as an input, in its tfjs layout. */
export interface GraphParam {
  /** Input name in both graphs. */
  name: string;
  variable: tf.LayerVariable;
  /** Its gradient is a backward output named `grad:<name>` (false for frozen BN statistics). */
  trainable: boolean;
}

export interface GraphValue {
  name: string;
  dims: number[];
  /** Element count. */
  size: number;
}

/** One BatchNorm's batch statistics, forward outputs `<prefix>:mean` and `<prefix>:var` (biased). */
export interface GraphBatchNorm {
  layer: tf.layers.Layer;
  mean: string;
  variance: string;
  channels: number;
  /** Values per channel in the batch (n of the unbiased correction). */
  count: number;
}

export interface TrainingGraphs {
  forward: Uint8Array;
  backward: Uint8Array;
  params: GraphParam[];
  /** Forward input (NHWC image). */
  input: GraphValue;
  /** Forward output (embedding); the backward takes its gradient as `grad:<output.name>`. */
  output: GraphValue;
  /** Forward outputs that are backward inputs (same names). */
  saved: GraphValue[];
  batchNorms: GraphBatchNorm[];
  /** Names the backward graph takes: `grad:<output>`, saved values and the weights it reads. */
  backwardInputs: string[];
}

export class UnsupportedLayerError extends Error {
  override name = 'UnsupportedLayerError';
}

interface Val {
  /** Forward name. */
  name: string;
  /** NCHW dims (or [n, f] after Flatten). */
  dims: number[];
  requiresGrad: boolean;
  /**
   * Recomputes this value inside the backward graph from values the backward has anyway (BN and
   * PReLU outputs: a few element-wise passes instead of keeping another full activation alive).
   */
  remat?: () => string;
  rematKind?: 'bn' | 'prelu';
  /** A ZeroPadding2D not materialised yet: a following conv takes it as its own pads. */
  pads?: { top: number; bottom: number; left: number; right: number; base: Val };
}

type Pads = { top: number; bottom: number; left: number; right: number };

/** tfjs/TF 'same' padding: the extra row goes at the end. */
function samePads(size: number, k: number, s: number, d: number): [number, number] {
  const eff = (k - 1) * d + 1;
  const out = Math.ceil(size / s);
  const total = Math.max((out - 1) * s + eff - size, 0);
  return [Math.floor(total / 2), total - Math.floor(total / 2)];
}

function prod(a: readonly number[]): number {
  return a.reduce((x, y) => x * y, 1);
}

export interface CompileOptions {
  batch: number;
  /** Fine-tuning: BatchNorm uses (and does not update) its running statistics. */
  freezeBatchNorm?: boolean;
  /**
   * Which outputs the backward recomputes instead of the forward saving them: 'bn' (default: BN outputs,
   * one pass each), 'all' (PReLU outputs too: ~3 passes each in ORT, for the least memory), 'none'.
   */
  recompute?: 'bn' | 'all' | 'none';
}

/** Builds the forward and backward graphs of `model` at batch `opts.batch`; throws UnsupportedLayerError. */
export function compileTrainingGraphs(model: tf.LayersModel, opts: CompileOptions): TrainingGraphs {
  return new Compiler(model, opts).compile();
}

class Compiler {
  private readonly f = new GraphBuilder(OPSET);
  private readonly b = new GraphBuilder(OPSET);
  private readonly values = new Map<number, Val>();
  private readonly params: GraphParam[] = [];
  private readonly paramNames = new Map<tf.LayerVariable, string>();
  private readonly paramSet = new Set<string>();
  /** Backward-graph name of each param / saved value once imported. */
  private readonly inB = new Map<string, string>();
  private readonly saved: GraphValue[] = [];
  private readonly batchNorms: GraphBatchNorm[] = [];
  /** Backward emitters in forward order; run in reverse. */
  private readonly tape: (() => void)[] = [];
  /** Gradient contributions per forward value name (backward names). */
  private readonly grads = new Map<string, string[]>();
  private readonly gradOutputs: GraphValue[] = [];

  constructor(
    private readonly model: tf.LayersModel,
    private readonly opts: CompileOptions,
  ) {}

  compile(): TrainingGraphs {
    const m = this.model;
    if (m.inputs.length !== 1 || m.outputs.length !== 1) throw new UnsupportedLayerError('one input and one output expected');
    const inShape = m.inputs[0]!.shape as number[];
    const n = this.opts.batch;
    const [h, w, c] = inShape.slice(1) as [number, number, number];
    const input: GraphValue = { name: 'image', dims: [n, h, w, c], size: n * h * w * c };
    this.f.reserve(input.name);
    const x = this.f.node('Transpose', [input.name], 'image_nchw', { perm: [0, 3, 1, 2] });
    this.values.set(m.inputs[0]!.id, { name: x, dims: [n, c, h, w], requiresGrad: false });

    for (const layer of m.layers) {
      if (layer.getClassName() === 'InputLayer') continue;
      const node = layer.inboundNodes[0]!;
      const ins = node.inputTensors.map((s) => {
        const v = this.values.get(s.id);
        if (!v) throw new UnsupportedLayerError(`input of ${layer.name} not computed`);
        return v;
      });
      this.values.set(node.outputTensors[0]!.id, this.layer(layer, ins));
    }
    let outVal = this.plain(this.values.get(m.outputs[0]!.id)!);
    // A feature-map output goes back to tfjs's NHWC (backbones end in an embedding; other models may not).
    if (outVal.dims.length === 4) outVal = this.toNhwc(outVal);
    const output: GraphValue = { name: 'embedding', dims: outVal.dims, size: prod(outVal.dims) };
    this.f.reserve(output.name);
    this.f.rename(outVal.name, output.name);
    // A saved value that is the output itself keeps working under the new name.
    for (const s of this.saved) if (s.name === outVal.name) throw new UnsupportedLayerError('the output is needed by the backward');
    outVal.name = output.name;

    // Backward: the output's gradient is an input, then every recorded emitter in reverse.
    const dy = this.b.reserve(`grad:${output.name}`);
    this.grads.set(output.name, [dy]);
    for (let i = this.tape.length - 1; i >= 0; i--) this.tape[i]!();

    const fwdOutputs: GraphValue[] = [output];
    for (const bn of this.batchNorms) {
      fwdOutputs.push({ name: bn.mean, dims: [bn.channels], size: bn.channels }, { name: bn.variance, dims: [bn.channels], size: bn.channels });
    }
    fwdOutputs.push(...this.saved);
    const paramInputs = this.params.map((p) => ({ name: p.name, dims: p.variable.shape as number[], size: prod(p.variable.shape as number[]) }));
    const forward = this.f.encode({
      graphName: 'train_forward',
      inputs: [input, ...paramInputs],
      outputs: fwdOutputs,
      metadata: {},
      producerVersion: '0',
    });
    const bInputs = [{ name: dy, dims: output.dims, size: output.size }, ...this.saved, ...paramInputs].filter((v) => this.bUses(v.name));
    const backward = this.b.encode({ graphName: 'train_backward', inputs: bInputs, outputs: this.gradOutputs, metadata: {}, producerVersion: '0' });
    return { forward, backward, params: this.params, input, output, saved: this.saved, batchNorms: this.batchNorms, backwardInputs: bInputs.map((v) => v.name) };
  }

  private bUses(name: string): boolean {
    return this.b.nodes.some((nd) => nd.input!.includes(name));
  }

  // ---- helpers ----------------------------------------------------------------------------------

  private param(v: tf.LayerVariable, trainable: boolean): string {
    let name = this.paramNames.get(v);
    if (!name) {
      name = this.f.reserve(v.originalName);
      this.paramNames.set(v, name);
      this.paramSet.add(name);
      this.params.push({ name, variable: v, trainable });
    }
    return name;
  }

  /** A forward value (param or activation) made available to the backward graph. */
  private toB(fwdName: string, dims: number[]): string {
    let name = this.inB.get(fwdName);
    if (name) return name;
    name = this.b.reserve(fwdName);
    this.inB.set(fwdName, name);
    if (!this.paramSet.has(fwdName)) {
      if (fwdName === 'image') throw new UnsupportedLayerError('internal: backward needs the raw image');
      this.saved.push({ name: fwdName, dims, size: prod(dims) });
    }
    return name;
  }

  private readonly rematerialised = new Map<string, string>();

  /** Forward value v inside the backward graph: recomputed where cheap, else saved by the forward. */
  private save(v: Val): string {
    const mode = this.opts.recompute ?? 'bn';
    if (!v.remat || mode === 'none' || (mode === 'bn' && v.rematKind !== 'bn')) return this.toB(v.name, v.dims);
    let name = this.rematerialised.get(v.name);
    if (!name) {
      name = v.remat();
      this.rematerialised.set(v.name, name);
    }
    return name;
  }

  private paramB(v: tf.LayerVariable): string {
    return this.toB(this.paramNames.get(v)!, v.shape as number[]);
  }

  private addGrad(v: Val, g: string): void {
    if (!v.requiresGrad) return;
    const list = this.grads.get(v.name) ?? [];
    list.push(g);
    this.grads.set(v.name, list);
  }

  /** The total gradient of forward value v (backward name), or null when nothing flows into it. */
  private gradOf(v: Val): string | null {
    const list = this.grads.get(v.name);
    if (!list?.length) return null;
    if (list.length === 1) return list[0]!;
    return this.b.node('Sum', list, `${v.name}.gsum`);
  }

  private emitParamGrad(v: tf.LayerVariable, g: string): void {
    const name = `grad:${this.paramNames.get(v)!}`;
    this.b.reserve(name);
    this.b.rename(g, name);
    // A gradient that is directly a graph input needs an Identity to be an output.
    if (!this.b.nodes.some((nd) => nd.output!.includes(name))) this.b.node('Identity', [g], 'gid', {}, name);
    this.gradOutputs.push({ name, dims: v.shape as number[], size: prod(v.shape as number[]) });
  }

  private i64(g: GraphBuilder, base: string, data: number[]): string {
    return g.int64Init(base, data);
  }

  private reshape(g: GraphBuilder, x: string, dims: number[], name: string): string {
    return g.node('Reshape', [x, this.i64(g, `${name}.shape`, dims)], name);
  }

  /** Materialises a pending ZeroPadding2D as a Pad node (when something other than a conv reads it). */
  private plain(v: Val): Val {
    if (!v.pads) return v;
    const p = v.pads;
    const base = p.base;
    const name = this.f.node('Pad', [base.name, this.i64(this.f, 'pads', [0, 0, p.top, p.left, 0, 0, p.bottom, p.right])], 'pad');
    const out: Val = { name, dims: v.dims, requiresGrad: base.requiresGrad };
    this.tape.push(() => {
      const g = this.gradOf(out);
      if (!g) return;
      const [, , hh, ww] = v.dims as [number, number, number, number];
      const sl = this.b.node('Slice', [g, this.i64(this.b, 'st', [p.top, p.left]), this.i64(this.b, 'en', [hh - p.bottom, ww - p.right]), this.i64(this.b, 'ax', [2, 3])], 'unpad');
      this.addGrad(base, sl);
    });
    v.pads = undefined;
    v.name = name;
    return out;
  }

  private fail(layer: tf.layers.Layer, why: string): never {
    throw new UnsupportedLayerError(`layer "${layer.name}" (${layer.getClassName()}): ${why}`);
  }

  // ---- layers -----------------------------------------------------------------------------------

  private layer(layer: tf.layers.Layer, ins: Val[]): Val {
    const cls = layer.getClassName();
    const cfg = layer.getConfig();
    const one = (): Val => {
      if (ins.length !== 1) this.fail(layer, `expected one input, got ${ins.length}`);
      return ins[0]!;
    };
    switch (cls) {
      case 'Dropout':
        if (Number(cfg.rate) > 0) this.fail(layer, 'dropout with rate > 0');
        return one();
      case 'ZeroPadding2D': {
        const x = one();
        const [[top, bottom], [left, right]] = cfg.padding as [[number, number], [number, number]];
        const base = x.pads ? x.pads.base : x;
        const p = x.pads ?? { top: 0, bottom: 0, left: 0, right: 0 };
        const [n, c, hh, ww] = base.dims as [number, number, number, number];
        const pads = { top: p.top + top!, bottom: p.bottom + bottom!, left: p.left + left!, right: p.right + right!, base };
        return { name: `${base.name}+pad`, dims: [n, c, hh + pads.top + pads.bottom, ww + pads.left + pads.right], requiresGrad: base.requiresGrad, pads };
      }
      case 'Conv2D':
      case 'DepthwiseConv2D':
      case 'GroupedConv2D':
        return this.conv(layer, one());
      case 'BatchNormalization':
        return this.batchNorm(layer, this.plain(one()));
      case 'PReLU':
        return this.prelu(layer, this.plain(one()));
      case 'ReLU':
      case 'Activation': {
        const act = cls === 'ReLU' ? 'relu' : (cfg.activation as string);
        if (cls === 'ReLU' && cfg.maxValue != null) this.fail(layer, 'ReLU with maxValue');
        if (act === 'linear') return one();
        if (act !== 'relu') this.fail(layer, `activation "${act}"`);
        return this.relu(this.plain(one()));
      }
      case 'Add':
        return this.add(ins.map((v) => this.plain(v)));
      case 'Flatten':
        return this.flatten(this.plain(one()));
      case 'Dense':
        return this.dense(layer, this.plain(one()));
      default:
        this.fail(layer, 'no compiled training support');
    }
  }

  private conv(layer: tf.layers.Layer, xIn: Val): Val {
    const cls = layer.getClassName();
    const cfg = layer.getConfig();
    if (cfg.dataFormat === 'channelsFirst') this.fail(layer, 'channelsFirst');
    const act = (cfg.activation as string | undefined) ?? 'linear';
    if (act !== 'linear') this.fail(layer, `fused activation "${act}"`);
    const dil = (cfg.dilationRate as number | number[] | undefined) ?? 1;
    if ((Array.isArray(dil) ? dil : [dil]).some((d) => d !== 1)) this.fail(layer, 'dilation');
    const ks = cfg.kernelSize as number | number[];
    const [kh, kw] = Array.isArray(ks) ? [ks[0]!, ks[1] ?? ks[0]!] : [ks, ks];
    const st = (cfg.strides as number | number[] | undefined) ?? 1;
    const [sh, sw] = Array.isArray(st) ? [st[0]!, st[1] ?? st[0]!] : [st, st];
    const base = xIn.pads ? xIn.pads.base : xIn;
    const pre: Pads = xIn.pads ?? { top: 0, bottom: 0, left: 0, right: 0 };
    const [n, c, h0, w0] = base.dims as [number, number, number, number];
    // Padding on the (virtually) padded input, then moved onto the base tensor.
    const [hp, wp] = [xIn.dims[2]!, xIn.dims[3]!];
    let extra: Pads = { top: 0, bottom: 0, left: 0, right: 0 };
    if (cfg.padding === 'same') {
      const [t, b] = samePads(hp, kh, sh, 1);
      const [l, r] = samePads(wp, kw, sw, 1);
      extra = { top: t, bottom: b, left: l, right: r };
    } else if (cfg.padding !== 'valid') this.fail(layer, `padding "${String(cfg.padding)}"`);
    const pads: Pads = { top: pre.top + extra.top, bottom: pre.bottom + extra.bottom, left: pre.left + extra.left, right: pre.right + extra.right };
    const oh = Math.floor((h0 + pads.top + pads.bottom - kh) / sh) + 1;
    const ow = Math.floor((w0 + pads.left + pads.right - kw) / sw) + 1;

    const kernel = layer.weights.find((wt) => /(kernel|depthwise_kernel)$/.test(wt.originalName));
    if (!kernel) this.fail(layer, 'no kernel');
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
    const kName = this.param(kernel, kernel.trainable);
    const bName = bias ? this.param(bias, bias.trainable) : null;

    // tfjs kernel -> ONNX [o, c/g, kh, kw]. Dense and grouped: [kh,kw,cg,o]; depthwise: [kh,kw,c,m].
    // Written as 2-D and single-axis transposes, which ORT runs several times faster than one 4-D permutation.
    const kk = kh * kw;
    const ln = layer.name;
    const toOnnx = (g: GraphBuilder, k: string): string => {
      const t = g.node('Transpose', [this.reshape(g, k, [kk * cg, o], `${ln}.k2`)], `${ln}.kT`, { perm: [1, 0] }); // [o, kk*cg]
      if (cg === 1) return this.reshape(g, t, [o, 1, kh, kw], `${ln}.w_oihw`);
      const t2 = g.node('Transpose', [this.reshape(g, t, [o, kk, cg], `${ln}.k3`)], `${ln}.kT2`, { perm: [0, 2, 1] });
      return this.reshape(g, t2, [o, cg, kh, kw], `${ln}.w_oihw`);
    };
    // ONNX [o, cg, kh, kw] -> tfjs layout (the inverse of toOnnx).
    const fromOnnx = (g: GraphBuilder, w: string): string => {
      let t = this.reshape(g, w, [o, cg, kk], `${ln}.d3`);
      if (cg > 1) t = g.node('Transpose', [t], `${ln}.dT2`, { perm: [0, 2, 1] });
      const t2 = g.node('Transpose', [this.reshape(g, t, [o, kk * cg], `${ln}.d2`)], `${ln}.dT`, { perm: [1, 0] });
      return this.reshape(g, t2, kernel.shape as number[], `${ln}.dk`);
    };
    // The input gradient of a stride-1 conv as a plain Conv of dy (ORT's Conv is ~25% faster than its
    // ConvTranspose): filter flipped in space, in/out channels swapped within each group, pads k-1-p.
    const flippedForDx = (g: GraphBuilder, k: string): string => {
      const flip = g.node('Slice', [k, this.i64(g, 'st', [-1, -1]), this.i64(g, 'en', [-(kh + 1), -(kw + 1)]), this.i64(g, 'ax', [0, 1]), this.i64(g, 'sp', [-1, -1])], `${ln}.kflip`);
      if (groups === 1) {
        const t = g.node('Transpose', [this.reshape(g, flip, [kk, c, o], `${ln}.f3`)], `${ln}.fT`, { perm: [1, 2, 0] }); // [c, o, kk]
        return this.reshape(g, t, [c, o, kh, kw], `${ln}.w_dx`);
      }
      const t = g.node('Transpose', [this.reshape(g, flip, [kk, cg, groups, og], `${ln}.f4`)], `${ln}.fT`, { perm: [2, 1, 3, 0] }); // [g, cg, og, kk]
      return this.reshape(g, t, [c, og, kh, kw], `${ln}.w_dx`);
    };
    const onnxPads = [pads.top, pads.left, pads.bottom, pads.right];
    const convAttrs = { kernel_shape: [kh, kw], strides: [sh, sw], pads: onnxPads, group: groups };
    const inputs = [base.name, toOnnx(this.f, kName)];
    if (bName) inputs.push(bName);
    const y = this.f.node('Conv', inputs, layer.name, convAttrs);
    const out: Val = { name: y, dims: [n, o, oh, ow], requiresGrad: true };

    this.tape.push(() => {
      const dy = this.gradOf(out);
      if (!dy) return;
      const b = this.b;
      const flipPads = [kh - 1 - pads.top, kw - 1 - pads.left, kh - 1 - pads.bottom, kw - 1 - pads.right];
      if (base.requiresGrad && sh === 1 && sw === 1 && flipPads.every((p) => p >= 0)) {
        const dx = b.node('Conv', [dy, flippedForDx(b, this.paramB(kernel))], `${ln}.dx`, { kernel_shape: [kh, kw], pads: flipPads, group: groups });
        this.addGrad(base, dx);
      } else if (base.requiresGrad) {
        const endH = sh * (oh - 1) + kh - pads.top - h0;
        const endW = sw * (ow - 1) + kw - pads.left - w0;
        const dx = b.node('ConvTranspose', [dy, toOnnx(b, this.paramB(kernel))], `${layer.name}.dx`, {
          kernel_shape: [kh, kw],
          strides: [sh, sw],
          pads: [pads.top, pads.left, Math.max(endH, 0), Math.max(endW, 0)],
          output_padding: [Math.max(-endH, 0), Math.max(-endW, 0)],
          group: groups,
        });
        this.addGrad(base, dx);
      }
      const x = this.save(base);
      let dwOnnx: string; // [o, cg, kh, kw]
      if (groups === 1 && kh === 1 && kw === 1 && pads.top + pads.left + pads.bottom + pads.right === 0) {
        dwOnnx = this.pointwiseFilterGrad(layer.name, x, dy, { n, c, o, oh, ow, sh, sw });
      } else if (groups === 1 && n * o * c * kk > c * kk * n * oh * ow + c * n * h0 * w0 + o * n * oh * ow) {
        dwOnnx = this.gemmFilterGrad(ln, x, dy, { n, c, h0, w0, o, oh, ow, kh, kw, sh, sw, pads });
      } else {
        dwOnnx = this.unfoldFilterGrad(layer.name, x, dy, { n, c, o, oh, ow, kh, kw, sh, sw, pads, groups, cg, og });
      }
      if (kernel.trainable) this.emitParamGrad(kernel, fromOnnx(b, dwOnnx));
      if (bias?.trainable) this.emitParamGrad(bias, b.node('ReduceSum', [dy, this.i64(b, 'axes', [0, 2, 3])], `${layer.name}.db`, { keepdims: 0 }));
    });
    return out;
  }

  /** 1x1, no padding: dW[o, c] = dy[o, (n,i,j)] . x[(n,i,j), c] on the strided x. */
  private pointwiseFilterGrad(name: string, x: string, dy: string, s: { n: number; c: number; o: number; oh: number; ow: number; sh: number; sw: number }): string {
    const b = this.b;
    let xs = x;
    if (s.sh > 1 || s.sw > 1) {
      const ends = [(s.oh - 1) * s.sh + 1, (s.ow - 1) * s.sw + 1];
      xs = b.node('Slice', [x, this.i64(b, 'st', [0, 0]), this.i64(b, 'en', ends), this.i64(b, 'ax', [2, 3]), this.i64(b, 'sp', [s.sh, s.sw])], `${name}.xs`);
    }
    const p = s.oh * s.ow;
    // Per image: dy[n] [o, p] . x[n]^T [p, c], summed over n as one batched MatMul + ReduceSum.
    const x3 = this.reshape(b, xs, [s.n, s.c, p], `${name}.x3`);
    const dy3 = this.reshape(b, dy, [s.n, s.o, p], `${name}.dy3`);
    const xT = b.node('Transpose', [x3], `${name}.xT`, { perm: [0, 2, 1] });
    const mm = b.node('MatMul', [dy3, xT], `${name}.dwn`);
    const dw = b.node('ReduceSum', [mm, this.i64(b, 'axes', [0])], `${name}.dw2`, { keepdims: 0 });
    return this.reshape(b, dw, [s.o, s.c, 1, 1], `${name}.dw`);
  }

  /**
   * k x k (any groups): the im2col matrix comes from ONE Conv of x with constant one-hot filters
   * (group c, kh*kw outputs per channel: a multithreaded unfold; Slice/Concat copies run on one
   * thread), then per image and group dy [og, p] . col^T [p, cg*kh*kw] as a batched MatMul that ORT
   * fuses with the transpose, summed over the batch. Output channel order c*kh*kw + tap is already
   * ONNX's [o, cg, kh, kw] weight order.
   */
  private unfoldFilterGrad(
    name: string,
    x: string,
    dy: string,
    s: { n: number; c: number; o: number; oh: number; ow: number; kh: number; kw: number; sh: number; sw: number; pads: Pads; groups: number; cg: number; og: number },
  ): string {
    const b = this.b;
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
        m === s.n ? t : b.node('Slice', [t, this.i64(b, 'st', [i]), this.i64(b, 'en', [i + m]), this.i64(b, 'ax', [0])], `${name}.${what}${i}`);
      const col = b.node('Conv', [cut(x, 'x'), w], `${name}.unfold`, {
        kernel_shape: [s.kh, s.kw],
        strides: [s.sh, s.sw],
        pads: [s.pads.top, s.pads.left, s.pads.bottom, s.pads.right],
        group: s.c,
      }); // [m, c*kk, oh, ow]
      const col4 = this.reshape(b, col, [m, g, s.cg * kk, p], `${name}.col4`);
      const dy4 = this.reshape(b, cut(dy, 'dy'), [m, g, s.og, p], `${name}.dy4`);
      const colT = b.node('Transpose', [col4], `${name}.colT`, { perm: [0, 1, 3, 2] });
      const mm = b.node('MatMul', [dy4, colT], `${name}.mm`); // [m, g, og, cg*kk]
      parts.push(b.node('ReduceSum', [mm, this.i64(b, 'axes', [0])], `${name}.sum`, { keepdims: 0 }));
    }
    const sum = parts.length === 1 ? parts[0]! : b.node('Sum', parts, `${name}.sumall`);
    return this.reshape(b, sum, [s.o, s.cg, s.kh, s.kw], `${name}.dw`);
  }

  /**
   * Dense k x k where the per-image partial products would outweigh the activations (late stages,
   * o > oh*ow): one GEMM over the whole batch, dy [o, (n,p)] . col [(c,tap), (n,p)]^T, the columns
   * unfolded from x as [c*n, 1, h, w] images and transposed once.
   */
  private gemmFilterGrad(
    name: string,
    x: string,
    dy: string,
    s: { n: number; c: number; h0: number; w0: number; o: number; oh: number; ow: number; kh: number; kw: number; sh: number; sw: number; pads: Pads },
  ): string {
    const b = this.b;
    const kk = s.kh * s.kw;
    const p = s.oh * s.ow;
    const onehot = new Float32Array(kk * kk);
    for (let t = 0; t < kk; t++) onehot[t * kk + t] = 1;
    const w = b.floatInit(`${name}.unfold_w`, [kk, 1, s.kh, s.kw], onehot);
    const xt = this.reshape(b, b.node('Transpose', [x], `${name}.x_cn`, { perm: [1, 0, 2, 3] }), [s.c * s.n, 1, s.h0, s.w0], `${name}.x_planes`);
    const col = b.node('Conv', [xt, w], `${name}.unfold`, {
      kernel_shape: [s.kh, s.kw],
      strides: [s.sh, s.sw],
      pads: [s.pads.top, s.pads.left, s.pads.bottom, s.pads.right],
    }); // [c*n, kk, oh, ow]
    const colT = b.node('Transpose', [this.reshape(b, col, [s.c, s.n, kk, p], `${name}.col4`)], `${name}.colT`, { perm: [0, 2, 1, 3] });
    const col2 = this.reshape(b, colT, [s.c * kk, s.n * p], `${name}.col2`);
    const dy2 = this.reshape(b, b.node('Transpose', [dy], `${name}.dyT`, { perm: [1, 0, 2, 3] }), [s.o, s.n * p], `${name}.dy2`);
    const dw = b.node('Gemm', [dy2, col2], `${name}.gemm`, { transB: 1 }); // [o, (c, tap)]
    return this.reshape(b, dw, [s.o, s.c, s.kh, s.kw], `${name}.dw`);
  }

  private batchNorm(layer: tf.layers.Layer, x: Val): Val {
    const cfg = layer.getConfig();
    const rank = x.dims.length;
    const axis = Number(cfg.axis);
    if (axis !== -1 && axis !== rank - 1 && !(rank === 4 && axis === 3)) this.fail(layer, `axis ${axis}`);
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
    const f = this.f;
    const ln = layer.name;
    if (gammaV) this.param(gammaV, gammaV.trainable);
    if (betaV) this.param(betaV, betaV.trainable);
    const frozen = this.opts.freezeBatchNorm ?? false;
    const epsInit = (g: GraphBuilder) => g.floatInit('eps', [1], Float32Array.of(eps));
    let mean: string; // [1, c, 1, 1] (frozen: [c, 1, 1])
    let rstd: string;
    let meanFlat: string; // [c], BatchNormalization's inputs
    let varFlat: string;
    if (frozen) {
      meanFlat = this.param(meanV, false);
      varFlat = this.param(varV, false);
      mean = this.reshape(f, meanFlat, bshape, `${ln}.rm`);
      const v = this.reshape(f, varFlat, bshape, `${ln}.rv`);
      rstd = f.node('Reciprocal', [f.node('Sqrt', [f.node('Add', [v, epsInit(f)], `${ln}.ve`)], `${ln}.sd`)], `${ln}.rstd`);
    } else {
      // Two-pass variance (the centred sum of squares), as torch: no cancellation for large means.
      const ax = this.i64(f, 'axes', axes);
      mean = f.node('ReduceMean', [x.name, ax], `${ln}.mean`, { keepdims: 1 });
      const d = f.node('Sub', [x.name, mean], `${ln}.d`);
      const v = f.node('Mul', [f.node('ReduceSumSquare', [d, ax], `${ln}.ss`, { keepdims: 1 }), f.floatInit('inv_n', [1], Float32Array.of(1 / count))], `${ln}.var`);
      rstd = f.node('Reciprocal', [f.node('Sqrt', [f.node('Add', [v, epsInit(f)], `${ln}.ve`)], `${ln}.sd`)], `${ln}.rstd`);
      const bn: GraphBatchNorm = { layer, mean: `${ln}:mean`, variance: `${ln}:var`, channels: ch, count };
      f.reserve(bn.mean);
      f.reserve(bn.variance);
      this.reshapeTo(f, mean, [ch], bn.mean);
      this.reshapeTo(f, v, [ch], bn.variance);
      this.batchNorms.push(bn);
      meanFlat = bn.mean;
      varFlat = bn.variance;
    }
    // y = gamma (x - mean) / sqrt(var + eps) + beta in one pass: ORT's (inference) BatchNormalization.
    const ones = (g: GraphBuilder) => g.floatInit('ones', [ch], new Float32Array(ch).fill(1));
    const zeros = (g: GraphBuilder) => g.floatInit('zeros', [ch], new Float32Array(ch));
    const y = f.node(
      'BatchNormalization',
      [x.name, gammaV ? this.paramNames.get(gammaV)! : ones(f), betaV ? this.paramNames.get(betaV)! : zeros(f), meanFlat, varFlat],
      ln,
      { epsilon: { float: eps } },
    );
    const statDims = frozen ? bshape : rank === 4 ? [1, ch, 1, 1] : [1, ch];
    // x - mean inside the backward, shared by the recomputed output and the gradient.
    let centredName: string | undefined;
    const centredB = (): string => {
      if (centredName) return centredName;
      const b = this.b;
      const meanB = frozen ? this.reshape(b, this.paramB(meanV), bshape, `${ln}.rmB`) : this.toB(mean, statDims);
      return (centredName = b.node('Sub', [this.save(x), meanB], `${ln}.xcB`));
    };
    const out: Val = {
      name: y,
      dims: x.dims,
      requiresGrad: true,
      rematKind: 'bn',
      remat: () => {
        const b = this.b;
        const stat = (name: string, v: tf.LayerVariable) => (frozen ? this.paramB(v) : this.toB(name, [ch]));
        return b.node(
          'BatchNormalization',
          [this.save(x), gammaV ? this.paramB(gammaV) : ones(b), betaV ? this.paramB(betaV) : zeros(b), stat(meanFlat, meanV), stat(varFlat, varV)],
          `${ln}.yR`,
          { epsilon: { float: eps } },
        );
      },
    };

    this.tape.push(() => {
      const dy = this.gradOf(out);
      if (!dy) return;
      const b = this.b;
      const ax = this.i64(b, 'axes', axes);
      // Statistics: saved (small) when computed from the batch; from the params when frozen.
      const rstdB = this.toB(rstd, statDims);
      const xc = centredB();
      const dbeta = b.node('ReduceSum', [dy, ax], `${ln}.dbeta`, { keepdims: 1 });
      // dgamma = sum(dy xhat) = rstd sum(dy (x - mean))
      const dgamma = b.node('Mul', [b.node('ReduceSum', [b.node('Mul', [dy, xc], `${ln}.dyx`), ax], `${ln}.sdyx`, { keepdims: 1 }), rstdB], `${ln}.dgamma`);
      if (gammaV?.trainable) this.emitParamGrad(gammaV, this.reshape(b, dgamma, [ch], `${ln}.dg`));
      if (betaV?.trainable) this.emitParamGrad(betaV, this.reshape(b, dbeta, [ch], `${ln}.db`));
      if (!x.requiresGrad) return;
      const gammaB = gammaV ? this.reshape(b, this.paramB(gammaV), bshape, `${ln}.gB`) : null;
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
        const flat = (t: string, name: string) => this.reshape(b, t, [ch], name);
        const affine = b.node(
          'BatchNormalization',
          [dy, flat(gr, `${ln}.grF`), flat(cCoef, `${ln}.CF`), zeros(b), b.floatInit('one_minus_eps', [ch], new Float32Array(ch).fill(1 - AFFINE_EPS))],
          `${ln}.dyg`,
          { epsilon: { float: AFFINE_EPS } },
        );
        dx = b.node('Add', [affine, b.node('Mul', [xc, bCoef], `${ln}.xcb`)], `${ln}.dx`);
      }
      this.addGrad(x, dx);
    });
    return out;
  }

  private reshapeTo(g: GraphBuilder, x: string, dims: number[], out: string): void {
    g.node('Reshape', [x, this.i64(g, 'shape', dims)], out, {}, out);
  }

  private prelu(layer: tf.layers.Layer, x: Val): Val {
    const alphaV = layer.weights[0]!;
    const ch = x.dims[1]!;
    if (prod(alphaV.shape as number[]) !== ch) this.fail(layer, 'PReLU slope must be one per channel');
    const rank = x.dims.length;
    const bshape = rank === 4 ? [ch, 1, 1] : [ch];
    const ln = layer.name;
    const a = this.reshape(this.f, this.param(alphaV, alphaV.trainable), bshape, `${ln}.a`);
    const y = this.f.node('PRelu', [x.name, a], ln);
    const out: Val = {
      name: y,
      dims: x.dims,
      requiresGrad: true,
      rematKind: 'prelu',
      remat: () => this.b.node('PRelu', [this.save(x), this.reshape(this.b, this.paramB(alphaV), bshape, `${ln}.aR`)], `${ln}.yR`),
    };
    this.tape.push(() => {
      const dy = this.gradOf(out);
      if (!dy) return;
      const b = this.b;
      const xs = this.save(x);
      const zero = b.floatInit('zero', [1], Float32Array.of(0));
      if (alphaV.trainable) {
        const neg = b.node('Min', [xs, zero], `${ln}.neg`);
        const da = b.node('ReduceSum', [b.node('Mul', [dy, neg], `${ln}.dyn`), this.i64(b, 'axes', rank === 4 ? [0, 2, 3] : [0])], `${ln}.da`, { keepdims: 0 });
        this.emitParamGrad(alphaV, this.reshape(b, da, alphaV.shape as number[], `${ln}.da_t`));
      }
      if (!x.requiresGrad) return;
      const aB = this.reshape(b, this.paramB(alphaV), bshape, `${ln}.aB`);
      const dx = b.node('Where', [b.node('Greater', [xs, zero], `${ln}.pos`), dy, b.node('Mul', [dy, aB], `${ln}.dya`)], `${ln}.dx`);
      this.addGrad(x, dx);
    });
    return out;
  }

  private relu(x: Val): Val {
    const y = this.f.node('Relu', [x.name], 'relu');
    const out: Val = { name: y, dims: x.dims, requiresGrad: x.requiresGrad };
    this.tape.push(() => {
      const dy = this.gradOf(out);
      if (!dy || !x.requiresGrad) return;
      const b = this.b;
      const ys = this.save(out);
      const zero = b.floatInit('zero', [1], Float32Array.of(0));
      this.addGrad(x, b.node('Where', [b.node('Greater', [ys, zero], 'pos'), dy, zero], 'drelu'));
    });
    return out;
  }

  private add(xs: Val[]): Val {
    let y = xs[0]!.name;
    for (let i = 1; i < xs.length; i++) y = this.f.node('Add', [y, xs[i]!.name], 'add');
    const out: Val = { name: y, dims: xs[0]!.dims, requiresGrad: xs.some((v) => v.requiresGrad) };
    this.tape.push(() => {
      const dy = this.gradOf(out);
      if (!dy) return;
      for (const v of xs) this.addGrad(v, dy);
    });
    return out;
  }

  private toNhwc(x: Val): Val {
    const [n, c, h, w] = x.dims as [number, number, number, number];
    const y = this.f.node('Transpose', [x.name], 'out_nhwc', { perm: [0, 2, 3, 1] });
    const out: Val = { name: y, dims: [n, h, w, c], requiresGrad: x.requiresGrad };
    this.tape.push(() => {
      const dy = this.gradOf(out);
      if (dy && x.requiresGrad) this.addGrad(x, this.b.node('Transpose', [dy], 'dout_nchw', { perm: [0, 3, 1, 2] }));
    });
    return out;
  }

  private flatten(x: Val): Val {
    if (x.dims.length === 2) return x;
    const [n, c, h, w] = x.dims as [number, number, number, number];
    // tfjs flattens NHWC: transpose back first.
    const t = this.f.node('Transpose', [x.name], 'flat_nhwc', { perm: [0, 2, 3, 1] });
    const y = this.reshape(this.f, t, [n, h * w * c], 'flat');
    const out: Val = { name: y, dims: [n, h * w * c], requiresGrad: x.requiresGrad };
    this.tape.push(() => {
      const dy = this.gradOf(out);
      if (!dy || !x.requiresGrad) return;
      const r = this.reshape(this.b, dy, [n, h, w, c], 'dflat');
      this.addGrad(x, this.b.node('Transpose', [r], 'dflat_nchw', { perm: [0, 3, 1, 2] }));
    });
    return out;
  }

  private dense(layer: tf.layers.Layer, x: Val): Val {
    const cfg = layer.getConfig();
    if (((cfg.activation as string | undefined) ?? 'linear') !== 'linear') this.fail(layer, `activation "${String(cfg.activation)}"`);
    if (x.dims.length !== 2) this.fail(layer, 'rank-2 input expected');
    const kernel = layer.weights.find((wt) => /kernel$/.test(wt.originalName))!;
    const bias = layer.weights.find((wt) => /bias$/.test(wt.originalName));
    const k = this.param(kernel, kernel.trainable);
    const ln = layer.name;
    let y = this.f.node('MatMul', [x.name, k], `${ln}.mm`);
    if (bias) y = this.f.node('Add', [y, this.param(bias, bias.trainable)], ln);
    const out: Val = { name: y, dims: [x.dims[0]!, kernel.shape[1]!], requiresGrad: true };
    this.tape.push(() => {
      const dy = this.gradOf(out);
      if (!dy) return;
      const b = this.b;
      const xs = this.save(x);
      if (kernel.trainable) this.emitParamGrad(kernel, b.node('Gemm', [xs, dy], `${ln}.dk`, { transA: 1 }));
      if (bias?.trainable) this.emitParamGrad(bias, b.node('ReduceSum', [dy, this.i64(b, 'axes', [0])], `${ln}.db`, { keepdims: 0 }));
      if (x.requiresGrad) this.addGrad(x, b.node('Gemm', [dy, this.paramB(kernel)], `${ln}.dx`, { transB: 1 }));
    });
    return out;
  }
}
