// Embedding with an `.onnx` face model through onnxruntime-node (native, faster than tfjs on CPU).
// Input layout comes from the graph (NCHW as torch exports, or NHWC); whether the graph normalises its
// own input is decided as insightface's onnx_helper does: a leading Sub/Mul by constants means raw pixels.
import * as ort from 'onnxruntime-node';
import { ArcfaceError } from '../errors.ts';
import { readOnnxModel, type GraphProto } from '../convert/onnx/reader.ts';
import { checkImageInput, inputTensorData, type Embedder } from './embedder.ts';
import type { RgbImage } from './image.ts';

const AFFINE_OPS = new Set(['Sub', 'Mul', 'Add', 'Div']);

/** True when the graph's first operation on `input` is Sub/Mul/Add/Div by a constant (normalisation built in). */
export function hasBuiltInNormalisation(graph: GraphProto, input: string): boolean {
  const constants = new Set<string>((graph.initializer ?? []).map((t) => t.name ?? ''));
  for (const n of graph.node ?? []) if (n.opType === 'Constant') for (const o of n.output ?? []) constants.add(o);
  const consumers = (graph.node ?? []).filter((n) => (n.input ?? []).includes(input));
  if (consumers.length !== 1) return false;
  const [node] = consumers;
  return AFFINE_OPS.has(node.opType ?? '') && (node.input ?? []).some((name) => name !== input && constants.has(name));
}

export async function loadOnnxEmbedder(file: string): Promise<Embedder> {
  const { model } = readOnnxModel(file); // a clear error for a non-ONNX file, before onnxruntime sees it
  let session: ort.InferenceSession;
  try {
    session = await ort.InferenceSession.create(file);
  } catch (e) {
    throw new ArcfaceError(`onnxruntime cannot load the model: ${(e as Error).message}`, file);
  }
  try {
    const inMeta = session.inputMetadata[0];
    const outMeta = session.outputMetadata[0];
    if (!inMeta?.isTensor || !outMeta?.isTensor) throw new ArcfaceError('the model has no tensor input or output', file);
    const s = inMeta.shape;
    if (s.length !== 4) throw new ArcfaceError(`the model input "${inMeta.name}" is [${s}]; a face model takes [batch, 3, S, S] images`, file);
    // NCHW unless the channels sit last.
    const layout: 'nchw' | 'nhwc' = s[1] !== 3 && s[3] === 3 ? 'nhwc' : 'nchw';
    const inputSize =
      layout === 'nchw'
        ? checkImageInput(file, s[2], s[3], s[1], `"${inMeta.name}" [${s}] (NCHW)`)
        : checkImageInput(file, s[1], s[2], s[3], `"${inMeta.name}" [${s}] (NHWC)`);
    const o = outMeta.shape;
    const embeddingSize = o[o.length - 1];
    if (o.length !== 2 || typeof embeddingSize !== 'number') {
      throw new ArcfaceError(`the model output "${outMeta.name}" is [${o}]; an embedding model outputs [batch, E]`, file);
    }
    const maxBatch = typeof s[0] === 'number' && s[0] > 0 ? s[0] : Infinity;
    const rawInput = hasBuiltInNormalisation(model.graph as GraphProto, inMeta.name);
    const run = async (crops: RgbImage[]): Promise<Float32Array[]> => {
      const dims = layout === 'nchw' ? [crops.length, 3, inputSize, inputSize] : [crops.length, inputSize, inputSize, 3];
      const x = new ort.Tensor('float32', inputTensorData(crops, inputSize, layout, rawInput), dims);
      const out = await session.run({ [inMeta.name]: x });
      const data = out[outMeta.name].data as Float32Array;
      return crops.map((_, i) => data.slice(i * embeddingSize, (i + 1) * embeddingSize));
    };
    return {
      file,
      format: 'onnx',
      inputSize,
      embeddingSize,
      rawInput,
      maxBatch,
      async embed(crops: RgbImage[]): Promise<Float32Array[]> {
        const result: Float32Array[] = [];
        // A graph with a fixed batch (e.g. 1) runs in chunks of exactly that size.
        const step = Number.isFinite(maxBatch) ? maxBatch : Math.max(crops.length, 1);
        for (let i = 0; i < crops.length; i += step) {
          const chunk = crops.slice(i, i + step);
          if (Number.isFinite(maxBatch) && chunk.length < maxBatch) {
            // Pad a short last chunk of a fixed-batch graph with copies; the extra rows are dropped.
            const padded = [...chunk, ...Array<RgbImage>(maxBatch - chunk.length).fill(chunk[0])];
            result.push(...(await run(padded)).slice(0, chunk.length));
          } else {
            result.push(...(await run(chunk)));
          }
        }
        return result;
      },
      async dispose() {
        await session.release();
      },
    };
  } catch (e) {
    await session.release();
    throw e;
  }
}
