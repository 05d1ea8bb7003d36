// The inference graph of a tfjs functional model (NHWC) as NCHW ONNX nodes: every 4-D tfjs tensor
// becomes an NCHW ONNX value. Two things are carried lazily instead of emitted: a ZeroPadding2D's pads
// (merged into the next Conv's `pads`, or a Pad node for any other consumer) and the NHWC flatten order
// (an NCHW Flatten whose following Dense gets its kernel rows permuted). Each layer's nodes come from
// its family in layers/; export.ts writes the result as a file.
import type * as tf from '@tensorflow/tfjs';
import { ArcfaceError } from '../errors.ts';
import type { GraphBuilder } from './builder.ts';
import type { InferContext, InferOptions, InferValue, Sym } from './context.ts';
import { familyOf, SUPPORTED_CLASSES } from './layers/index.ts';
import { consumersOf, walkNodes } from './walk.ts';

export type { InferOptions } from './context.ts';

class InferenceWalk implements InferContext {
  private readonly values = new Map<number, InferValue>();
  private readonly consumerMap: Map<number, tf.layers.Layer[]>;
  private readonly outputIds: Set<number>;

  constructor(
    readonly g: GraphBuilder,
    private readonly model: tf.LayersModel,
    readonly opts: InferOptions,
  ) {
    this.outputIds = new Set(model.outputs.map((o) => o.id));
    this.consumerMap = consumersOf(model);
  }

  fail(layer: tf.layers.Layer, why: string): never {
    throw new ArcfaceError(`layer "${layer.name}" (${layer.getClassName()}): ${why}`, this.opts.label);
  }

  /** Converts every layer; returns the ONNX value of each model output. */
  run(): { name: string; shape: number[] }[] {
    const input = this.model.inputs;
    if (input.length !== 1 || input[0]!.shape.length !== 4) {
      throw new ArcfaceError(`ONNX export needs one image input [N,H,W,C], the model has ${input.map((i) => `[${i.shape}]`).join(', ')}`, this.opts.label);
    }
    this.values.set(input[0]!.id, { name: this.opts.inputName, shape: input[0]!.shape.slice(1) as number[] });
    walkNodes(this.model, this.values, (layer, node) => {
      const family = familyOf(layer.getClassName());
      if (!family) this.fail(layer, `this layer type has no ONNX export (supported: ${SUPPORTED_CLASSES.join(', ')})`);
      family.infer(this, layer, node.inputTensors, node.outputTensors);
    });
    return this.model.outputs.map((o) => {
      const v = this.values.get(o.id);
      if (!v) throw new ArcfaceError(`model output "${o.name}" is not reachable from its input`, this.opts.label);
      return { name: this.plain(v), shape: o.shape.slice(1) as number[] };
    });
  }

  plain(v: InferValue): string {
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

  input(layer: tf.layers.Layer, t: Sym): InferValue {
    const v = this.values.get(t.id)!;
    if (v.flatOf && !['Dense', 'Dropout'].includes(layer.getClassName())) this.fail(layer, 'internal: NCHW-ordered flatten reached a layer other than Dense');
    return v;
  }

  one(layer: tf.layers.Layer, inputs: Sym[]): InferValue {
    if (inputs.length !== 1) this.fail(layer, `expected one input, got ${inputs.length}`);
    return this.input(layer, inputs[0]!);
  }

  set(t: Sym, v: InferValue): void {
    this.values.set(t.id, v);
  }

  consumers(t: Sym): tf.layers.Layer[] {
    return this.consumerMap.get(t.id) ?? [];
  }

  isModelOutput(t: Sym): boolean {
    return this.outputIds.has(t.id);
  }

  onlyDense(t: Sym): boolean {
    if (this.outputIds.has(t.id)) return false;
    return this.consumers(t).every((l) => {
      if (l.getClassName() === 'Dense') return true;
      if (l.getClassName() !== 'Dropout') return false;
      return l.inboundNodes.every((n) => !n.inputTensors.some((x) => x.id === t.id) || n.outputTensors.every((o) => this.onlyDense(o)));
    });
  }

  activation(layer: tf.layers.Layer, name: string): string {
    const act = (layer.getConfig().activation as string | undefined) ?? 'linear';
    if (act === 'linear') return name;
    if (act === 'relu') return this.g.node('Relu', [name], `${layer.name}.relu`);
    return this.fail(layer, `activation "${act}" is not supported (linear or relu)`);
  }
}

/** Emits the model's inference nodes into `g`; returns its outputs' ONNX names and tfjs shapes (no batch). */
export function emitInference(g: GraphBuilder, model: tf.LayersModel, opts: InferOptions): { name: string; shape: number[] }[] {
  return new InferenceWalk(g, model, opts).run();
}
