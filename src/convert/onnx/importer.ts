// ONNX graph -> tf.LayersModel (functional API, NHWC inside). Walks the nodes in order, folds
// constant subgraphs (shape arithmetic, shared initialisers), and maps every other node onto
// built-in tfjs layers (the OnnxOp layer only where none fits). Unsupported operators are an
// ArcfaceError naming the file, the node and the operator.
import * as tf from '@tensorflow/tfjs';
import { ArcfaceError } from '../../errors.ts';
import type { ConstTensor, Dim } from './const-tensor.ts';
import { floatData } from './const-tensor.ts';
import { ConvertContext, type SymValue, type Value, constValue, sanitiseName, symValue } from './context.ts';
import { channelsLastPerm, identityPerm, inLayout, onnxShape } from './layout.ts';
import { convertConv } from './ops-conv.ts';
import { convertBatchNorm, convertBinary, convertPRelu, convertRelu } from './ops-elementwise.ts';
import { convertGemm, convertMatMul } from './ops-linear.ts';
import { convertGlobalAveragePool, convertPool } from './ops-pool.ts';
import { convertConcat, convertFlatten, convertReshape, convertTranspose, convertUnsqueezeSqueeze } from './ops-tensor.ts';
import {
  DataType,
  type GraphProto,
  nodeAttributes,
  readOnnxModel,
  tensorFromProto,
  toNumber,
  valueInfoElemType,
  valueInfoShape,
} from './reader.ts';
import { FOLDABLE_OPS, evalConstNode, shapeTensor } from './static-eval.ts';
import './onnx-op-layer.ts';

type Converter = (ctx: ConvertContext, inputs: (Value | undefined)[], outputCount: number) => Value[];

const passThrough: Converter = (ctx, inputs, outputCount) => {
  const x = ctx.sym(inputs[0], 'input');
  if (ctx.opType === 'Dropout') {
    if (outputCount > 1) throw ctx.error('the mask output of Dropout is not supported');
    const training = inputs[2];
    if (training?.kind === 'const' && training.c.data[0]) throw ctx.error('training-mode Dropout is not supported');
  }
  return [x];
};

const CONVERTERS: Record<string, Converter> = {
  Conv: convertConv,
  BatchNormalization: convertBatchNorm,
  PRelu: convertPRelu,
  Relu: convertRelu,
  Add: convertBinary,
  Sub: convertBinary,
  Mul: convertBinary,
  Div: convertBinary,
  Flatten: convertFlatten,
  Reshape: convertReshape,
  Gemm: convertGemm,
  MatMul: convertMatMul,
  Identity: passThrough,
  Dropout: passThrough,
  MaxPool: convertPool,
  AveragePool: convertPool,
  GlobalAveragePool: convertGlobalAveragePool,
  Concat: convertConcat,
  Transpose: convertTranspose,
  Unsqueeze: convertUnsqueezeSqueeze,
  Squeeze: convertUnsqueezeSqueeze,
};

/** Operators the importer converts (the last few only as constant/shape arithmetic). */
export const SUPPORTED_OPS: ReadonlySet<string> = new Set([...Object.keys(CONVERTERS), ...FOLDABLE_OPS]);

export interface ImportOnnxOptions {
  /** Name for error messages when bytes are given. */
  name?: string;
  /** Graph inputs to treat as constants, by name (e.g. the extra inputs of ONNX test cases). */
  constants?: Record<string, ConstTensor>;
  /** Name of the tfjs model (default: the ONNX graph name). */
  modelName?: string;
}

export type ValueLayout = 'nhwc' | 'onnx';

export interface ImportedOnnx {
  model: tf.LayersModel;
  /** ONNX name of the (first) graph input. */
  inputName: string;
  /** Declared ONNX shape of that input (NCHW for images); null = dynamic (the batch). */
  inputShapeNCHW: Dim[];
  /** 'nhwc' when the ONNX input is a 4-D NCHW map, so the tfjs model takes [batch, H, W, C]. */
  inputLayout: ValueLayout;
  inputNames: string[];
  outputNames: string[];
  /** Per output: 4-D feature maps come out NHWC, everything else in the ONNX layout. */
  outputLayouts: ValueLayout[];
  /** The graph starts with Sub/Mul/Add/Div by constants: it takes raw (e.g. 0..255) pixels. */
  normalisationBuiltIn: boolean;
  /** When those leading ops use scalars only: the graph computes input * scale + offset first. */
  inputAffine?: { scale: number; offset: number };
  opsetVersion: number;
  producer: string;
  /** ONNX metadata_props. */
  metadata: Record<string, string>;
  /** Number of OnnxOp (custom) layers; 0 means the saved model loads with plain tfjs. */
  customLayerCount: number;
}

