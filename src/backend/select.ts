// Picks the fastest TensorFlow.js backend that is present and reports it once on stderr.
// Training: tensorflow (tfjs-node-gpu / tfjs-node, optional installs) > webgpu (Dawn, a hardware adapter
// only) > ort (wasm + onnxruntime: compiled training graphs) > wasm > cpu. Inference: tensorflow > webgpu >
// wasm > ort > cpu; on ort, embedding and evaluation run the backbone as one compiled onnxruntime graph
// (src/ort/infer.ts). A software WebGPU adapter (SwiftShader, lavapipe) only when asked for by name: it is
// slower than wasm. ort-cpu (cpu + onnxruntime, no 4 GB heap) only when asked for by name.
import * as tf from '@tensorflow/tfjs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { registerWasmGradientKernels } from './wasm-grad.ts';
import { registerOrtBackend } from './ort-backend.ts';
import { describeAdapter, setupWebgpu, webgpuUnavailable } from './webgpu.ts';
import { ArcfaceError } from '../errors.ts';

export type BackendName = 'tensorflow' | 'webgpu' | 'ort' | 'wasm' | 'cpu' | 'ort-cpu';
/** Every backend name, in training preference order. */
export const BACKEND_ORDER: readonly BackendName[] = ['tensorflow', 'webgpu', 'ort', 'wasm', 'cpu', 'ort-cpu'];
export type Workload = 'train' | 'infer';
const AUTO_ORDER: Record<Workload, readonly BackendName[]> = {
  train: ['tensorflow', 'webgpu', 'ort', 'wasm', 'cpu'],
  infer: ['tensorflow', 'webgpu', 'wasm', 'ort', 'cpu'],
};

const require = createRequire(import.meta.url);
let announced = false;

async function tryTensorflow(): Promise<string | null> {
  for (const pkg of ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node']) {
    try {
      await import(pkg);
      if (tf.findBackend('tensorflow')) return pkg;
    } catch {
      // not installed (its install downloads libtensorflow, so it is never a dependency)
    }
  }
  return null;
}

async function setupWasm(): Promise<boolean> {
  try {
    const wasm = await import('@tensorflow/tfjs-backend-wasm');
    const dir = path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm'));
    wasm.setWasmPaths(dir + path.sep);
    registerWasmGradientKernels();
    return true;
  } catch {
    return false;
  }
}

/** Makes `name` (or the best available backend) active. Throws for an unknown or unavailable name. */
export async function initBackend(
  requested: string | undefined = process.env.ARCFACE_BACKEND,
  opts: { quiet?: boolean; workload?: Workload } = {},
): Promise<BackendName> {
  const want = requested && requested !== 'auto' ? requested : undefined;
  if (want && !(BACKEND_ORDER as readonly string[]).includes(want)) {
    throw new Error(`unknown backend "${want}": choose one of ${BACKEND_ORDER.join(', ')} or auto`);
  }
  // Prod mode: no debug checks, and no "install tfjs-node" banner from the cpu backend.
  tf.enableProdMode();
  const candidates = want ? [want as BackendName] : [...AUTO_ORDER[opts.workload ?? 'infer']];
  let detail = '';
  for (const name of candidates) {
    if (tf.getBackend() === name && tf.findBackend(name)) return announce(name, detail, opts);
    if (name === 'tensorflow') {
      const pkg = await tryTensorflow();
      if (!pkg) continue;
      detail = pkg;
    } else if (name === 'webgpu') {
      const probe = await setupWebgpu();
      if (!probe.ok) {
        if (want) throw webgpuUnavailable(probe.missing);
        continue;
      }
      if (!want && probe.adapter.software) continue;
      detail = describeAdapter(probe.adapter);
    } else if (name === 'wasm') {
      if (!(await setupWasm())) continue;
    } else if (name === 'ort' || name === 'ort-cpu') {
      // onnxruntime convolutions on the wasm / cpu backend (src/backend/ort-backend.ts)
      if (name === 'ort' && !(await setupWasm())) continue;
      if (!(await registerOrtBackend(name))) continue;
    }
    if (await tf.setBackend(name)) {
      await tf.ready();
      return announce(name, detail, opts);
    }
    if (want === 'webgpu') throw webgpuUnavailable(`the WebGPU device could not be created on ${detail}`);
  }
  throw new Error(
    want
      ? `backend "${want}" is not available${want === 'tensorflow' ? ' (install @tensorflow/tfjs-node or @tensorflow/tfjs-node-gpu)' : ''}`
      : 'no TensorFlow.js backend could be initialised',
  );
}

/**
 * Runs `fn` on the wasm backend while webgpu is the active one, then switches back: code that reads
 * tensors synchronously (face-api's detector calls dataSync) cannot run on webgpu in Node, which has no
 * synchronous GPU read. On any other backend `fn` just runs. Tensors `fn` returns belong to wasm.
 */
export async function withSyncReads<T>(fn: () => Promise<T>): Promise<T> {
  if (tf.getBackend() !== 'webgpu') return fn();
  if (!(await setupWasm()) || !(await tf.setBackend('wasm'))) {
    throw new ArcfaceError('face detection on the webgpu backend runs on wasm, which could not be initialised');
  }
  try {
    return await fn();
  } finally {
    await tf.setBackend('webgpu');
  }
}

function announce(name: BackendName, detail: string, opts: { quiet?: boolean }): BackendName {
  if (!announced && !opts.quiet) {
    process.stderr.write(`arcface: using the ${name} backend${detail ? ` (${detail})` : ''}\n`);
    announced = true;
  }
  return name;
}
