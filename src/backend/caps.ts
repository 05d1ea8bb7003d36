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
}

/** The capabilities of backend `name` (default the active one); unknown names have none. */
export function backendCaps(name: string = tf.getBackend()): BackendCaps {
  return {
    ortEngine: name === 'ort' || name === 'ort-cpu',
    hostArrays: name === 'cpu' || name === 'ort-cpu',
  };
}
