// A backbone's whole training step as two ONNX graphs, for onnxruntime to run in C++ on all cores:
//   forward:  image (NHWC) + weights -> embedding, each BatchNorm's batch mean/variance, and the
//             activations the backward needs ("saved");
//   backward: d(embedding) + saved + weights -> the gradient of every trainable weight.
// tfjs then sees one op per step (src/ort/train.ts) instead of ~300 kernels whose element-wise
// parts run in JS (cpu) or on a 4 GB heap (wasm). Inside, everything is NCHW (ORT's Conv layout):
// one Transpose of the image in, one before the NHWC-ordered Flatten. The semantics are trainForward's
// (src/train/forward.ts): PyTorch BatchNorm (batch statistics, biased variance to normalise), or the
// running statistics when BN is frozen for fine-tuning.
//
// This file is the tape: each layer family (layers/*.ts) emits its forward nodes and records a backward
// emitter; the emitters run in reverse once the forward is complete, with no ONNX training operators.
// A forward value the backward reads is either saved (a forward output that is a backward input) or,
// for BN and PReLU outputs, recomputed inside the backward (`recompute`: the memory-lean mode).
import type * as tf from '@tensorflow/tfjs';
import { GraphBuilder, type ValueInfo } from './builder.ts';
import { prod, type GraphBatchNorm, type TrainContext, type TrainOptions, type TrainValue } from './context.ts';
import { familyOf } from './layers/index.ts';
import { walkNodes } from './walk.ts';
import { emitMarginHead, type MarginHeadSpec } from './head.ts';

export type { GraphBatchNorm, TrainOptions as CompileOptions } from './context.ts';

const OPSET = 18;

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

/**
 * A whole training step as ONE graph: backbone forward, the margin head, and the backward, so the
 * activations never leave onnxruntime (its planner frees each at its last use, as autograd does).
 * Inputs: the image, the weights, `head.weight` [classes, d] and `head.onehot` [batch, classes];
 * outputs: `loss` [1], each BN's batch statistics, `grad:<weight>` and `grad:head.weight`.
 */
export interface TrainingStepGraph {
  model: Uint8Array;
  params: GraphParam[];
  input: GraphValue;
  batchNorms: GraphBatchNorm[];
  head: { weight: string; onehot: string; loss: string; weightGrad: string };
  /** The `grad:<weight>` outputs, in `params` order of the trainable ones. */
  grads: GraphValue[];
}

/** Builds the forward and backward graphs of `model` at batch `opts.batch`; throws UnsupportedLayerError. */
export function compileTrainingGraphs(model: tf.LayersModel, opts: TrainOptions): TrainingGraphs {
  return new Compiler(model, opts, null).compile() as TrainingGraphs;
}

/** The one-graph step of `model` with the margin head `head`; throws UnsupportedLayerError. */
export function compileTrainingStep(model: tf.LayersModel, opts: TrainOptions, head: Omit<MarginHeadSpec, 'batch' | 'embeddingSize'>): TrainingStepGraph {
  return new Compiler(model, opts, head).compile() as TrainingStepGraph;
}

class Compiler implements TrainContext {
  readonly f = new GraphBuilder(OPSET);
  /** The backward graph: the forward's own builder in a one-graph step. */
  readonly b: GraphBuilder;
  private readonly values = new Map<number, TrainValue>();
  private readonly params: GraphParam[] = [];
  private readonly paramNames = new Map<tf.LayerVariable, string>();
  private readonly paramSet = new Set<string>();
  /** Backward-graph name of each param / saved value once imported. */
  private readonly inB = new Map<string, string>();
  private readonly saved: GraphValue[] = [];
  private readonly batchNorms: GraphBatchNorm[] = [];
  /** Backward emitters in forward order; run in reverse. */
  private readonly emitters: (() => void)[] = [];
  /** Gradient contributions per forward value name (backward names). */
  private readonly grads = new Map<string, string[]>();
  private readonly gradOutputs: GraphValue[] = [];
  private readonly rematerialised = new Map<string, string>();

