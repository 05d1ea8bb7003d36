// Parameter counting with the reference's rule: sum(p.numel() for p in model.parameters()), i.e. every
// trainable weight plus the frozen gamma of a scale-free BatchNorm (a torch BN keeps it as a parameter);
// BN running statistics are buffers and do not count.
import * as tf from '@tensorflow/tfjs';

export function countParameters(model: tf.LayersModel): number {
  let n = 0;
  for (const layer of model.layers) {
    for (const w of layer.trainableWeights) n += (w.shape as number[]).reduce((a, b) => a * b, 1);
    const cfg = layer.getConfig();
    if (layer.getClassName() === 'BatchNormalization' && cfg.scale === false) {
      const shape = layer.getWeights()[0]?.shape;
      n += shape ? shape[shape.length - 1]! : 0;
    }
  }
  return n;
}
