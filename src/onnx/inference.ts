// Walks a tfjs functional model (NHWC) layer by layer and emits the equivalent NCHW ONNX nodes.
// Every 4-D tfjs tensor becomes an NCHW ONNX value. Two things are carried lazily instead of emitted:
// a ZeroPadding2D's pads (merged into the next Conv's `pads`, or a Pad node for any other consumer) and
// the NHWC flatten order (an NCHW Flatten whose following Dense gets its kernel rows permuted).
import type * as tf from '@tensorflow/tfjs';
import { ArcfaceError } from '../errors.ts';
import type { GraphBuilder } from './builder.ts';
import {
  batchNormParams,
  convKernel,
  depthwiseKernel,
  foldBatchNorm,
  nchwRows,
  preluSlope,
  valuesOf,
  weightOf,
  type ConvWeights,
} from './weights.ts';

type Sym = tf.SymbolicTensor;
type Pads = { top: number; bottom: number; left: number; right: number };

/** What a tfjs tensor is in the ONNX graph. */
interface Value {
  name: string;
  /** tfjs shape without the batch dimension ([H,W,C] or [F]); for a padded value, the unpadded source. */
  shape: number[];
  /** Zero padding not applied yet. */
  pads?: Pads;
  /** Memoised Pad node output, once a consumer other than a conv needed it. */
  padded?: string;
  /** A 2-D value that is the NCHW flatten of this [H,W,C] map (tfjs expects H,W,C order). */
  flatOf?: [number, number, number];
}

