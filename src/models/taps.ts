// Intermediate outputs by PyTorch module path ("layer2", "bn2", "conv_sep"), for checking a port
// against the reference module by module.
import * as tf from '@tensorflow/tfjs';

/** The tfjs layer that produces the output of torch module `path`: the layer of that name, or the last one inside it. */
export function layerForModule(model: tf.LayersModel, path: string): tf.layers.Layer {
  const exact = model.layers.find((l) => l.name === path);
  if (exact) return exact;
  const inside = model.layers.filter((l) => l.name.startsWith(`${path}.`));
  if (!inside.length) throw new Error(`model ${model.name} has no module "${path}"`);
  return inside[inside.length - 1]!;
}

/** A model with the same input whose outputs are the given modules' outputs, in order. */
export function tapModel(model: tf.LayersModel, paths: string[]): tf.LayersModel {
  const outputs = paths.map((p) => layerForModule(model, p).output as tf.SymbolicTensor);
  return tf.model({ inputs: model.inputs, outputs });
}
