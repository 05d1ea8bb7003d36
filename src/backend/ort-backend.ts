// The `ort` engines: a tfjs backend that IS an existing backend instance (same tensors, same memory,
// same element-wise kernels), registered under a second name whose kernel table swaps the
// convolutions for onnxruntime ones (src/backend/ort-conv.ts).
//   ort      = the wasm backend (XNNPACK SIMD element-wise kernels; 4 GB heap) + ORT convolutions
//   ort-cpu  = the cpu backend (JS arrays, no heap ceiling; slow JS element-wise kernels) + ORT convolutions
// Sharing the instance (rather than a second wasm module) means tensors move freely between `wasm`
// and `ort`, and wasm's kernels, which keep their module in globals set up per backend, stay valid.
import * as tf from '@tensorflow/tfjs';
import { ortAvailable } from '../ort/binding.ts';
import { ORT_CONV_KERNELS, ortConvKernelConfigs } from './ort-conv.ts';
import { registerWasmGradientKernels } from './wasm-grad.ts';

export type OrtBackendName = 'ort' | 'ort-cpu';

export const ORT_BASE: Record<OrtBackendName, 'wasm' | 'cpu'> = { ort: 'wasm', 'ort-cpu': 'cpu' };

/**
 * The kernels ORT takes over (convolutions, their gradients, matrix products of >= 1M multiply-adds),
 * chosen by measurement (bench/train.ts): on the cpu backend all of them. On wasm, XNNPACK's depthwise
 * forward (NHWC-native) stays: ORT's grouped NCHW Conv plus two transposes is no faster.
 */
export const ORT_KERNELS: Record<OrtBackendName, readonly string[]> = {
  ort: ORT_CONV_KERNELS.filter((k) => k !== 'DepthwiseConv2dNative'),
  'ort-cpu': ORT_CONV_KERNELS,
};

/**
 * Registers backend `name` on top of its base backend (initialising the base, which must be
 * importable: for `ort`, @tensorflow/tfjs-backend-wasm with its paths set). Leaves the active backend
 * unchanged. Returns false where onnxruntime-node or the base is not available.
 */
export async function registerOrtBackend(name: OrtBackendName, kernels: readonly string[] = ORT_KERNELS[name]): Promise<boolean> {
  if (tf.findBackendFactory(name)) return true;
  const baseName = ORT_BASE[name];
  if (!ortAvailable() || !tf.findBackendFactory(baseName)) return false;
  if (!tf.findBackend(baseName)) {
    const active = tf.getBackend();
    if (!(await tf.setBackend(baseName))) return false;
    if (active && active !== baseName) await tf.setBackend(active);
  }
  const base = tf.findBackend(baseName)!;
  if (baseName === 'wasm') registerWasmGradientKernels();
  for (const k of tf.getKernelsForBackend(baseName)) tf.registerKernel({ ...k, backendName: name });
  for (const k of ortConvKernelConfigs(name, baseName, kernels)) {
    if (tf.getKernel(k.kernelName, name)) tf.unregisterKernel(k.kernelName, name);
    tf.registerKernel(k);
  }
  // Priority 0: never picked by tfjs's own auto-selection; src/backend/select.ts decides.
  return tf.registerBackend(name, () => base, 0);
}
