// Reads ONNX protobuf files (ModelProto, TensorProto) with the `onnx-proto` bindings and turns
// their tensors and attributes into plain JS values. Shared by the importer and the exporter:
// `onnx` below is the generated protobuf namespace (encode with `onnx.ModelProto.encode`).
import onnxProto from 'onnx-proto';
import type { onnx as OnnxTypes } from 'onnx-proto';
import { ArcfaceError } from '../../errors.ts';
import { nodeFs } from '../../node-builtins.ts';
import { type ConstTensor, type Dim, floatTensor, intTensor } from './const-tensor.ts';
import { halfToFloat } from '../../util/half.ts';

export const onnx = onnxProto.onnx;
export type ModelProto = OnnxTypes.ModelProto;
export type GraphProto = OnnxTypes.IGraphProto;
export type NodeProto = OnnxTypes.INodeProto;
export type TensorProto = OnnxTypes.ITensorProto;
export type ValueInfoProto = OnnxTypes.IValueInfoProto;
export type AttributeProto = OnnxTypes.IAttributeProto;
export const DataType = onnx.TensorProto.DataType;
export const AttributeType = onnx.AttributeProto.AttributeType;

/** protobufjs gives int64 fields as Long objects (or numbers); ONNX ints used here fit in 2^53. */
export function toNumber(v: number | { toNumber(): number } | null | undefined): number {
  if (v == null) return 0;
  return typeof v === 'number' ? v : v.toNumber();
}

function readBytes(pathOrBytes: string | Uint8Array, label: string): Uint8Array {
  if (typeof pathOrBytes !== 'string') return pathOrBytes;
  try {
    return nodeFs(pathOrBytes).readFileSync(pathOrBytes);
  } catch (e) {
    throw new ArcfaceError(`cannot read ONNX file: ${(e as Error).message}`, label);
  }
}

export interface OnnxFile {
  model: ModelProto;
  /** The path, or the label given for bytes; used in every error message. */
  file: string;
}

/** Decodes and sanity-checks an ONNX model. A truncated or non-ONNX file is an ArcfaceError naming it. */
export function readOnnxModel(pathOrBytes: string | Uint8Array, label?: string): OnnxFile {
  const file = typeof pathOrBytes === 'string' ? pathOrBytes : (label ?? '<onnx bytes>');
  const bytes = readBytes(pathOrBytes, file);
  let model: ModelProto;
  try {
    model = onnx.ModelProto.decode(bytes);
  } catch (e) {
    throw new ArcfaceError(`not a valid ONNX model (truncated or not protobuf: ${(e as Error).message})`, file);
  }
  // Arbitrary bytes sometimes decode as protobuf; a real model has an IR version, opsets and a graph.
  const graph = model.graph;
  if (toNumber(model.irVersion) <= 0 || !graph || !graph.node || graph.node.length === 0 || model.opsetImport.length === 0) {
    throw new ArcfaceError('not a valid ONNX model (no IR version, opset or graph nodes)', file);
  }
  return { model, file };
}

/** Decodes a serialized TensorProto (the `.pb` files of ONNX's test data). */
export function readTensorProto(pathOrBytes: string | Uint8Array, label?: string): ConstTensor {
  const file = typeof pathOrBytes === 'string' ? pathOrBytes : (label ?? '<tensor bytes>');
  const bytes = readBytes(pathOrBytes, file);
  let t: OnnxTypes.TensorProto;
  try {
    t = onnx.TensorProto.decode(bytes);
  } catch (e) {
    throw new ArcfaceError(`not a valid ONNX TensorProto: ${(e as Error).message}`, file);
  }
  return tensorFromProto(t, file);
}

const FLOAT_TYPES = new Set([DataType.FLOAT, DataType.DOUBLE, DataType.FLOAT16]);

