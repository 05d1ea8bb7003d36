// What a layer family (layers/*.ts) sees of the graph being built: the inference walk (inference.ts)
// and the training compiler (training.ts) each implement one of these.
import type * as tf from '@tensorflow/tfjs';
import type { GraphBuilder } from './builder.ts';
import type { Pads } from './geometry.ts';

export type Sym = tf.SymbolicTensor;

// ---- inference (export, compiled inference) ------------------------------------------------------

/** What a tfjs tensor is in an inference graph (NCHW for 4-D tensors). */
export interface InferValue {
  name: string;
  /** tfjs shape without the batch dimension ([H,W,C] or [F]); for a padded value, the unpadded source. */
  shape: number[];
  /** Zero padding not applied yet: a following conv takes it as its own pads. */
  pads?: Pads;
  /** Memoised Pad node output, once a consumer other than a conv needed it. */
  padded?: string;
  /** A 2-D value that is the NCHW flatten of this [H,W,C] map (tfjs expects H,W,C order). */
  flatOf?: [number, number, number];
}

export interface InferOptions {
  foldBatchNorm: boolean;
  /**
   * Write a per-channel PReLU as `y + (1 - alpha) * Relu(-y)`, the two per-channel scalings as
   * BatchNormalization nodes (mean 0, variance 1, epsilon 0: an exact multiply). onnxruntime's CPU
   * NCHWc transformer keeps that in its blocked layout and fuses the pieces into its convolutions,
   * where a PRelu node forces a layout reorder around it and runs a slow broadcast kernel.
   */
  preluAsRelu?: boolean;
  /** Where the model input already lives in the graph (after any embedded normalisation). */
  inputName: string;
  /** Label for error messages. */
  label: string;
}

export interface InferContext {
  readonly g: GraphBuilder;
  readonly opts: InferOptions;
  /** The value's ONNX name with any pending padding applied. */
  plain(v: InferValue): string;
  /** The value of a layer input (checks that an NCHW-ordered flatten only reaches a Dense). */
  input(layer: tf.layers.Layer, t: Sym): InferValue;
  /** The value of a layer's only input. */
  one(layer: tf.layers.Layer, inputs: Sym[]): InferValue;
  set(t: Sym, v: InferValue): void;
  /** Layers reading `t`. */
  consumers(t: Sym): tf.layers.Layer[];
  isModelOutput(t: Sym): boolean;
  /** True when every use of `t` is a Dense (possibly through Dropouts), so an NCHW flatten order can be absorbed. */
  onlyDense(t: Sym): boolean;
  /** A layer's fused activation (linear or relu) applied to `name`. */
  activation(layer: tf.layers.Layer, name: string): string;
  fail(layer: tf.layers.Layer, why: string): never;
}

// ---- training ----------------------------------------------------------------------------------------

export interface TrainValue {
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
  pads?: Pads & { base: TrainValue };
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

export interface TrainOptions {
  batch: number;
  /** Fine-tuning: BatchNorm uses (and does not update) its running statistics. */
  freezeBatchNorm?: boolean;
  /**
   * Which outputs the backward recomputes instead of the forward saving them: 'bn' (default: BN outputs,
   * one pass each), 'all' (PReLU outputs too: ~3 passes each in ORT, for the least memory), 'none'.
   */
  recompute?: 'bn' | 'all' | 'none';
  /**
   * onnxruntime's NCHWc block size on this CPU (ortNchwcBlockSize; 0 or absent: none). Depthwise
   * convolutions with a multiple of it as channels then run as its blocked kernels (com.microsoft.nchwc).
   */
  nchwcBlock?: number;
}

export interface TrainContext {
  /** The forward graph. */
  readonly f: GraphBuilder;
  /** The backward graph. */
  readonly b: GraphBuilder;
  readonly opts: TrainOptions;
  /** A weight as a forward-graph input (named by its variable); returns its name. */
  param(v: tf.LayerVariable, trainable: boolean): string;
  /** The forward name of a weight already taken by param(). */
  paramName(v: tf.LayerVariable): string;
  /** A weight inside the backward graph. */
  paramB(v: tf.LayerVariable): string;
  /** A forward value (activation or small statistic) made available to the backward graph by saving it. */
  toB(fwdName: string, dims: number[]): string;
  /** Forward value v inside the backward graph: recomputed where cheap, else saved by the forward. */
  save(v: TrainValue): string;
  /** Records a backward emitter; emitters run in reverse order once the forward is complete. */
  tape(emit: () => void): void;
  addGrad(v: TrainValue, g: string): void;
  /** The total gradient of forward value v (backward name), or null when nothing flows into it. */
  gradOf(v: TrainValue): string | null;
  /** Makes `g` the backward output `grad:<weight name>`. */
  emitParamGrad(v: tf.LayerVariable, g: string): void;
  addBatchNorm(bn: GraphBatchNorm): void;
  /** Materialises a pending ZeroPadding2D as a Pad node (when something other than a conv reads it). */
  plain(v: TrainValue): TrainValue;
  i64(g: GraphBuilder, base: string, data: number[]): string;
  reshape(g: GraphBuilder, x: string, dims: number[], name: string): string;
  /** A layer's only input. */
  one(layer: tf.layers.Layer, ins: TrainValue[]): TrainValue;
  fail(layer: tf.layers.Layer, why: string): never;
}

/** One layer family's emitters; `classes` are the tfjs class names it handles. */
export interface LayerFamily {
  classes: readonly string[];
  /** Emits the inference nodes of one layer node and sets its outputs' values. */
  infer(cx: InferContext, layer: tf.layers.Layer, inputs: Sym[], outputs: Sym[]): void;
  /** Emits the training forward of one layer node, recording its backward on the tape; returns its output. */
  train?(cx: TrainContext, layer: tf.layers.Layer, inputs: TrainValue[]): TrainValue;
}

export function prod(a: readonly number[]): number {
  return a.reduce((x, y) => x * y, 1);
}
