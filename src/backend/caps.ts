// What a tfjs backend can do, asked by name in one place.
import * as tf from '@tensorflow/tfjs';

export interface BackendCaps {
  /** An onnxruntime engine (`ort`, `ort-cpu`): training and inference may run as compiled ORT graphs. */
  ortEngine: boolean;
  /**
   * Tensors are plain JS arrays that the backend adopts without copying (`cpu`, and `ort-cpu`, which is
   * the cpu backend's instance): a buffer handed to tf.tensor must not be reused, and JS loops over
   * tensor data need no copy.
   */
  hostArrays: boolean;
  /**
   * tf.tensor keeps the caller's buffer instead of copying it (the host-array backends, and webgpu until a
   * kernel first uploads it): the loader must not reuse a batch buffer it handed over.
   */
  adoptsHostBuffers: boolean;
}

/** The capabilities of backend `name` (default the active one); unknown names have none. */
export function backendCaps(name: string = tf.getBackend()): BackendCaps {
  return {
    ortEngine: name === 'ort' || name === 'ort-cpu',
    hostArrays: name === 'cpu' || name === 'ort-cpu',
    adoptsHostBuffers: name === 'cpu' || name === 'ort-cpu' || name === 'webgpu',
  };
}
