// The one place that touches onnxruntime-node's synchronous native binding (dist/binding.js). Its
// public InferenceSession.run returns a promise (a setImmediate hop per call); tfjs kernels are
// synchronous, so the conv kernels call the binding directly. The binding is not a public API: the
// version is pinned and its shape checked, and anything else fails loudly instead of misbehaving.
import { nodeBuiltin } from '../node-builtins.ts';
import { GraphBuilder } from '../onnx/builder.ts';

/** The onnxruntime-node version whose binding this module was written against (package.json pins it). */
export const ORT_VERSION = '1.30.0';

export class OrtBindingError extends Error {
  override name = 'OrtBindingError';
}

/** A float32 tensor as the binding takes and returns it (an onnxruntime-common Tensor). */
export interface OrtTensor {
  readonly data: Float32Array;
  readonly dims: readonly number[];
}

interface RawSession {
  loadModel(buffer: ArrayBuffer, byteOffset: number, byteLength: number, options: Record<string, unknown>): void;
  run(feeds: Record<string, OrtTensor>, fetches: Record<string, OrtTensor | null>, options: Record<string, unknown>): Record<string, OrtTensor>;
  dispose(): void;
}

interface RawBinding {
  InferenceSession: new () => RawSession;
  initOrtOnce: (...args: unknown[]) => void;
}

interface BindingModule {
  binding: RawBinding;
  initOrt: () => void;
}

type TensorCtor = new (type: 'float32', data: Float32Array, dims: readonly number[]) => OrtTensor;

/**
 * Throws OrtBindingError unless `version` is ORT_VERSION and `mod` looks like 1.30's dist/binding.js
 * (exported for the test that feeds it incompatible versions and shapes).
 */
export function checkBinding(version: string | undefined, mod: unknown): asserts mod is BindingModule {
  const expected = `onnxruntime-node ${ORT_VERSION} (pinned in package.json)`;
  if (version !== ORT_VERSION) {
    throw new OrtBindingError(`the ort engine needs ${expected}, found ${version ?? 'no onnxruntime-node'}; run npm ci`);
  }
  const m = mod as Partial<BindingModule> | null;
  const b = m?.binding as Partial<RawBinding> | undefined;
  const proto = typeof b?.InferenceSession === 'function' ? (b.InferenceSession.prototype as Record<string, unknown>) : undefined;
  const missing = [
    typeof m?.initOrt === 'function' ? null : 'initOrt()',
    proto ? null : 'binding.InferenceSession',
    typeof proto?.loadModel === 'function' ? null : 'InferenceSession.loadModel',
    typeof proto?.run === 'function' ? null : 'InferenceSession.run',
  ].filter((s): s is string => s !== null);
  if (missing.length) {
    throw new OrtBindingError(`onnxruntime-node's native binding does not have the shape ${expected} has (missing ${missing.join(', ')})`);
  }
}

interface Loaded {
  binding: RawBinding;
  Tensor: TensorCtor;
}

let loaded: Loaded | null = null;

function load(): Loaded {
  if (loaded) return loaded;
  const nodeModule = nodeBuiltin('node:module');
  if (!nodeModule) throw new OrtBindingError('onnxruntime-node runs only in Node');
  const require = nodeModule.createRequire(import.meta.url);
  let version: string | undefined;
  try {
    version = (require('onnxruntime-node/package.json') as { version: string }).version;
  } catch {
    version = undefined;
  }
  // Check the version before loading the native code: another version's binding may crash on load.
  checkBinding(version, version === ORT_VERSION ? require('onnxruntime-node/dist/binding.js') : null);
  const mod = require('onnxruntime-node/dist/binding.js') as BindingModule;
  mod.initOrt();
  const { Tensor } = require('onnxruntime-common') as { Tensor: TensorCtor };
  loaded = { binding: mod.binding, Tensor };
  return loaded;
}

let nchwcBlock: number | undefined;

/**
 * onnxruntime's NCHWc channel block on this CPU (8 with AVX2, 16 with AVX-512), or 0 where its blocked
 * kernels are missing: read from the channels ReorderInput pads 4 channels to.
 */
