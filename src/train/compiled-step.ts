// A whole training step (backbone forward, margin head, backward) as ONE onnxruntime graph
// (src/onnx/training.ts compileTrainingStep) on the ort engines: the activations stay inside
// onnxruntime, which frees each after its last use, instead of crossing to JS between a forward and a
// backward session. trainStep (step.ts) takes this path where the backbone compiles and the head is
// one the graph writes (the reference ArcFace or CosFace, any sample rate); otherwise tf.variableGrads.
import * as tf from '@tensorflow/tfjs';
import type { PartialFC } from '../losses/partial-fc.ts';
import { OrtSession } from '../ort/binding.ts';
import { batchNormUpdatesFrom, compiledTimes, compiledTrainingEnabled, nchwcBlock, outputs, trainsLean, view, type BatchNormUpdate } from '../ort/train.ts';
import { compileTrainingStep, UnsupportedLayerError, type GraphParam, type TrainingStepGraph } from '../onnx/training.ts';

interface CompiledStep {
  graph: TrainingStepGraph;
  session: OrtSession;
  trainable: GraphParam[];
  /** The one-hot label input, reused from step to step (cleared each step). */
  onehot: Float32Array;
}

const cache = new WeakMap<tf.LayersModel, Map<string, CompiledStep | UnsupportedLayerError>>();

/** Why the head cannot be compiled (null when it can). */
function headUnsupported(head: PartialFC): string | null {
  if (head.margin.path === 'arcface' && head.margin.variant !== 'reference') return `the ${head.margin.variant} ArcFace variant`;
  return null;
}

function compiled(model: tf.LayersModel, head: PartialFC, batch: number, classes: number, frozen: boolean): CompiledStep | UnsupportedLayerError {
  let perModel = cache.get(model);
  if (!perModel) cache.set(model, (perModel = new Map()));
  const m = head.margin;
  // Static shapes throughout (ORT plans the memory of a static graph once); Partial FC's sample size is
  // the same every step unless a batch holds more distinct classes than it.
  const key = `${batch}|${classes}|${frozen}|${m.path}|${m.s}|${m.m2}|${m.m3}|${m.threshold}`;
  let c = perModel.get(key);
  if (!c) {
    try {
      const why = headUnsupported(head);
      if (why) throw new UnsupportedLayerError(why);
      // As the two-graph engine: big networks recompute PReLU outputs too (the least memory).
      const graph = compileTrainingStep(model, { batch, freezeBatchNorm: frozen, recompute: trainsLean(model) ? 'all' : 'bn', nchwcBlock: nchwcBlock() }, {
        classes,
        s: m.s,
        path: m.path,
        m2: m.m2,
        m3: m.m3,
        threshold: m.threshold,
      });
      // ORT's arena keeps its buffers from step to step (no fresh pages to fault in), without the
      // memory pattern (see OrtSession); ARCFACE_ORT_ARENA=0 frees everything after each step.
      const arena = process.env.ARCFACE_ORT_ARENA !== '0';
      c = {
        graph,
        session: new OrtSession(graph.model, { arena, memPattern: false }),
        trainable: graph.params.filter((p) => p.trainable),
        onehot: new Float32Array(batch * classes),
      };
    } catch (e) {
      if (!(e instanceof UnsupportedLayerError)) throw e;
      c = e;
    }
    perModel.set(key, c);
  }
  return c;
}

export interface CompiledStepResult {
  loss: number;
  /** Keyed by variable name, as tf.variableGrads gives them (the head's centres: dense, zero on unsampled rows). */
  grads: tf.NamedTensorMap;
}

/**
 * One step's loss and gradients from the compiled graph, or null where it does not apply (not an ort
 * engine, ARCFACE_COMPILED=0 or ARCFACE_STEP_GRAPH=0, a layer or head the compiler does not write). BN batch statistics are
 * pushed to `updates` (kept tensors) unless frozen.
 */
export function compiledTrainStep(
  model: tf.LayersModel,
  head: PartialFC,
  images: tf.Tensor4D,
  labels: Int32Array,
  updates: BatchNormUpdate[],
  frozen: boolean,
): CompiledStepResult | null {
  // ARCFACE_STEP_GRAPH=0: the forward and backward graphs with the head in tfjs (for comparisons).
  if (!compiledTrainingEnabled() || process.env.ARCFACE_STEP_GRAPH === '0') return null;
  const batch = images.shape[0];
  // Compiled (or found unsupported) before sampling: a fallback must find the sampling stream untouched.
  const classes = head.sampleSize(labels);
  const c = compiled(model, head, batch, classes, frozen);
  if (c instanceof UnsupportedLayerError) return null;
  const { graph, trainable } = c;
  // The classes of this step (sampling advances the head's stream exactly as its own forward).
  const sample = head.sample(labels);
  const k = sample.index ? sample.index.length : head.numClasses;
  if (k !== classes) throw new Error(`internal: Partial FC drew ${k} classes, sampleSize() said ${classes}`);
  const d = head.embeddingSize;
  const onehot = c.onehot.fill(0);
  for (let i = 0; i < batch; i++) {
    const l = sample.labels[i]!;
    if (l >= 0) onehot[i * k + l] = 1;
  }
  const index = sample.index ? tf.tensor1d(sample.index, 'int32') : null;
  const centres = index ? tf.gather(head.weight, index) : head.weight;
  // Allocate every output first (it may grow the wasm heap), then take views.
  const out = outputs([...trainable.map((p) => p.variable.shape as number[]), [k, d]]);
  const feeds: Record<string, { data: Float32Array; dims: readonly number[] }> = {
    [graph.input.name]: { data: view(images), dims: graph.input.dims },
    [graph.head.weight]: { data: view(centres), dims: [k, d] },
    [graph.head.onehot]: { data: onehot, dims: [batch, k] },
  };
  for (const p of graph.params) {
    const t = p.variable.read();
    feeds[p.name] = { data: view(t), dims: t.shape };
  }
  const arrays = out.arrays();
  const fetches: Record<string, { data?: Float32Array; dims: readonly number[] }> = { [graph.head.loss]: { dims: [1] } };
  trainable.forEach((p, i) => (fetches[`grad:${p.name}`] = { data: arrays[i]!, dims: p.variable.shape as number[] }));
  fetches[graph.head.weightGrad] = { data: arrays[trainable.length]!, dims: [k, d] };
  for (const bn of graph.batchNorms) {
    fetches[bn.mean] = { dims: [bn.channels] };
    fetches[bn.variance] = { dims: [bn.channels] };
  }
  const t0 = performance.now();
  const res = c.session.run(feeds, fetches);
  compiledTimes.stepMs += performance.now() - t0;
  if (index) centres.dispose();
  if (!frozen) updates.push(...batchNormUpdatesFrom(graph.batchNorms, res));
  const grads: tf.NamedTensorMap = {};
  trainable.forEach((p, i) => (grads[(p.variable.read() as tf.Variable).name] = out.tensors[i]!));
  const dCentres = out.tensors[trainable.length]!;
  if (index) {
    grads[head.weight.name] = tf.tidy(() => tf.scatterND(index.reshape([k, 1]), dCentres, head.weight.shape));
    tf.dispose([dCentres, index]);
  } else {
    grads[head.weight.name] = dCentres;
  }
  return { loss: res[graph.head.loss]![0]!, grads };
}
