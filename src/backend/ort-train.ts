// The compiled training forward: a whole backbone as ONE tfjs op whose forward and backward are the
// two onnxruntime graphs of src/backend/ort-train-graph.ts. tfjs sees the image, the trainable
// weights (so tf.variableGrads reaches them) and the embedding; the activations the backward needs
// stay in plain Float32Arrays held by the op's gradient closure, outside any tfjs heap. Used by
// trainForward on the ort engines (src/train/forward.ts); sessions are cached per model, batch size
// and BN mode.
import * as tf from '@tensorflow/tfjs';
import { OrtSession, ortAvailable } from './ort-binding.ts';
import { compileTrainingGraphs, UnsupportedLayerError, type TrainingGraphs } from './ort-train-graph.ts';

/** What trainForward records per BatchNorm (same shape as src/train/forward.ts's BatchNormUpdate). */
export interface CompiledBatchNormUpdate {
  layer: tf.layers.Layer;
  mean: tf.Tensor1D;
  variance: tf.Tensor1D;
}

interface Compiled {
  graphs: TrainingGraphs;
  forward: OrtSession;
  backward: OrtSession;
}

/** Milliseconds spent in the compiled graphs since the process started (bench/train.ts's profile). */
export const compiledTimes = { forwardMs: 0, backwardMs: 0 };

const cache = new WeakMap<tf.LayersModel, Map<string, Compiled | UnsupportedLayerError>>();

/** The backends on which trainForward runs backbones as compiled graphs (unless ARCFACE_COMPILED=0). */
export const COMPILED_TRAINING_BACKENDS = ['ort', 'ort-cpu'];

export function compiledTrainingEnabled(): boolean {
  return process.env.ARCFACE_COMPILED !== '0' && COMPILED_TRAINING_BACKENDS.includes(tf.getBackend()) && ortAvailable();
}

function compiled(model: tf.LayersModel, batch: number, frozen: boolean): Compiled | UnsupportedLayerError {
  let perModel = cache.get(model);
  if (!perModel) cache.set(model, (perModel = new Map()));
  const key = `${batch}|${frozen}`;
  let c = perModel.get(key);
  if (!c) {
    try {
      const graphs = compileTrainingGraphs(model, { batch, freezeBatchNorm: frozen, filterGrad: (process.env.ARCFACE_FILTER_GRAD as 'unfold' | 'dilated' | undefined) ?? undefined });
      // No memory arena: it would keep each graph's peak (GBs for r50) reserved between steps; freed
      // buffers go back to the allocator instead, at no measured cost in speed (bench/train.ts).
      const opts = { arena: false };
      c = { graphs, forward: new OrtSession(graphs.forward, opts), backward: new OrtSession(graphs.backward, opts) };
    } catch (e) {
      if (!(e instanceof UnsupportedLayerError)) throw e;
      c = e;
    }
    perModel.set(key, c);
  }
  return c;
}

/** Frees the ORT sessions compiled for `model` (they are otherwise kept for the model's lifetime). */
export function releaseCompiledTraining(model: tf.LayersModel): void {
  const perModel = cache.get(model);
  if (!perModel) return;
  for (const c of perModel.values()) {
    if (c instanceof UnsupportedLayerError) continue;
    c.forward.dispose();
    c.backward.dispose();
  }
  cache.delete(model);
}

/** Why `model` cannot run compiled (null when it can). */
export function compiledTrainingUnsupported(model: tf.LayersModel, batch: number, frozen = false): string | null {
  const c = compiled(model, batch, frozen);
  return c instanceof UnsupportedLayerError ? c.message : null;
}

function f32(t: tf.Tensor): Float32Array {
  const d = t.dataSync();
  return d instanceof Float32Array ? d : Float32Array.from(d as ArrayLike<number>);
}

/**
 * The training-mode forward of `model` on `x` as one differentiable op, or null where the model has a
 * layer the compiler does not handle. BN batch statistics are pushed to `updates` (kept tensors).
 */
export function compiledTrainForward(
  model: tf.LayersModel,
  x: tf.Tensor,
  updates: CompiledBatchNormUpdate[] | null,
  frozen: boolean,
): tf.Tensor | null {
  const batch = x.shape[0]!;
  const c = compiled(model, batch, frozen);
  if (c instanceof UnsupportedLayerError) return null;
  const { graphs } = c;
  const trainable = graphs.params.filter((p) => p.trainable);
  const fixed = graphs.params.filter((p) => !p.trainable);
  const inputs = [x, ...trainable.map((p) => p.variable.read())];
  const backwardReads = new Set(graphs.backwardInputs);

  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const ts = args.slice(0, inputs.length) as tf.Tensor[];
    const feeds: Record<string, { data: Float32Array; dims: readonly number[] }> = {
      [graphs.input.name]: { data: f32(ts[0]!), dims: graphs.input.dims },
    };
    trainable.forEach((p, i) => (feeds[p.name] = { data: f32(ts[i + 1]!), dims: p.variable.shape as number[] }));
    for (const p of fixed) feeds[p.name] = { data: f32(p.variable.read()), dims: p.variable.shape as number[] };
    const outputs: Record<string, { data?: Float32Array; dims: readonly number[] }> = { [graphs.output.name]: { dims: graphs.output.dims } };
    for (const bn of graphs.batchNorms) {
      outputs[bn.mean] = { dims: [bn.channels] };
      outputs[bn.variance] = { dims: [bn.channels] };
    }
    // Saved activations go straight into arrays we own: ORT writes them in place instead of into its
    // arena (which would otherwise hold a second copy of every saved activation between steps).
    for (const s of graphs.saved) outputs[s.name] = { data: new Float32Array(s.size), dims: s.dims };
    const t0 = performance.now();
    const out = c.forward.run(feeds, outputs);
    compiledTimes.forwardMs += performance.now() - t0;
    if (updates) {
      for (const bn of graphs.batchNorms) {
        const v = out[bn.variance]!;
        const k = bn.count / Math.max(bn.count - 1, 1);
        const unbiased = new Float32Array(v.length);
        for (let i = 0; i < v.length; i++) unbiased[i] = v[i]! * k;
        updates.push({ layer: bn.layer, mean: tf.keep(tf.tensor1d(out[bn.mean]!)), variance: tf.keep(tf.tensor1d(unbiased)) });
      }
    }
    // The backward's inputs: saved activations and the weights, held until the gradient runs once.
    let held: Record<string, { data: Float32Array; dims: readonly number[] }> | null = {};
    for (const s of graphs.saved) held[s.name] = { data: out[s.name]!, dims: s.dims };
    for (const [k, v] of Object.entries(feeds)) if (backwardReads.has(k)) held[k] = v;
    const value = tf.tensor(out[graphs.output.name]!, graphs.output.dims);
    return {
      value,
      gradFunc: (dy: tf.Tensor) => {
        if (!held) throw new Error('compiled backbone: the gradient of one forward pass was asked for twice');
        const bfeeds = { ...held, [`grad:${graphs.output.name}`]: { data: f32(dy), dims: graphs.output.dims } };
        held = null;
        const want: Record<string, { dims: readonly number[] }> = {};
        for (const p of trainable) want[`grad:${p.name}`] = { dims: p.variable.shape as number[] };
        const t1 = performance.now();
        const g = c.backward.run(bfeeds, want);
        compiledTimes.backwardMs += performance.now() - t1;
        return [tf.zerosLike(ts[0]!), ...trainable.map((p) => tf.tensor(g[`grad:${p.name}`]!, p.variable.shape as number[]))];
      },
    };
  });
  return op(...inputs) as tf.Tensor;
}