function opsetOf(graphOpsets: { domain?: string | null; version?: unknown }[]): number {
  const def = graphOpsets.find((o) => !o.domain || o.domain === 'ai.onnx');
  return def ? toNumber(def.version as number) : 0;
}

/** Converts an ONNX model (path or bytes) into a tfjs layers model. */
export async function importOnnx(pathOrBytes: string | Uint8Array, opts: ImportOnnxOptions = {}): Promise<ImportedOnnx> {
  const { model: proto, file } = readOnnxModel(pathOrBytes, opts.name);
  const graph = proto.graph as GraphProto;
  const ctx = new ConvertContext(file);
  const values = new Map<string, Value>();
  for (const init of graph.initializer ?? []) values.set(init.name ?? '', constValue(tensorFromProto(init, file)));

  const inputs: { name: string; value: SymValue; shape: Dim[]; layout: ValueLayout }[] = [];
  for (const vi of graph.input ?? []) {
    const name = vi.name ?? '';
    if (opts.constants?.[name]) {
      values.set(name, constValue(opts.constants[name]));
      continue;
    }
    if (values.has(name)) continue; // initializers listed as inputs (IR < 4)
    const shape = valueInfoShape(vi);
    if (!shape || shape.length === 0) throw new ArcfaceError(`graph input "${name}" has no shape (a layers model needs its rank)`, file);
    const elem = valueInfoElemType(vi);
    if (elem !== DataType.FLOAT) {
      throw new ArcfaceError(`graph input "${name}" has type ${DataType[elem] ?? elem}; only float32 inputs are supported`, file);
    }
    if (shape.length === 1) {
      throw new ArcfaceError(`graph input "${name}" is 1-D: a layers model needs a feature axis besides the batch axis`, file);
    }
    const batchless = shape.slice(1);
    const image = shape.length === 4;
    const perm = image ? channelsLastPerm(4) : identityPerm(shape.length);
    const tfShape = perm.slice(1).map((a) => batchless[a - 1]);
    let t: tf.SymbolicTensor;
    try {
      t = tf.input({ shape: tfShape, name: uniqueInputName(name, inputs.length) });
    } catch (e) {
      throw new ArcfaceError(`graph input "${name}" cannot be a model input: ${(e as Error).message}`, file);
    }
    const value = symValue(t, perm);
    values.set(name, value);
    inputs.push({ name, value, shape: [null, ...batchless], layout: image ? 'nhwc' : 'onnx' });
  }
  if (inputs.length === 0) throw new ArcfaceError('the graph has no non-constant input', file);

  const opset = opsetOf(proto.opsetImport ?? []);
  (graph.node ?? []).forEach((node, index) => {
    const attrs = nodeAttributes(node, file);
    ctx.begin(node, attrs, index);
    try {
      const op = node.opType ?? '';
      if (node.domain && node.domain !== 'ai.onnx') throw ctx.error(`operator domain "${node.domain}" is not supported`);
      const ins = (node.input ?? []).map((n) => {
        if (!n) return undefined;
        const v = values.get(n);
        if (!v) throw ctx.error(`input "${n}" is not produced by any earlier node`);
        return v;
      });
      const outNames = node.output ?? [];
      const outputCount = outNames.filter((n, i) => n && (i === 0 || isUsed(graph, n))).length;
      let outs: Value[];
      const present = ins.filter((v): v is Value => v !== undefined);
      if (op === 'Shape' && present[0]?.kind === 'sym') {
        const st = ctx.int('start', 0);
        outs = [constValue(shapeTensor(onnxShape(present[0]), st, ctx.has('end') ? ctx.int('end', 0) : undefined))];
      } else if (FOLDABLE_OPS.has(op) && present.every((v) => v.kind === 'const')) {
        outs = evalConstNode(ctx, ins.map((v) => (v?.kind === 'const' ? v.c : undefined))).map(constValue);
      } else {
        const convert = Object.hasOwn(CONVERTERS, op) ? CONVERTERS[op] : undefined;
        if (!convert && FOLDABLE_OPS.has(op)) {
          throw ctx.error(`"${op}" is only supported on constants and shape values, not on tensors computed from the input`);
        }
        if (!convert) throw ctx.error(`unsupported ONNX operator "${op}"`);
        outs = convert(ctx, ins, outputCount);
      }
      outs.forEach((v, i) => {
        if (outNames[i]) values.set(outNames[i], v);
      });
    } catch (e) {
      // tfjs' own checks (layer arguments, shape inference) stand behind ours: name the node either way.
      if (e instanceof ArcfaceError) throw e;
      throw ctx.error(`cannot convert: ${(e as Error).message}`);
    }
  });

  const outputNames: string[] = [];
  const outputLayouts: ValueLayout[] = [];
  const outputs: tf.SymbolicTensor[] = [];
  for (const vo of graph.output ?? []) {
    const name = vo.name ?? '';
    const v = values.get(name);
    if (!v) throw new ArcfaceError(`graph output "${name}" is not produced by any node`, file);
    if (v.kind === 'const') throw new ArcfaceError(`graph output "${name}" is a constant (it does not depend on the input)`, file);
    const rank = onnxShape(v).length;
    const layout: ValueLayout = rank === 4 && !v.flat ? 'nhwc' : 'onnx';
    ctx.begin({ name: `output_${name}`, opType: 'Output' }, new Map(), 0);
    try {
      outputs.push(inLayout(ctx, v, layout === 'nhwc' ? channelsLastPerm(4) : identityPerm(rank)));
    } catch (e) {
      if (e instanceof ArcfaceError) throw e;
      throw ctx.error(`cannot convert: ${(e as Error).message}`);
    }
    outputNames.push(name);
    outputLayouts.push(layout);
  }
  const modelName = sanitiseName(opts.modelName ?? (graph.name || 'onnx_model'));
  let model: tf.LayersModel;
  try {
    model = tf.model({ inputs: inputs.map((i) => i.value.t), outputs, name: modelName });
  } catch (e) {
    throw new ArcfaceError(`cannot build the model from the graph: ${(e as Error).message}`, file);
  }
  const normalisation = detectNormalisation(graph, inputs[0].name, values);
  const metadata: Record<string, string> = {};
  for (const p of proto.metadataProps ?? []) metadata[p.key ?? ''] = p.value ?? '';
  const result: ImportedOnnx = {
    model,
    inputName: inputs[0].name,
    inputShapeNCHW: inputs[0].shape,
    inputLayout: inputs[0].layout,
    inputNames: inputs.map((i) => i.name),
    outputNames,
    outputLayouts,
    normalisationBuiltIn: normalisation.builtIn,
    ...(normalisation.affine ? { inputAffine: normalisation.affine } : {}),
    opsetVersion: opset,
    producer: [proto.producerName, proto.producerVersion].filter(Boolean).join(' '),
    metadata,
    customLayerCount: ctx.customLayerCount,
  };
  model.setUserDefinedMetadata({
    onnx: {
      inputName: result.inputName,
      inputShapeNCHW: result.inputShapeNCHW,
      inputLayout: result.inputLayout,
      outputNames,
      outputLayouts,
      normalisationBuiltIn: result.normalisationBuiltIn,
      ...(result.inputAffine ? { inputAffine: result.inputAffine } : {}),
      opsetVersion: opset,
      producer: result.producer,
    },
  });
  return result;
}

