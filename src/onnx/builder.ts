// Accumulates the nodes and initializers of one ONNX graph and encodes the ModelProto. Knows the opset
// -> IR version table; everything about tfjs layers lives in inference.ts, training.ts and layers/.
import onnxProto from 'onnx-proto';
import type { onnx as OnnxTypes } from 'onnx-proto';

const onnx = onnxProto.onnx;

type Attr = OnnxTypes.IAttributeProto;
export type AttrValue = number | number[] | string | { float: number };

export const MIN_OPSET = 9;
export const MAX_OPSET = 17;

/** The IR version each default-domain opset first shipped with (ONNX 1.4 … 1.12). */
export function irVersionFor(opset: number): number {
  if (opset <= 9) return 4;
  if (opset === 10) return 5;
  if (opset === 11) return 6;
  if (opset <= 14) return 7;
  return 8;
}

function attribute(name: string, v: AttrValue): Attr {
  const T = onnx.AttributeProto.AttributeType;
  if (typeof v === 'string') return { name, type: T.STRING, s: new TextEncoder().encode(v) };
  if (Array.isArray(v)) return { name, type: T.INTS, ints: v };
  if (typeof v === 'object') return { name, type: T.FLOAT, f: v.float };
  return { name, type: T.INT, i: v };
}

/** Little-endian float32 bytes (ONNX raw_data is little-endian whatever the host). */
function floatBytes(data: Float32Array): Uint8Array {
  const out = new Uint8Array(data.length * 4);
  const view = new DataView(out.buffer);
  for (let i = 0; i < data.length; i++) view.setFloat32(i * 4, data[i]!, true);
  return out;
}

function int64Bytes(data: number[]): Uint8Array {
  const out = new Uint8Array(data.length * 8);
  const view = new DataView(out.buffer);
  data.forEach((v, i) => view.setBigInt64(i * 8, BigInt(v), true));
  return out;
}

export interface ValueInfo {
  name: string;
  /** A number, or a string for a symbolic dimension (dim_param). */
  dims: (number | string)[];
}

export class GraphBuilder {
  readonly nodes: OnnxTypes.INodeProto[] = [];
  readonly initializers: OnnxTypes.ITensorProto[] = [];
  private readonly used = new Set<string>();

  constructor(readonly opset: number) {}

  /** A value name not used yet in this graph, derived from `base`. */
  unique(base: string): string {
    let name = base;
    for (let i = 1; this.used.has(name); i++) name = `${base}_${i}`;
    this.used.add(name);
    return name;
  }

  reserve(name: string): string {
    if (this.used.has(name)) throw new Error(`ONNX value name "${name}" used twice`);
    this.used.add(name);
    return name;
  }

  floatInit(base: string, dims: number[], data: Float32Array): string {
    const n = dims.reduce((a, b) => a * b, 1);
    if (n !== data.length) throw new Error(`initializer ${base}: ${data.length} values for shape [${dims}]`);
    const name = this.unique(base);
    this.initializers.push({ name, dims, dataType: onnx.TensorProto.DataType.FLOAT, rawData: floatBytes(data) });
    return name;
  }

  int64Init(base: string, data: number[]): string {
    const name = this.unique(base);
    this.initializers.push({ name, dims: [data.length], dataType: onnx.TensorProto.DataType.INT64, rawData: int64Bytes(data) });
    return name;
  }

  /** Adds a node with one output and returns that output's name (`out` fixes it, e.g. the graph output). */
  node(opType: string, inputs: string[], name: string, attrs: Record<string, AttrValue> = {}, out?: string): string {
    const output = out ?? this.unique(name);
    this.nodes.push({
      opType,
      name: this.unique(`${name}/${opType}`),
      input: inputs,
      output: [output],
      attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v)),
    });
    return output;
  }

  /** A node of an onnxruntime contrib domain (com.microsoft, com.microsoft.nchwc), for graphs only onnxruntime runs. */
  contribNode(opType: string, inputs: string[], name: string, attrs: Record<string, AttrValue> = {}, domain = 'com.microsoft'): string {
    const output = this.node(opType, inputs, name, attrs);
    this.nodes[this.nodes.length - 1]!.domain = domain;
    return output;
  }

  /** Adds a node whose outputs are `outs` (names already reserved). */
  nodeWithOutputs(opType: string, inputs: string[], name: string, attrs: Record<string, AttrValue>, outs: string[]): void {
    this.nodes.push({
      opType,
      name: this.unique(`${name}/${opType}`),
      input: inputs,
      output: outs,
      attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v)),
    });
  }

  /** Renames a node output everywhere it is produced or used (to give the graph output a fixed name). */
  rename(from: string, to: string): void {
    for (const n of this.nodes) {
      n.output = n.output!.map((o) => (o === from ? to : o));
      n.input = n.input!.map((i) => (i === from ? to : i));
    }
  }

  /** Encodes the model: one graph, float32 inputs/outputs, default domain at `opset` (plus the contrib domains its nodes use). */
  encode(opts: { graphName: string; inputs: ValueInfo[]; outputs: ValueInfo[]; metadata: Record<string, string>; producerVersion: string; docString?: string }): Uint8Array {
    const valueInfo = (v: ValueInfo): OnnxTypes.IValueInfoProto => ({
      name: v.name,
      type: {
        tensorType: {
          elemType: onnx.TensorProto.DataType.FLOAT,
          shape: { dim: v.dims.map((d) => (typeof d === 'string' ? { dimParam: d } : { dimValue: d })) },
        },
      },
    });
    const model = onnx.ModelProto.create({
      irVersion: irVersionFor(this.opset),
      opsetImport: [{ domain: '', version: this.opset }, ...[...new Set(this.nodes.map((n) => n.domain).filter((d): d is string => !!d))].map((domain) => ({ domain, version: 1 }))],
      producerName: 'arcface-ts',
      producerVersion: opts.producerVersion,
      docString: opts.docString,
      graph: {
        name: opts.graphName,
        node: this.nodes,
        initializer: this.initializers,
        input: opts.inputs.map(valueInfo),
        output: opts.outputs.map(valueInfo),
      },
      metadataProps: Object.entries(opts.metadata).map(([key, value]) => ({ key, value })),
    });
    return onnx.ModelProto.encode(model).finish();
  }
}
