// State shared by the operator converters while one graph is converted: the node being converted
// (for error messages and layer names), attribute access, and layer application with weights.
import * as tf from '@tensorflow/tfjs';
import { ArcfaceError } from '../../errors.ts';
import type { ConstTensor } from './const-tensor.ts';
import type { AttrValue, NodeProto } from './reader.ts';

/** An ONNX value during conversion: a constant, or a symbolic tensor in some stored layout. */
export type Value = ConstValue | SymValue;

export interface ConstValue {
  kind: 'const';
  c: ConstTensor;
}

export interface SymValue {
  kind: 'sym';
  t: tf.SymbolicTensor;
  /** Stored axis j holds ONNX axis perm[j]; perm[0] is always 0 (the batch stays first). */
  perm: number[];
  /**
   * Set when an ONNX [N, K] value is stored as the flatten of a tensor kept in a non-ONNX layout
   * (NCHW Flatten of an NHWC map): `shape` is that tensor's stored non-batch shape, `perm` its layout.
   * Gemm/MatMul/BN absorb the order into their weights; anything else gets a real transpose.
   */
  flat?: { shape: number[]; perm: number[] };
}

export function constValue(c: ConstTensor): ConstValue {
  return { kind: 'const', c };
}

export function symValue(t: tf.SymbolicTensor, perm: number[], flat?: SymValue['flat']): SymValue {
  return flat ? { kind: 'sym', t, perm, flat } : { kind: 'sym', t, perm };
}

/** Layer names must match tfjs' /^[A-Za-z0-9][-A-Za-z0-9._]*$/ (no '/', which scopes weights). */
export function sanitiseName(raw: string): string {
  const s = raw.replace(/^[^A-Za-z0-9]+/, '').replace(/[^-A-Za-z0-9._]+/g, '_').replace(/_+$/, '');
  return s || 'node';
}

export class ConvertContext {
  private readonly used = new Set<string>();
  private node: NodeProto = {};
  private attrs = new Map<string, AttrValue>();
  private base = 'node';
  /** Custom-layer (OnnxOp) instances created; 0 means the model loads in plain tfjs. */
  customLayerCount = 0;

  constructor(readonly file: string) {}

  begin(node: NodeProto, attrs: Map<string, AttrValue>, index: number): void {
    this.node = node;
    this.attrs = attrs;
    this.base = sanitiseName(node.name || `${node.opType ?? 'node'}_${index}`);
  }

  get opType(): string {
    return this.node.opType ?? '';
  }

  get nodeName(): string {
    return this.node.name ?? '';
  }

  /** An ArcfaceError naming the file, node and operator. */
  error(message: string): ArcfaceError {
    return new ArcfaceError(`node "${this.nodeName}" (${this.opType}): ${message}`, this.file);
  }

  /** A unique layer name derived from the node name, e.g. `layer1_layer1.0_conv1_Conv_pad`. */
  layerName(suffix = ''): string {
    const want = suffix ? `${this.base}_${suffix}` : this.base;
    let name = want;
    for (let i = 1; this.used.has(name); i++) name = `${want}_${i}`;
    this.used.add(name);
    return name;
  }

  /** Applies a layer to symbolic input(s), then sets its weights (the tensors given are disposed). */
  apply(layer: tf.layers.Layer, input: tf.SymbolicTensor | tf.SymbolicTensor[], weights?: tf.Tensor[]): tf.SymbolicTensor {
    const out = layer.apply(input) as tf.SymbolicTensor;
    if (weights) {
      layer.setWeights(weights);
      tf.dispose(weights);
    }
    return out;
  }

  /** The input as a symbolic tensor, or an error naming it. */
  sym(v: Value | undefined, what: string): SymValue {
    if (!v) throw this.error(`missing input ${what}`);
    if (v.kind !== 'sym') throw this.error(`input ${what} must depend on the model input (got a constant)`);
    return v;
  }

  /** The input as a constant (initializer or folded), or an error naming it. */
  const(v: Value | undefined, what: string): ConstTensor {
    if (!v) throw this.error(`missing input ${what}`);
    if (v.kind !== 'const') throw this.error(`input ${what} must be a constant (initializer) to convert to layers`);
    return v.c;
  }

  has(name: string): boolean {
    return this.attrs.has(name);
  }

  int(name: string, def: number): number {
    const v = this.attrs.get(name);
    if (v === undefined) return def;
    if (typeof v !== 'number') throw this.error(`attribute ${name} is not a number`);
    return v;
  }

  float(name: string, def: number): number {
    return this.int(name, def);
  }

  ints(name: string, def?: number[]): number[] | undefined {
    const v = this.attrs.get(name);
    if (v === undefined) return def;
    if (!Array.isArray(v) || v.some((x) => typeof x !== 'number')) throw this.error(`attribute ${name} is not a list of ints`);
    return v as number[];
  }

  /** A list of `n` integers >= 1 (kernel sizes, strides, dilations), checked before any layer sees it. */
  positiveInts(name: string, n: number, def?: number[]): number[] | undefined {
    const v = this.ints(name, def);
    if (v !== undefined && (v.length !== n || v.some((x) => !Number.isSafeInteger(x) || x < 1))) {
      throw this.error(`attribute ${name} must be ${n} integers >= 1, got [${v.slice(0, 8).join(', ')}]`);
    }
    return v;
  }

  string(name: string, def: string): string {
    const v = this.attrs.get(name);
    if (v === undefined) return def;
    if (typeof v !== 'string') throw this.error(`attribute ${name} is not a string`);
    return v;
  }

  tensor(name: string): ConstTensor | undefined {
    const v = this.attrs.get(name);
    return v !== undefined && typeof v === 'object' && !Array.isArray(v) ? v : undefined;
  }
}
