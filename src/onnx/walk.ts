// The one walk over a tfjs functional model that both graph emitters (inference.ts, training.ts) use:
// layer nodes in topological order, each visited once all its inputs have values.
import type * as tf from '@tensorflow/tfjs';

export interface LayerNode {
  inputTensors: tf.SymbolicTensor[];
  outputTensors: tf.SymbolicTensor[];
}

/**
 * Visits every node of `model` whose inputs all have values in `values` (seeded with the model input),
 * in waves: model.layers is ordered, but this does not rely on it. A node whose outputs already have
 * values (set by an earlier visit that absorbed it, e.g. a folded BatchNorm) is skipped.
 */
export function walkNodes(model: tf.LayersModel, values: { has(id: number): boolean }, visit: (layer: tf.layers.Layer, node: LayerNode) => void): void {
  let pending = model.layers.flatMap((layer) => layer.inboundNodes.map((node) => ({ layer, node })));
  while (pending.length) {
    const ready = pending.filter(({ node }) => node.inputTensors.length > 0 && node.inputTensors.every((t) => values.has(t.id)));
    if (!ready.length) break;
    for (const { layer, node } of ready) {
      if (!node.outputTensors.every((t) => values.has(t.id))) visit(layer, node);
    }
    pending = pending.filter((p) => !ready.includes(p));
  }
}

/** The layers reading each tensor, by tensor id. */
export function consumersOf(model: tf.LayersModel): Map<number, tf.layers.Layer[]> {
  const consumers = new Map<number, tf.layers.Layer[]>();
  for (const layer of model.layers) {
    for (const node of layer.inboundNodes) {
      for (const t of node.inputTensors) consumers.set(t.id, [...(consumers.get(t.id) ?? []), layer]);
    }
  }
  return consumers;
}
