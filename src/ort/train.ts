// The compiled training forward: a whole backbone as ONE tfjs op whose forward and backward are the
// two onnxruntime graphs of src/onnx/training.ts. tfjs sees the image, the trainable
// weights (so tf.variableGrads reaches them) and the embedding; the activations the backward needs
// stay in plain Float32Arrays held by the op's gradient closure, outside any tfjs heap. Used by
// trainForward on the ort engines (src/train/forward.ts); sessions are cached per model, batch size
// and BN mode.
import * as tf from '@tensorflow/tfjs';
import { OrtSession, ortAvailable, ortNchwcBlockSize } from './binding.ts';
import { backendCaps } from '../backend/caps.ts';
import { compileTrainingGraphs, UnsupportedLayerError, type GraphBatchNorm, type GraphParam, type TrainingGraphs } from '../onnx/training.ts';

/** A BatchNorm layer's batch statistics from one forward pass, to fold into its running statistics. */
export interface BatchNormUpdate {
  layer: tf.layers.Layer;
  mean: tf.Tensor1D;
  /** Unbiased (n / (n - 1)) batch variance, as torch uses for running_var. */
  variance: tf.Tensor1D;
}

interface Compiled {
  graphs: TrainingGraphs;
  forward: OrtSession;
  backward: OrtSession;
  /** Saved-activation buffers free for the next forward (returned by each backward). */
  pool: Map<string, Float32Array>[];
  /** Memory-lean mode (big networks): saved activations go into pooled buffers we own. */
  lean: boolean;
  /** The graphs' weights split by whether they get a gradient (op inputs) or are only read. */
  trainable: GraphParam[];
  fixed: GraphParam[];
  /** Names the backward graph takes. */
  backwardReads: Set<string>;
}

/** Milliseconds spent in the compiled graphs since the process started (bench/train.ts's profile). */
export const compiledTimes = { forwardMs: 0, backwardMs: 0, stepMs: 0 };

/** Networks with at least this much weight (r50 and up; r18 has 92 MB) train memory-lean. */
const LEAN_MIN_WEIGHT_BYTES = 128 * 2 ** 20;

/** Whether `model` trains memory-lean (PReLU outputs recomputed): its weight size, or ARCFACE_ORT_LEAN=1/0. */
export function trainsLean(model: tf.LayersModel): boolean {
  const env = process.env.ARCFACE_ORT_LEAN;
  if (env === '1' || env === '0') return env === '1';
  const weightBytes = model.trainableWeights.reduce((a, w) => a + 4 * w.shape.reduce((x: number, y) => x * (y ?? 1), 1), 0);
  return weightBytes >= LEAN_MIN_WEIGHT_BYTES;
}

/** The BN running-statistic updates from a graph's batch mean and biased variance outputs (kept tensors). */
export function batchNormUpdatesFrom(batchNorms: readonly GraphBatchNorm[], out: Record<string, Float32Array>): BatchNormUpdate[] {
  return batchNorms.map((bn) => {
    const v = out[bn.variance]!;
    const k = bn.count / Math.max(bn.count - 1, 1);
    const unbiased = new Float32Array(v.length);
    for (let i = 0; i < v.length; i++) unbiased[i] = v[i]! * k;
    return { layer: bn.layer, mean: tf.keep(tf.tensor1d(out[bn.mean]!)), variance: tf.keep(tf.tensor1d(unbiased)) };
  });
}

const cache = new WeakMap<tf.LayersModel, Map<string, Compiled | UnsupportedLayerError>>();

/** The NCHWc block the training graphs use: onnxruntime's on this CPU, or none with ARCFACE_ORT_NCHWC=0. */
export function nchwcBlock(): number {
  return process.env.ARCFACE_ORT_NCHWC === '0' ? 0 : ortNchwcBlockSize();
}

/** Whether trainForward runs backbones as compiled graphs: on the ort engines, unless ARCFACE_COMPILED=0. */
export function compiledTrainingEnabled(): boolean {
  // The backend first: a browser has no `process`.
  return backendCaps().ortEngine && process.env.ARCFACE_COMPILED !== '0' && ortAvailable();
}