/** Converts a TensorProto to a ConstTensor (floats as float32, integers and bools as numbers). */
export function tensorFromProto(t: TensorProto, file: string): ConstTensor {
  const shape = (t.dims ?? []).map(toNumber);
  const size = shape.reduce((a, b) => a * b, 1);
  const dt = t.dataType ?? DataType.UNDEFINED;
  const where = `tensor "${t.name ?? ''}"`;
  if (shape.some((d) => !Number.isSafeInteger(d) || d < 0) || size > 2 ** 31) {
    throw new ArcfaceError(`${where} has an invalid shape [${shape}] (not a tensor, or corrupt)`, file);
  }
  if (t.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL) {
    throw new ArcfaceError(`${where} uses external data, which is not supported (save the model as one file)`, file);
  }
  const raw = t.rawData && t.rawData.length > 0 ? t.rawData : null;
  const view = raw ? new DataView(raw.buffer, raw.byteOffset, raw.byteLength) : null;
  const check = (n: number): void => {
    if (n !== size) throw new ArcfaceError(`${where} has ${n} values for shape [${shape}]`, file);
  };
  // Every count is checked against the data the file holds before anything of `size` is allocated.
  if (FLOAT_TYPES.has(dt)) {
    if (view) check(view.byteLength / (dt === DataType.DOUBLE ? 8 : dt === DataType.FLOAT16 ? 2 : 4));
    else check((dt === DataType.FLOAT ? t.floatData : dt === DataType.DOUBLE ? t.doubleData : t.int32Data)?.length ?? 0);
    const out = new Float32Array(size);
    if (view) {
      for (let i = 0; i < size; i++) {
        out[i] =
          dt === DataType.DOUBLE ? view.getFloat64(i * 8, true)
          : dt === DataType.FLOAT16 ? halfToFloat(view.getUint16(i * 2, true))
          : view.getFloat32(i * 4, true);
      }
    } else if (dt === DataType.FLOAT) {
      out.set(t.floatData ?? []);
    } else if (dt === DataType.DOUBLE) {
      out.set(t.doubleData ?? []);
    } else {
      // float16 bits are stored in int32_data
      (t.int32Data ?? []).forEach((v, i) => (out[i] = halfToFloat(v)));
    }
    return floatTensor(shape, out);
  }
  const INT_ITEM: Record<number, number> = {
    [DataType.INT64]: 8, [DataType.UINT64]: 8, [DataType.INT32]: 4, [DataType.UINT32]: 4, [DataType.INT16]: 2,
    [DataType.UINT16]: 2, [DataType.INT8]: 1, [DataType.UINT8]: 1, [DataType.BOOL]: 1,
  };
  if (!Object.hasOwn(INT_ITEM, dt)) throw new ArcfaceError(`${where} has unsupported data type ${DataType[dt] ?? dt}`, file);
  if (view) check(view.byteLength / INT_ITEM[dt]!);
  else check((dt === DataType.INT64 ? t.int64Data : dt === DataType.UINT64 ? t.uint64Data : t.int32Data)?.length ?? 0);
  const ints: Dim[] = new Array(size);
  switch (dt) {
    case DataType.INT64:
    case DataType.UINT64:
      if (view) {
        for (let i = 0; i < size; i++) ints[i] = Number(view.getBigInt64(i * 8, true));
      } else {
        const src = dt === DataType.INT64 ? t.int64Data : t.uint64Data;
        (src ?? []).forEach((v, i) => (ints[i] = toNumber(v)));
      }
      break;
    case DataType.INT32:
    case DataType.UINT32:
    case DataType.INT16:
    case DataType.UINT16:
    case DataType.INT8:
    case DataType.UINT8:
    case DataType.BOOL: {
      if (view) {
        for (let i = 0; i < size; i++) {
          ints[i] =
            dt === DataType.INT32 ? view.getInt32(i * 4, true)
            : dt === DataType.UINT32 ? view.getUint32(i * 4, true)
            : dt === DataType.INT16 ? view.getInt16(i * 2, true)
            : dt === DataType.UINT16 ? view.getUint16(i * 2, true)
            : dt === DataType.INT8 ? view.getInt8(i)
            : view.getUint8(i);
        }
      } else {
        (t.int32Data ?? []).forEach((v, i) => (ints[i] = v));
      }
      break;
    }
    default:
      throw new ArcfaceError(`${where} has unsupported data type ${DataType[dt] ?? dt}`, file);
  }
  return intTensor(shape, ints, dt === DataType.BOOL ? 'bool' : 'int');
}

export type AttrValue = number | number[] | string | string[] | ConstTensor;

/** A node's attributes as plain values (ints/floats/strings/tensors), keyed by name. */
export function nodeAttributes(node: NodeProto, file: string): Map<string, AttrValue> {
  const out = new Map<string, AttrValue>();
  for (const a of node.attribute ?? []) {
    const name = a.name ?? '';
    switch (a.type) {
      case AttributeType.FLOAT: out.set(name, a.f ?? 0); break;
      case AttributeType.INT: out.set(name, toNumber(a.i)); break;
      case AttributeType.STRING: out.set(name, new TextDecoder().decode(a.s ?? new Uint8Array())); break;
      case AttributeType.TENSOR: out.set(name, tensorFromProto(a.t ?? {}, file)); break;
      case AttributeType.FLOATS: out.set(name, [...(a.floats ?? [])]); break;
      case AttributeType.INTS: out.set(name, (a.ints ?? []).map(toNumber)); break;
      case AttributeType.STRINGS: out.set(name, (a.strings ?? []).map((s) => new TextDecoder().decode(s))); break;
      default: break; // graphs, sparse tensors, type protos: no supported operator uses them
    }
  }
  return out;
}

/** Declared shape of a graph input/output: numbers, or null for symbolic/unknown dims. */
export function valueInfoShape(v: ValueInfoProto): Dim[] | undefined {
  const dims = v.type?.tensorType?.shape?.dim;
  if (!dims) return undefined;
  return dims.map((d) => (d.dimValue != null && toNumber(d.dimValue) > 0 ? toNumber(d.dimValue) : null));
}

/** Element type of a graph input/output (a DataType value). */
export function valueInfoElemType(v: ValueInfoProto): number {
  return v.type?.tensorType?.elemType ?? DataType.UNDEFINED;
}
