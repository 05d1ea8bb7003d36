// Fine-tuning: start a backbone from a pretrained one. Weights are copied layer by layer where the layer
// name and every weight shape agree; the rest (typically `fc`/`features` when the embedding size changes)
// keeps its fresh initialisation, and the run says which.
import type * as tf from '@tensorflow/tfjs';
import { ArcfaceError } from '../errors.ts';


export interface InitReport {
  copied: string[];
  reinitialised: string[];
}

/** Copies `source`'s weights into `target` where layers match (the caller keeps ownership of both). */
export function copyMatchingWeights(target: tf.LayersModel, source: tf.LayersModel, from: string): InitReport {
  const report: InitReport = { copied: [], reinitialised: [] };
  {
    for (const layer of target.layers) {
      const weights = layer.getWeights();
      if (!weights.length) continue;
      let src: tf.layers.Layer | undefined;
      try {
        src = source.getLayer(layer.name);
      } catch {
        src = undefined;
      }
      const srcWeights = src?.getWeights() ?? [];
      const fits =
        src !== undefined &&
        src.getClassName() === layer.getClassName() &&
        srcWeights.length === weights.length &&
        srcWeights.every((w, i) => w.shape.join() === weights[i]!.shape.join());
      if (fits) {
        layer.setWeights(srcWeights);
        report.copied.push(layer.name);
      } else {
        report.reinitialised.push(layer.name);
      }
    }
  }
  if (report.copied.length === 0) {
    throw new ArcfaceError('no layer of the pretrained model fits this network (different network?)', from);
  }
  const n = report.reinitialised.length;
  process.stderr.write(
    `arcface: initialised ${report.copied.length} layers from ${from}` +
      (n ? `; ${n} kept their fresh initialisation (${report.reinitialised.slice(0, 6).join(', ')}${n > 6 ? ', …' : ''})` : '') +
      '\n',
  );
  return report;
}