function uniqueInputName(name: string, index: number): string {
  return `${sanitiseName(name)}${index > 0 ? `_${index}` : ''}`;
}

function isUsed(graph: GraphProto, name: string): boolean {
  return (graph.node ?? []).some((n) => (n.input ?? []).includes(name)) || (graph.output ?? []).some((o) => o.name === name);
}

const AFFINE_OPS = new Set(['Sub', 'Mul', 'Add', 'Div']);

/**
 * insightface's onnx_helper rule: a leading Sub/Mul (by constants) means the normalisation is in
 * the graph. Scalar chains are folded into one input*scale + offset.
 */
function detectNormalisation(
  graph: GraphProto,
  inputName: string,
  values: Map<string, Value>,
): { builtIn: boolean; affine?: { scale: number; offset: number } } {
  let current = inputName;
  let scale = 1;
  let offset = 0;
  let steps = 0;
  let scalarOnly = true;
  // At most one step per node: a node whose output reuses its input's name must not loop forever.
  for (let guard = 0; guard <= (graph.node ?? []).length; guard++) {
    const consumers = (graph.node ?? []).filter((n) => (n.input ?? []).includes(current));
    if (consumers.length !== 1 || !AFFINE_OPS.has(consumers[0].opType ?? '')) break;
    const node = consumers[0];
    const other = (node.input ?? []).find((n) => n !== current);
    const v = other ? values.get(other) : undefined;
    if (!v || v.kind !== 'const') break;
    const data = floatData(v.c);
    if (!data) break;
    if (data.length !== 1) scalarOnly = false;
    const c = data[0];
    const first = (node.input ?? [])[0] === current;
    switch (node.opType) {
      case 'Add': offset += c; break;
      case 'Sub': if (first) offset -= c; else { scale = -scale; offset = c - offset; } break;
      case 'Mul': scale *= c; offset *= c; break;
      case 'Div': if (first) { scale /= c; offset /= c; } else scalarOnly = false; break;
    }
    steps++;
    current = (node.output ?? [])[0] ?? '';
  }
  if (steps === 0) return { builtIn: false };
  return scalarOnly ? { builtIn: true, affine: { scale, offset } } : { builtIn: true };
}