export function ortNchwcBlockSize(): number {
  if (nchwcBlock !== undefined) return nchwcBlock;
  try {
    const g = new GraphBuilder(17);
    const x = g.reserve('x');
    const blocked = g.contribNode('ReorderInput', [x], 'reorder', { channels_last: 0 }, 'com.microsoft.nchwc');
    g.node('Cast', [g.node('Shape', [blocked], 'shape')], 'dims', { to: 1 }, g.reserve('dims'));
    const model = g.encode({ graphName: 'nchwc_probe', inputs: [{ name: x, dims: [1, 4, 1, 1] }], outputs: [{ name: 'dims', dims: [4] }], metadata: {}, producerVersion: '0' });
    const probe = new OrtSession(model, { threads: 1 });
    const dims = probe.run({ x: { data: new Float32Array(4), dims: [1, 4, 1, 1] } }, { dims: { dims: [4] } }).dims!;
    probe.dispose();
    nchwcBlock = dims[1]! >= 4 ? dims[1]! : 0;
  } catch {
    nchwcBlock = 0;
  }
  return nchwcBlock;
}

/** True when the pinned binding loads here (the ort backends register only then). */
export function ortAvailable(): boolean {
  try {
    load();
    return true;
  } catch {
    return false;
  }
}

/** Threads per session: one per core (ORT's default spin-waiting would steal time from tfjs between kernels). */
export const ORT_THREADS = Math.max(1, nodeBuiltin('node:os')?.availableParallelism() ?? 1);

/** A loaded ONNX model run synchronously on float32 inputs. */
export class OrtSession {
  private readonly raw: RawSession;
  private readonly Tensor: TensorCtor;

  /**
   * `spin`: let idle pool threads spin-wait for the next parallel section (default false; only for a
   * session that runs alone, such as a compiled inference graph: ~5% on small graphs).
   */
  constructor(model: Uint8Array, opts: { threads?: number; spin?: boolean; arena?: boolean; memPattern?: boolean } = {}) {
    const { binding, Tensor } = load();
    this.Tensor = Tensor;
    this.raw = new binding.InferenceSession();
    this.raw.loadModel(model.buffer as ArrayBuffer, model.byteOffset, model.byteLength, {
      intraOpNumThreads: opts.threads ?? ORT_THREADS,
      interOpNumThreads: 1,
      graphOptimizationLevel: 'all',
      executionMode: 'sequential',
      // Each session keeps its buffers (im2col) in its own arena: without it every run page-faults fresh
      // mmap'd memory (tiny64 training 1.8x slower, measured), at the price of RSS (ARCFACE_ORT_ARENA=0).
      enableCpuMemArena: opts.arena ?? process.env.ARCFACE_ORT_ARENA !== '0',
      // The memory pattern pre-plans one block for all of a run's tensors, outside the arena: on a
      // training step (one graph of thousands of nodes) that block comes on top of the arena (r18 b16:
      // 3.4 GB peak RSS with it, 2.2 GB without, and less CPU time).
      enableMemPattern: opts.memPattern ?? true,
      // Spinning pool threads steal the core the JS thread needs for the tfjs kernels in between (6x slower).
      extra: { session: { intra_op: { allow_spinning: opts.spin ? '1' : '0' } } },
    });
  }

  /**
   * Runs the graph. `outputs` maps each output to a preallocated array (written in place, e.g. a
   * view of the wasm heap) or to its shape (the result is then a fresh array).
   */
  run(inputs: Record<string, { data: Float32Array; dims: readonly number[] }>, outputs: Record<string, { data?: Float32Array; dims: readonly number[] }>): Record<string, Float32Array> {
    const feeds: Record<string, OrtTensor> = {};
    for (const [k, v] of Object.entries(inputs)) feeds[k] = new this.Tensor('float32', v.data, v.dims);
    const fetches: Record<string, OrtTensor | null> = {};
    for (const [k, v] of Object.entries(outputs)) fetches[k] = v.data ? new this.Tensor('float32', v.data, v.dims) : null;
    const result = this.raw.run(feeds, fetches, {});
    const out: Record<string, Float32Array> = {};
    for (const k of Object.keys(outputs)) {
      const r = result[k];
      if (!r) throw new OrtBindingError(`onnxruntime returned no output "${k}"`);
      const want = outputs[k]!.data;
      // A preallocated output is normally written in place; copy if the binding returned another buffer.
      if (want && r.data !== want && r.data.buffer !== want.buffer) want.set(r.data);
      out[k] = want ?? r.data;
    }
    return out;
  }

  dispose(): void {
    this.raw.dispose();
  }
}