export interface WalkOptions {
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

const CONVS = new Set(['Conv2D', 'DepthwiseConv2D', 'GroupedConv2D']);

function pair(v: unknown): [number, number] {
  const a = Array.isArray(v) ? v : [v, v];
  return [Number(a[0]), Number(a[1] ?? a[0])];
}

/** TF 'same' total padding along one axis. */
function sameTotal(n: number, k: number, s: number, d: number): number {
  return Math.max((Math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0);
}

class Walker {
  private readonly values = new Map<number, Value>();
  private readonly consumers = new Map<number, tf.layers.Layer[]>();
  private readonly outputIds: Set<number>;

  constructor(
    private readonly g: GraphBuilder,
    private readonly model: tf.LayersModel,
    private readonly opts: WalkOptions,
  ) {
    this.outputIds = new Set(model.outputs.map((o) => o.id));
    for (const layer of model.layers) {
      for (const node of layer.inboundNodes) {
        for (const t of node.inputTensors) this.consumers.set(t.id, [...(this.consumers.get(t.id) ?? []), layer]);
      }
    }
  }

  private fail(layer: tf.layers.Layer, why: string): never {
    throw new ArcfaceError(`layer "${layer.name}" (${layer.getClassName()}): ${why}`, this.opts.label);
  }

  /** Converts every layer; returns the ONNX value of each model output. */
  run(): { name: string; shape: number[] }[] {
    const input = this.model.inputs;
    if (input.length !== 1 || input[0]!.shape.length !== 4) {
      throw new ArcfaceError(`ONNX export needs one image input [N,H,W,C], the model has ${input.map((i) => `[${i.shape}]`).join(', ')}`, this.opts.label);
    }
    this.values.set(input[0]!.id, { name: this.opts.inputName, shape: input[0]!.shape.slice(1) as number[] });
    // Process nodes as their inputs become available (model.layers is ordered, but do not rely on it).
    let pending = this.model.layers.flatMap((layer) => layer.inboundNodes.map((node) => ({ layer, node })));
    while (pending.length) {
      const ready = pending.filter(({ node }) => node.inputTensors.length > 0 && node.inputTensors.every((t) => this.values.has(t.id)));
      if (!ready.length) break;
      for (const { layer, node } of ready) {
        if (!node.outputTensors.every((t) => this.values.has(t.id))) this.layer(layer, node.inputTensors, node.outputTensors);
      }
      pending = pending.filter((p) => !ready.includes(p));
    }
    return this.model.outputs.map((o) => {
      const v = this.values.get(o.id);
      if (!v) throw new ArcfaceError(`model output "${o.name}" is not reachable from its input`, this.opts.label);
      return { name: this.plain(v), shape: o.shape.slice(1) as number[] };
    });
  }

  /** The value's ONNX name with any pending padding applied. */
  private plain(v: Value): string {
    if (!v.pads) return v.name;
    if (!v.padded) {
      const { top, bottom, left, right } = v.pads;
      const pads = [0, 0, top, left, 0, 0, bottom, right];
      // Pad-2 takes pads as an attribute; from opset 11 they are an int64 input.
      v.padded =
        this.g.opset < 11
          ? this.g.node('Pad', [v.name], `${v.name}_pad`, { mode: 'constant', pads })
          : this.g.node('Pad', [v.name, this.g.int64Init(`${v.name}_pads`, pads)], `${v.name}_pad`, { mode: 'constant' });
    }
    return v.padded;
  }

  private inputValue(layer: tf.layers.Layer, t: Sym): Value {
    const v = this.values.get(t.id)!;
    if (v.flatOf && !['Dense', 'Dropout'].includes(layer.getClassName())) this.fail(layer, 'internal: NCHW-ordered flatten reached a layer other than Dense');
    return v;
  }

  /** True when every use of `t` is a Dense (possibly through Dropouts), so an NCHW flatten order can be absorbed. */
  private onlyDense(t: Sym): boolean {
    if (this.outputIds.has(t.id)) return false;
    const users = this.consumers.get(t.id) ?? [];
    return users.every((l) => {
      if (l.getClassName() === 'Dense') return true;
      if (l.getClassName() !== 'Dropout') return false;
      return l.inboundNodes.every((n) => !n.inputTensors.some((x) => x.id === t.id) || n.outputTensors.every((o) => this.onlyDense(o)));
    });
  }

  private activation(layer: tf.layers.Layer, name: string): string {
    const act = (layer.getConfig().activation as string | undefined) ?? 'linear';
    if (act === 'linear') return name;
    if (act === 'relu') return this.g.node('Relu', [name], `${layer.name}.relu`);
    return this.fail(layer, `activation "${act}" is not supported (linear or relu)`);
  }

  private layer(layer: tf.layers.Layer, inputs: Sym[], outputs: Sym[]): void {
    const cls = layer.getClassName();
    const set = (v: Value): void => void this.values.set(outputs[0]!.id, v);
    const outShape = outputs[0]!.shape.slice(1) as number[];
    const one = () => {
      if (inputs.length !== 1) this.fail(layer, `expected one input, got ${inputs.length}`);
      return this.inputValue(layer, inputs[0]!);
    };
    switch (cls) {
      case 'InputLayer':
        return;
      case 'Dropout':
        return set(one());
      case 'ZeroPadding2D': {
        const x = one();
        const cfg = layer.getConfig();
        if (cfg.dataFormat === 'channelsFirst') this.fail(layer, 'channelsFirst is not supported');
        const [[top, bottom], [left, right]] = cfg.padding as [[number, number], [number, number]];
        const p = x.pads ?? { top: 0, bottom: 0, left: 0, right: 0 };
        return set({ name: x.name, shape: x.shape, pads: { top: p.top + top!, bottom: p.bottom + bottom!, left: p.left + left!, right: p.right + right! } });
      }
      case 'Conv2D':
      case 'DepthwiseConv2D':
      case 'GroupedConv2D':
        return this.conv(layer, one(), outputs[0]!);
      case 'BatchNormalization': {
        const x = one();
        const rank = x.shape.length + 1;
        const axis = Number(layer.getConfig().axis);
        if (axis !== -1 && axis !== rank - 1) this.fail(layer, `normalises axis ${axis}; only the channel (last) axis maps to ONNX`);
        const bn = batchNormParams(layer);
        const c = [bn.gamma.length];
        const ins = [
          this.plain(x),
          this.g.floatInit(`${layer.name}.weight`, c, bn.gamma),
          this.g.floatInit(`${layer.name}.bias`, c, bn.beta),
          this.g.floatInit(`${layer.name}.running_mean`, c, bn.mean),
          this.g.floatInit(`${layer.name}.running_var`, c, bn.variance),
        ];
        const name = this.g.node('BatchNormalization', ins, layer.name, { epsilon: { float: bn.epsilon }, momentum: { float: 0.9 } });
        return set({ name, shape: outShape });
      }
      case 'PReLU': {
        const x = one();
        const { slope, dims } = preluSlope(weightOf(layer, 'alpha')!);
        if (this.opts.preluAsRelu && dims.length === 3 && dims[1] === 1 && dims[2] === 1) return set({ name: this.preluAsRelu(layer, this.plain(x), slope), shape: outShape });
        const name = this.g.node('PRelu', [this.plain(x), this.g.floatInit(`${layer.name}.weight`, dims, slope)], layer.name);
        return set({ name, shape: outShape });
      }
      case 'ReLU':
      case 'Activation': {
        const x = one();
        const act = cls === 'ReLU' ? 'relu' : (layer.getConfig().activation as string);
        if (cls === 'ReLU' && layer.getConfig().maxValue != null) this.fail(layer, 'ReLU with maxValue is not supported');
        if (act === 'linear') return set(x);
        if (act !== 'relu') this.fail(layer, `activation "${act}" is not supported (linear or relu)`);
        return set({ name: this.g.node('Relu', [this.plain(x)], layer.name), shape: outShape });
      }
      case 'Add': {
        const xs = inputs.map((t) => this.inputValue(layer, t));
        if (xs.some((v) => v.shape.length !== xs[0]!.shape.length)) this.fail(layer, 'inputs of different ranks');
        let name = this.plain(xs[0]!);
        for (let i = 1; i < xs.length; i++) name = this.g.node('Add', [name, this.plain(xs[i]!)], layer.name);
        return set({ name, shape: outShape });
      }
      case 'Flatten': {
        const x = one();
        if (x.shape.length !== 3) {
          if (x.shape.length === 1) return set(x);
          this.fail(layer, `flattening a rank-${x.shape.length + 1} tensor is not supported`);
        }
        const [h, w, c] = x.shape as [number, number, number];
        if (h * w === 1) return set({ name: this.g.node('Flatten', [this.plain(x)], layer.name, { axis: 1 }), shape: outShape });
        if (this.onlyDense(outputs[0]!)) {
          return set({ name: this.g.node('Flatten', [this.plain(x)], layer.name, { axis: 1 }), shape: outShape, flatOf: [h, w, c] });
        }
        // Someone needs the real NHWC order: transpose back before flattening.
        const nhwc = this.g.node('Transpose', [this.plain(x)], `${layer.name}.nhwc`, { perm: [0, 2, 3, 1] });
        return set({ name: this.g.node('Flatten', [nhwc], layer.name, { axis: 1 }), shape: outShape });
      }
      case 'Dense':
        return this.dense(layer, one(), outShape, set);
      default:
        this.fail(layer, 'this layer type has no ONNX export (supported: Conv2D, DepthwiseConv2D, GroupedConv2D, ZeroPadding2D, BatchNormalization, PReLU, ReLU, Add, Flatten, Dropout, Dense)');
    }
  }

  /** Per-channel `x * scale` as a BatchNormalization node (mean 0, variance 1, epsilon 0). */
  private channelScale(x: string, scale: Float32Array, name: string): string {
    const c = [scale.length];
    const ins = [
      x,
      this.g.floatInit(`${name}.scale`, c, scale),
      this.g.floatInit(`${name}.bias`, c, new Float32Array(scale.length)),
      this.g.floatInit(`${name}.mean`, c, new Float32Array(scale.length)),
      this.g.floatInit(`${name}.var`, c, new Float32Array(scale.length).fill(1)),
    ];
    return this.g.node('BatchNormalization', ins, name, { epsilon: { float: 0 } });
  }

  /** PReLU(y) = y + (1 - alpha) * Relu(-y), per channel (see WalkOptions.preluAsRelu). */
  private preluAsRelu(layer: tf.layers.Layer, y: string, alpha: Float32Array): string {
    const negated = this.channelScale(y, new Float32Array(alpha.length).fill(-1), `${layer.name}.neg`);
    const negPart = this.g.node('Relu', [negated], `${layer.name}.relu`);
    const scaled = this.channelScale(negPart, alpha.map((a) => 1 - a), `${layer.name}.scale`);
    return this.g.node('Add', [scaled, y], layer.name);
  }

  private conv(layer: tf.layers.Layer, x: Value, output: Sym): void {
    const cls = layer.getClassName();
    const cfg = layer.getConfig();
    if (cfg.dataFormat === 'channelsFirst') this.fail(layer, 'channelsFirst is not supported');
    const [kh, kw] = pair(cfg.kernelSize);
    const [sh, sw] = pair(cfg.strides ?? 1);
    const [dh, dw] = pair(cfg.dilationRate ?? 1);
    const [h, w, cin] = x.shape as [number, number, number];
    const p = x.pads ?? { top: 0, bottom: 0, left: 0, right: 0 };
    let pads = [p.top, p.left, p.bottom, p.right];
    if (cfg.padding === 'same') {
      // TF 'same' puts the odd pixel at the end; computed on the (already padded) input size.
      const th = sameTotal(h + p.top + p.bottom, kh, sh, dh);
      const tw = sameTotal(w + p.left + p.right, kw, sw, dw);
      pads = [p.top + Math.floor(th / 2), p.left + Math.floor(tw / 2), p.bottom + th - Math.floor(th / 2), p.right + tw - Math.floor(tw / 2)];
    } else if (cfg.padding !== 'valid') this.fail(layer, `padding "${cfg.padding}" is not supported`);

    let weights: ConvWeights;
    let group = 1;
    if (cls === 'DepthwiseConv2D') {
      weights = depthwiseKernel(weightOf(layer, 'depthwise_kernel')!);
      group = cin;
    } else {
      weights = convKernel(weightOf(layer, 'kernel')!);
      if (cls === 'GroupedConv2D') group = Number(cfg.groups);
    }
    const bias = weightOf(layer, 'bias');
    if (bias) weights.bias = valuesOf(bias);

    // Fold a BatchNorm that is the conv's only consumer (torch's eval-mode export does the same).
    let out = output;
    const users = this.consumers.get(output.id) ?? [];
    const bnLayer = users[0];
    const act = (cfg.activation as string | undefined) ?? 'linear';
    if (
      this.opts.foldBatchNorm &&
      users.length === 1 &&
      bnLayer!.getClassName() === 'BatchNormalization' &&
      bnLayer!.inboundNodes.length === 1 &&
      act === 'linear' &&
      !this.outputIds.has(output.id) &&
      [-1, 3].includes(Number(bnLayer!.getConfig().axis))
    ) {
      weights = foldBatchNorm(weights, batchNormParams(bnLayer!));
      out = bnLayer!.inboundNodes[0]!.outputTensors[0]!;
    }
    const ins = [x.name, this.g.floatInit(`${layer.name}.weight`, weights.dims, weights.weight)];
    if (weights.bias) ins.push(this.g.floatInit(`${layer.name}.bias`, [weights.dims[0]], weights.bias));
    const name = this.g.node('Conv', ins, out === output ? layer.name : `${layer.name}+bn`, {
      kernel_shape: [kh, kw],
      strides: [sh, sw],
      pads,
      dilations: [dh, dw],
      group,
    });
    this.values.set(out.id, { name: out === output ? this.activation(layer, name) : name, shape: output.shape.slice(1) as number[] });
  }

  private dense(layer: tf.layers.Layer, x: Value, outShape: number[], set: (v: Value) => void): void {
    if (x.shape.length !== 1) this.fail(layer, `Dense on a rank-${x.shape.length + 1} input is not supported (flatten first)`);
    const kernel = weightOf(layer, 'kernel')!;
    const [inF, outF] = kernel.shape as [number, number];
    let k = valuesOf(kernel); // [in, out]
    if (x.flatOf) k = nchwRows(k, x.flatOf, outF);
    const bias = weightOf(layer, 'bias');
    let name: string;
    if (bias) {
      // Gemm with transB=1 and the weight stored [out, in], as torch exports nn.Linear.
      const wT = new Float32Array(k.length);
      for (let i = 0; i < inF; i++) for (let o = 0; o < outF; o++) wT[o * inF + i] = k[i * outF + o]!;
      const ins = [x.name, this.g.floatInit(`${layer.name}.weight`, [outF, inF], wT), this.g.floatInit(`${layer.name}.bias`, [outF], valuesOf(bias))];
      name = this.g.node('Gemm', ins, layer.name, { alpha: { float: 1 }, beta: { float: 1 }, transB: 1 });
    } else {
      name = this.g.node('MatMul', [x.name, this.g.floatInit(`${layer.name}.weight`, [inF, outF], k)], layer.name);
    }
    set({ name: this.activation(layer, name), shape: outShape });
  }
}

/** Emits the model's layers into `g`; returns its outputs' ONNX names and tfjs shapes (no batch). */
export function emitLayers(g: GraphBuilder, model: tf.LayersModel, opts: WalkOptions): { name: string; shape: number[] }[] {
  return new Walker(g, model, opts).run();
}
