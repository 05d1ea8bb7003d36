// The loader as a tf.data Dataset of `{ images: [B,H,W,3] float32, labels: [B] int32 }` tensors.
import * as tf from '@tensorflow/tfjs';
import type { DataLoader } from './loader.ts';
import { backendCaps } from '../backend/caps.ts';

export interface TensorBatch extends tf.TensorContainerObject {
  images: tf.Tensor4D;
  labels: tf.Tensor1D;
}

/**
 * Epochs `epoch`, `epoch+1`, ... (`epochs` of them, default 1) from batch `startBatch` of the first.
 * The consumer owns each element's tensors and disposes them. Decoding is already prefetched by the
 * loader, so no `.prefetch()` is needed on top.
 */
export function loaderDataset(loader: DataLoader, opts: { epoch?: number; startBatch?: number; epochs?: number } = {}): tf.data.Dataset<TensorBatch> {
  const first = opts.epoch ?? 0;
  const epochs = opts.epochs ?? 1;
  const s = loader.inputSize;
  return tf.data.generator(async function* () {
    for (let e = first; e < first + epochs; e++) {
      for await (const b of loader.batches(e, { startBatch: e === first ? opts.startBatch : 0 })) {
        const t = { images: tf.tensor4d(b.images, [b.size, s, s, 3], 'float32'), labels: tf.tensor1d(b.labels, 'int32') };
        // The wasm (and tfjs-node) backends copy the values into their own memory; the cpu backends keep
        // a reference, so only there must the buffers not be reused.
        if (!backendCaps().adoptsHostBuffers) b.release();
        yield t as TensorBatch;
      }
    }
  } as unknown as () => Iterator<TensorBatch>);
}