function compiled(model: tf.LayersModel, batch: number, frozen: boolean): Compiled | UnsupportedLayerError {
  let perModel = cache.get(model);
  if (!perModel) cache.set(model, (perModel = new Map()));
  const key = `${batch}|${frozen}`;
  let c = perModel.get(key);
  if (!c) {
    try {
      // Big-weight networks (r50 and up) run memory-lean: their steps are conv-bound, so recomputing
      // PReLU outputs and running without ORT's arena cost little time (r50 b16: same speed, ~1.3 GB
      // less RSS without the arena). Small ones (r18, mbf) keep both: ORT's arena saves re-faulting
      // fresh pages every step (mbf b32: 2x faster), and a recomputed PReLU is 3 memory passes.
      // ARCFACE_ORT_LEAN=1/0 and ARCFACE_ORT_ARENA=1/0 force either.
      const lean = trainsLean(model);
      const graphs = compileTrainingGraphs(model, { batch, freezeBatchNorm: frozen, recompute: lean ? 'all' : 'bn', nchwcBlock: nchwcBlock() });
      const env = process.env.ARCFACE_ORT_ARENA;
      const opts = { arena: env === '1' || (env !== '0' && !lean) };
      c = {
        graphs,
        forward: new OrtSession(graphs.forward, opts),
        backward: new OrtSession(graphs.backward, opts),
        pool: [],
        lean,
        trainable: graphs.params.filter((p) => p.trainable),
        fixed: graphs.params.filter((p) => !p.trainable),
        backwardReads: new Set(graphs.backwardInputs),
      };
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

/** The wasm backend's zero-copy heap access (BackendWasm is not exported as a type). */
interface HeapBackend extends tf.KernelBackend {
  typedArrayFromHeap(t: tf.TensorInfo): Float32Array;
  makeOutput(shape: number[], dtype: 'float32'): tf.TensorInfo;
}

const isHeap = (b: tf.KernelBackend): b is HeapBackend => typeof (b as Partial<HeapBackend>).typedArrayFromHeap === 'function';

/**
 * A tensor's float32 data without copying: a view of the wasm heap (valid until the heap next grows:
 * take views only after the last allocation), or the cpu backend's own array.
 */
export function view(t: tf.Tensor): Float32Array {
  const backend = tf.backend();
  if (isHeap(backend)) return backend.typedArrayFromHeap(t);
  const d = t.dataSync();
  return d instanceof Float32Array ? d : Float32Array.from(d as ArrayLike<number>);
}

/** New tensors of `shapes` on the active backend, with arrays ORT can write straight into. */
export function outputs(shapes: number[][]): { tensors: tf.Tensor[]; arrays: () => Float32Array[] } {
  const backend = tf.backend();
  if (isHeap(backend)) {
    const infos = shapes.map((s) => backend.makeOutput(s, 'float32'));
    return {
      tensors: infos.map((i) => tf.engine().makeTensorFromTensorInfo(i, backend)),
      arrays: () => infos.map((i) => backend.typedArrayFromHeap(i)),
    };
  }
  // cpu: the tensor adopts the array (no copy).
  const arrays = shapes.map((s) => new Float32Array(s.reduce((a, b) => a * b, 1)));
  return { tensors: arrays.map((a, i) => tf.tensor(a, shapes[i]!)), arrays: () => arrays };
}

/**
 * The training-mode forward of `model` on `x` as one differentiable op, or null where the model has a
 * layer the compiler does not handle. BN batch statistics are pushed to `updates` (kept tensors).
 */
export function compiledTrainForward(
  model: tf.LayersModel,
  x: tf.Tensor,
  updates: BatchNormUpdate[] | null,
  frozen: boolean,
): tf.Tensor | null {
  const batch = x.shape[0]!;
  const c = compiled(model, batch, frozen);
  if (c instanceof UnsupportedLayerError) return null;
  const { graphs } = c;
  const { trainable, fixed, backwardReads } = c;
  const inputs = [x, ...trainable.map((p) => p.variable.read())];
  const gradName = `grad:${graphs.output.name}`;

  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const ts = args.slice(0, inputs.length) as tf.Tensor[];
    const paramTensors = new Map<string, tf.Tensor>();
    trainable.forEach((p, i) => paramTensors.set(p.name, ts[i + 1]!));
    for (const p of fixed) paramTensors.set(p.name, p.variable.read());
    // Allocate the output first (it may grow the wasm heap), then take views.
    const y = outputs([graphs.output.dims]);
    const feeds: Record<string, { data: Float32Array; dims: readonly number[] }> = {
      [graphs.input.name]: { data: view(ts[0]!), dims: graphs.input.dims },
    };
    for (const [name, t] of paramTensors) feeds[name] = { data: view(t), dims: t.shape };
    const outs: Record<string, { data?: Float32Array; dims: readonly number[] }> = { [graphs.output.name]: { data: y.arrays()[0]!, dims: graphs.output.dims } };
    for (const bn of graphs.batchNorms) {
      outs[bn.mean] = { dims: [bn.channels] };
      outs[bn.variance] = { dims: [bn.channels] };
    }
    // Memory-lean: saved activations go into arrays we own, reused step after step, so no GBs of
    // garbage build up between collections. Otherwise ORT allocates them: it writes a preallocated
    // output through a copy (mbf b32 forward ~30% slower with preallocation, measured).
    const buffers = c.lean ? (c.pool.pop() ?? new Map<string, Float32Array>()) : null;
    for (const s of graphs.saved) {
      let buf = buffers?.get(s.name);
      if (buffers && !buf) buffers.set(s.name, (buf = new Float32Array(s.size)));
      outs[s.name] = buf ? { data: buf, dims: s.dims } : { dims: s.dims };
    }
    const t0 = performance.now();
    const out = c.forward.run(feeds, outs);
    compiledTimes.forwardMs += performance.now() - t0;
    if (updates) {
      updates.push(...batchNormUpdatesFrom(graphs.batchNorms, out));
    }
    let held: Map<string, Float32Array> | null = new Map(graphs.saved.map((sv) => [sv.name, out[sv.name]!]));
    return {
      value: y.tensors[0]!,
      gradFunc: (dy: tf.Tensor) => {
        if (!held) throw new Error('compiled backbone: the gradient of one forward pass was asked for twice');
        const grads = outputs(trainable.map((p) => p.variable.shape as number[]));
        const bfeeds: Record<string, { data: Float32Array; dims: readonly number[] }> = { [gradName]: { data: view(dy), dims: graphs.output.dims } };
        for (const s of graphs.saved) bfeeds[s.name] = { data: held.get(s.name)!, dims: s.dims };
        for (const [name, t] of paramTensors) if (backwardReads.has(name)) bfeeds[name] = { data: view(t), dims: t.shape };
        const arrays = grads.arrays();
        const want: Record<string, { data: Float32Array; dims: readonly number[] }> = {};
        trainable.forEach((p, i) => (want[`grad:${p.name}`] = { data: arrays[i]!, dims: p.variable.shape as number[] }));
        const t1 = performance.now();
        c.backward.run(bfeeds, want);
        compiledTimes.backwardMs += performance.now() - t1;
        if (buffers) c.pool.push(buffers);
        held = null;
        return [tf.zerosLike(ts[0]!), ...grads.tensors];
      },
    };
  });
  return op(...inputs) as tf.Tensor;
}
