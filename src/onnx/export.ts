// tfjs backbone -> ONNX file, in the shape insightface's torch2onnx produces: NCHW float input `data` with a
// dynamic batch dimension, raw embedding output, optional BN-into-conv folding, optional built-in
// (x - 127.5) / 127.5 normalisation for raw 0..255 input, and the backbone spec in metadata_props.
import type * as tf from '@tensorflow/tfjs';
import { ArcfaceError } from '../errors.ts';
import { nodeBuiltin } from '../node-builtins.ts';
import type { BackboneSpec } from '../models/factory.ts';
import { specOf } from '../models/io-memory.ts';
import { GraphBuilder, MAX_OPSET, MIN_OPSET, type ValueInfo } from './builder.ts';
import { emitInference } from './inference.ts';

export interface ExportOnnxOptions {
  /** Default-domain opset, 9..17 (default 11, as torch2onnx). */
  opset?: number;
  /** Fold every BatchNorm that directly follows a conv into that conv (default false: BNs kept as nodes). */
  foldBatchNorm?: boolean;
  /** Take raw RGB 0..255 input: a leading Sub 127.5, Mul 1/127.5 (default false: input already normalised). */
  embedNormalization?: boolean;
  /** Written to metadata; default the spec saved with the model, else one derived from its shapes. */
  spec?: BackboneSpec;
  /**
   * Layout of the graph input: `nchw` (default, as torch exports) or `nhwc` (tfjs's own layout; a
   * leading Transpose node turns it into NCHW inside the graph).
   */
  inputLayout?: 'nchw' | 'nhwc';
  /**
   * Rewrite the graph for onnxruntime's CPU engine (default false): each per-channel PReLU becomes
   * Relu and BatchNormalization pieces that its NCHWc layout transformer fuses into the convolutions
   * (mbf ~2x faster). Same function, but no longer the torch-shaped graph other tools recognise.
   */
  ortCpu?: boolean;
  /** Name of the graph output (default `embedding`). */
  outputName?: string;
  /** More metadata_props entries (e.g. the model card). */
  extraMetadata?: Record<string, string>;
  /** Used in error messages (default the model's name). */
  label?: string;
}

export const ONNX_INPUT_NAME = 'data';
export const ONNX_BATCH_DIM = 'batch';
export const NORMALISATION_OUTSIDE = '(x-127.5)/127.5, RGB, NCHW';
export const NORMALISATION_BUILT_IN = 'built in: raw RGB 0..255, NCHW';

function producerVersion(): string {
  try {
    const fs = nodeBuiltin('node:fs');
    return fs ? (JSON.parse(fs.readFileSync(new URL('../../package.json', import.meta.url), 'utf8')).version ?? '') : '';
  } catch {
    return '';
  }
}

/** The spec to record, checked against the model's real input and output sizes. */
function resolveExportSpec(model: tf.LayersModel, given: BackboneSpec | undefined, label: string): BackboneSpec {
  const inShape = model.inputs[0]!.shape;
  const outShape = model.outputs[0]!.shape;
  const inputSize = inShape[1];
  const embeddingSize = outShape[outShape.length - 1];
  const spec = given ?? specOf(model) ?? { network: model.name, embeddingSize: embeddingSize ?? 0, inputSize: inputSize ?? 0 };
  if (outShape.length === 2 && spec.embeddingSize !== embeddingSize) {
    throw new ArcfaceError(`the spec says embedding size ${spec.embeddingSize}, the model outputs ${embeddingSize}`, label);
  }
  if (spec.inputSize !== inputSize) throw new ArcfaceError(`the spec says input size ${spec.inputSize}, the model takes ${inputSize}`, label);
  return spec;
}

/** Serialises a tfjs backbone as an ONNX model (bytes of a ModelProto). */
export function exportOnnx(model: tf.LayersModel, opts: ExportOnnxOptions = {}): Uint8Array {
  const label = opts.label ?? `model "${model.name}"`;
  const opset = opts.opset ?? 11;
  if (!Number.isInteger(opset) || opset < MIN_OPSET || opset > MAX_OPSET) {
    throw new ArcfaceError(`ONNX opset ${opset} is not supported: choose ${MIN_OPSET}..${MAX_OPSET}`, label);
  }
  if (model.inputs.length !== 1) throw new ArcfaceError(`ONNX export needs a model with one input, it has ${model.inputs.length}`, label);
  const [, h, w, c] = model.inputs[0]!.shape;
  if (model.inputs[0]!.shape.length !== 4 || !h || !w || !c) {
    throw new ArcfaceError(`ONNX export needs a fixed-size image input [N,H,W,C], the model takes [${model.inputs[0]!.shape}]`, label);
  }
  const spec = resolveExportSpec(model, opts.spec, label);

  const nhwc = opts.inputLayout === 'nhwc';
  const g = new GraphBuilder(opset);
  const data = g.reserve(ONNX_INPUT_NAME);
  let input = data;
  if (opts.embedNormalization) {
    // The model-zoo spelling, which insightface's onnx_helper recognises as built-in normalisation.
    const centred = g.node('Sub', [data, g.floatInit('mean', [1], Float32Array.of(127.5))], 'normalise');
    input = g.node('Mul', [centred, g.floatInit('scale', [1], Float32Array.of(1 / 127.5))], 'normalise');
  }
  if (nhwc) input = g.node('Transpose', [input], 'nchw', { perm: [0, 3, 1, 2] });
  const outs = emitInference(g, model, { foldBatchNorm: opts.foldBatchNorm ?? false, preluAsRelu: opts.ortCpu ?? false, inputName: input, label });

  const outputName = opts.outputName ?? 'embedding';
  const outputs: ValueInfo[] = outs.map((o, i) => {
    let name = i === 0 ? outputName : `${outputName}_${i}`;
    if (o.name === data || outs.findIndex((p) => p.name === o.name) !== i) name = g.node('Identity', [o.name], name, {}, g.reserve(name));
    else g.rename(o.name, g.reserve(name));
    const dims = o.shape.length === 3 ? [o.shape[2]!, o.shape[0]!, o.shape[1]!] : o.shape;
    return { name, dims: [ONNX_BATCH_DIM, ...dims] };
  });
  const metadata: Record<string, string> = {
    network: spec.network,
    embedding_size: String(spec.embeddingSize),
    input_size: String(spec.inputSize),
    normalisation: (opts.embedNormalization ? NORMALISATION_BUILT_IN : NORMALISATION_OUTSIDE).replace('NCHW', nhwc ? 'NHWC' : 'NCHW'),
    batchnorm_folded: String(opts.foldBatchNorm ?? false),
    arcface_spec: JSON.stringify(spec),
    ...opts.extraMetadata,
  };
  return g.encode({
    graphName: spec.network,
    inputs: [{ name: data, dims: nhwc ? [ONNX_BATCH_DIM, h, w, c] : [ONNX_BATCH_DIM, c, h, w] }],
    outputs,
    metadata,
    producerVersion: producerVersion(),
    docString: `arcface-ts ${spec.network} backbone, ${spec.embeddingSize}-d raw embedding (not L2-normalised)`,
  });
}