  constructor(
    private readonly model: tf.LayersModel,
    readonly opts: TrainOptions,
    private readonly head: Omit<MarginHeadSpec, 'batch' | 'embeddingSize'> | null,
  ) {
    this.b = head ? this.f : new GraphBuilder(OPSET);
  }

  compile(): TrainingGraphs | TrainingStepGraph {
    const m = this.model;
    if (m.inputs.length !== 1 || m.outputs.length !== 1) throw new UnsupportedLayerError('one input and one output expected');
    const inShape = m.inputs[0]!.shape as number[];
    const n = this.opts.batch;
    const [h, w, c] = inShape.slice(1) as [number, number, number];
    const input: GraphValue = { name: 'image', dims: [n, h, w, c], size: n * h * w * c };
    this.f.reserve(input.name);
    const x = this.f.node('Transpose', [input.name], 'image_nchw', { perm: [0, 3, 1, 2] });
    this.values.set(m.inputs[0]!.id, { name: x, dims: [n, c, h, w], requiresGrad: false });

    walkNodes(m, this.values, (layer, node) => {
      const family = familyOf(layer.getClassName());
      if (!family?.train) this.fail(layer, 'no compiled training support');
      const ins = node.inputTensors.map((s) => this.values.get(s.id)!);
      this.values.set(node.outputTensors[0]!.id, family.train(this, layer, ins));
    });
    const last = this.values.get(m.outputs[0]!.id);
    if (!last) throw new UnsupportedLayerError('the output is not reachable from the input');
    let outVal = this.plain(last);
    // A feature-map output goes back to tfjs's NHWC (backbones end in an embedding; other models may not).
    if (outVal.dims.length === 4) outVal = this.toNhwc(outVal);
    const output: GraphValue = { name: 'embedding', dims: outVal.dims, size: prod(outVal.dims) };
    this.f.reserve(output.name);
    this.f.rename(outVal.name, output.name);
    outVal.name = output.name;

    if (this.head) return this.compileStep(input, output);
    // Backward: the output's gradient is an input, then every recorded emitter in reverse.
    const dy = this.b.reserve(`grad:${output.name}`);
    this.grads.set(output.name, [dy]);
    for (let i = this.emitters.length - 1; i >= 0; i--) this.emitters[i]!();
    // A backward that reads the output itself would make it both the graph output and a saved value.
    if (this.saved.some((s) => s.name === output.name)) throw new UnsupportedLayerError('the output is needed by the backward');

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

  private compileStep(input: GraphValue, output: GraphValue): TrainingStepGraph {
    if (output.dims.length !== 2) throw new UnsupportedLayerError(`the head needs an embedding [batch, d], the model gives [${output.dims.join(', ')}]`);
    const g = this.f;
    const h = emitMarginHead(g, output.name, { ...this.head!, batch: output.dims[0]!, embeddingSize: output.dims[1]! });
    this.grads.set(output.name, [h.dEmbedding]);
    for (let i = this.emitters.length - 1; i >= 0; i--) this.emitters[i]!();
    const loss = g.reserve('loss');
    g.rename(h.loss, loss);
    const weightGrad = g.reserve('grad:head.weight');
    g.rename(h.dWeight, weightGrad);
    const classes = this.head!.classes;
    const d = output.dims[1]!;
    const outputs: ValueInfo[] = [{ name: loss, dims: [1] }];
    for (const bn of this.batchNorms) outputs.push({ name: bn.mean, dims: [bn.channels] }, { name: bn.variance, dims: [bn.channels] });
    outputs.push(...this.gradOutputs, { name: weightGrad, dims: [classes, d] });
    const paramInputs = this.params.map((p) => ({ name: p.name, dims: p.variable.shape as number[] }));
    const model = g.encode({
      graphName: 'train_step',
      inputs: [input, ...paramInputs, { name: h.weight, dims: [classes, d] }, { name: h.onehot, dims: [output.dims[0]!, classes] }],
      outputs,
      metadata: {},
      producerVersion: '0',
    });
    return { model, params: this.params, input, batchNorms: this.batchNorms, head: { weight: h.weight, onehot: h.onehot, loss, weightGrad }, grads: this.gradOutputs };
  }

  private bUses(name: string): boolean {
    return this.b.nodes.some((nd) => nd.input!.includes(name));
  }

  // ---- TrainContext -------------------------------------------------------------------------------

  param(v: tf.LayerVariable, trainable: boolean): string {
    let name = this.paramNames.get(v);
    if (!name) {
      name = this.f.reserve(v.originalName);
      this.paramNames.set(v, name);
      this.paramSet.add(name);
      this.params.push({ name, variable: v, trainable });
    }
    return name;
  }

  paramName(v: tf.LayerVariable): string {
    return this.paramNames.get(v)!;
  }

  toB(fwdName: string, dims: number[]): string {
    // One graph: the backward reads forward values directly.
    if (this.b === this.f) return fwdName;
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

  save(v: TrainValue): string {
    const mode = this.opts.recompute ?? 'bn';
    if (!v.remat || mode === 'none' || (mode === 'bn' && v.rematKind !== 'bn')) return this.toB(v.name, v.dims);
    let name = this.rematerialised.get(v.name);
    if (!name) {
      name = v.remat();
      this.rematerialised.set(v.name, name);
    }
    return name;
  }

  paramB(v: tf.LayerVariable): string {
    return this.toB(this.paramNames.get(v)!, v.shape as number[]);
  }

  tape(emit: () => void): void {
    this.emitters.push(emit);
  }

  addGrad(v: TrainValue, g: string): void {
    if (!v.requiresGrad) return;
    const list = this.grads.get(v.name) ?? [];
    list.push(g);
    this.grads.set(v.name, list);
  }

  gradOf(v: TrainValue): string | null {
    const list = this.grads.get(v.name);
    if (!list?.length) return null;
    if (list.length === 1) return list[0]!;
    return this.b.node('Sum', list, `${v.name}.gsum`);
  }

  emitParamGrad(v: tf.LayerVariable, g: string): void {
    const name = `grad:${this.paramNames.get(v)!}`;
    this.b.reserve(name);
    this.b.rename(g, name);
    // A gradient that is directly a graph input needs an Identity to be an output.
    if (!this.b.nodes.some((nd) => nd.output!.includes(name))) this.b.node('Identity', [g], 'gid', {}, name);
    this.gradOutputs.push({ name, dims: v.shape as number[], size: prod(v.shape as number[]) });
  }

  addBatchNorm(bn: GraphBatchNorm): void {
    this.batchNorms.push(bn);
  }

  i64(g: GraphBuilder, base: string, data: number[]): string {
    return g.int64Init(base, data);
  }

  reshape(g: GraphBuilder, x: string, dims: number[], name: string): string {
    return g.node('Reshape', [x, this.i64(g, `${name}.shape`, dims)], name);
  }

  plain(v: TrainValue): TrainValue {
    if (!v.pads) return v;
    const p = v.pads;
    const base = p.base;
    const name = this.f.node('Pad', [base.name, this.i64(this.f, 'pads', [0, 0, p.top, p.left, 0, 0, p.bottom, p.right])], 'pad');
    const out: TrainValue = { name, dims: v.dims, requiresGrad: base.requiresGrad };
    this.tape(() => {
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

  one(layer: tf.layers.Layer, ins: TrainValue[]): TrainValue {
    if (ins.length !== 1) this.fail(layer, `expected one input, got ${ins.length}`);
    return ins[0]!;
  }

  fail(layer: tf.layers.Layer, why: string): never {
    throw new UnsupportedLayerError(`layer "${layer.name}" (${layer.getClassName()}): ${why}`);
  }

  private toNhwc(x: TrainValue): TrainValue {
    const [n, c, h, w] = x.dims as [number, number, number, number];
    const y = this.f.node('Transpose', [x.name], 'out_nhwc', { perm: [0, 2, 3, 1] });
    const out: TrainValue = { name: y, dims: [n, h, w, c], requiresGrad: x.requiresGrad };
    this.tape(() => {
      const dy = this.gradOf(out);
      if (dy && x.requiresGrad) this.addGrad(x, this.b.node('Transpose', [dy], 'dout_nchw', { perm: [0, 3, 1, 2] }));
    });
    return out;
  }
}
