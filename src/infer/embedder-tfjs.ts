// Embedding with a tfjs layers model (a saved directory, or a `.pth` imported on the fly). Input NHWC.
import * as tf from '@tensorflow/tfjs';
import { compileIfEnabled, type CompiledBackbone } from '../ort/infer.ts';
import { ArcfaceError } from '../errors.ts';
import { resolveModelJson } from '../convert/load-backbone.ts';
import { importTorch } from '../convert/import-torch.ts';
import { loadModel, ModelFileError } from '../models/io.ts';
import { adaptStandardInput, inputConventionOf, isRawInput } from '../models/input-convention.ts';
import { checkImageInput, inputTensorData, type Embedder } from './embedder.ts';
import type { RgbImage } from './image.ts';

/** Wraps a loaded layers model; `file` names it in errors. Takes ownership (dispose frees it). */
export function tfjsEmbedder(model: tf.LayersModel, file: string, format: 'tfjs' | 'pth' = 'tfjs'): Embedder {
  if (model.inputs.length !== 1) throw new ArcfaceError(`the model has ${model.inputs.length} inputs; a face model has one image input`, file);
  const shape = model.inputs[0].shape;
  if (shape.length !== 4) throw new ArcfaceError(`the model input is [${shape}]; a face model takes [batch, S, S, 3] images`, file);
  const inputSize = checkImageInput(file, shape[1], shape[2], shape[3], `[${shape.map((d) => d ?? 'batch')}] (NHWC)`);
  const out = model.outputs[0].shape;
  const embeddingSize = out[out.length - 1];
  if (out.length !== 2 || typeof embeddingSize !== 'number') {
    throw new ArcfaceError(`the model output is [${out}]; an embedding model outputs [batch, E]`, file);
  }
  // The model's input convention (metadata): raw pixels for graphs with the normalisation inside,
  // another mean/std or BGR for models converted from such graphs.
  const convention = inputConventionOf(model);
  const rawInput = isRawInput(convention) && convention.order === 'RGB';
  const prepare = (crops: RgbImage[]): Float32Array => {
    const data = inputTensorData(crops, inputSize, 'nhwc', rawInput);
    if (!rawInput) adaptStandardInput(data, convention);
    return data;
  };
  // On the ort engines the backbone runs as one compiled onnxruntime graph (src/ort/infer.ts),
  // compiled at the first call; elsewhere, or for a model the exporter cannot express, model.predict.
  let compiled: CompiledBackbone | null | undefined;
  return {
    file,
    format,
    inputSize,
    embeddingSize,
    rawInput,
    maxBatch: Infinity,
    async embed(crops: RgbImage[]): Promise<Float32Array[]> {
      if (crops.length === 0) return [];
      if (compiled === undefined) compiled = compileIfEnabled(model, { cache: false });
      if (compiled) {
        const flat = compiled.run(prepare(crops), crops.length);
        return crops.map((_, i) => flat.slice(i * embeddingSize, (i + 1) * embeddingSize));
      }
      const y = tf.tidy(() => {
        const x = tf.tensor4d(prepare(crops), [crops.length, inputSize, inputSize, 3]);
        const o = model.predict(x);
        return Array.isArray(o) ? o[0] : o;
      });
      const flat = (await y.data()) as Float32Array;
      y.dispose();
      return crops.map((_, i) => flat.slice(i * embeddingSize, (i + 1) * embeddingSize));
    },
    async dispose() {
      compiled?.dispose();
      model.dispose();
    },
  };
}

export async function loadTfjsEmbedder(file: string, format: 'tfjs' | 'pth'): Promise<Embedder> {
  if (format === 'pth') return tfjsEmbedder(importTorch(file).model, file, 'pth');
  let model: tf.LayersModel;
  try {
    // A training run or checkpoint directory stands for its model, as everywhere else.
    model = await loadModel(resolveModelJson(file) ?? file);
  } catch (e) {
    if (e instanceof ModelFileError) throw new ArcfaceError(e.message);
    throw new ArcfaceError(`cannot load the tfjs model: ${(e as Error).message}`, file);
  }
  try {
    return tfjsEmbedder(model, file);
  } catch (e) {
    model.dispose();
    throw e;
  }
}
