// Fine-tuning: start a backbone from a pretrained one. Weights are copied layer by layer where the layer
// name and every weight shape agree; the rest (typically `fc`/`features` when the embedding size changes)
// keeps its fresh initialisation, and the run says which.
import * as tf from '@tensorflow/tfjs';
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

/**
 * Gives BatchNorms that an exporter had folded into convolutions (restored as y = x + b) statistics of
 * real activations, without changing the network's inference function: with the batch mean mu and
 * variance s2 of each layer's input, y = a x + c becomes gamma (x - mu) / sqrt(s2 + eps) + beta with
 * gamma = a sqrt(s2 + eps), beta = c + a mu. Training with batch statistics then starts from the
 * pretrained function instead of re-normalising every channel to unit variance. A BN without gamma keeps
 * its variance and takes the mean. Returns the layers changed.
 */
export function recalibrateBatchNorms(model: tf.LayersModel, names: string[], images: tf.Tensor4D): string[] {
  const layers = names
    .map((n) => model.layers.find((l) => l.name === n))
    .filter((l): l is tf.layers.Layer => l !== undefined && l.getClassName() === 'BatchNormalization');
  if (!layers.length) return [];
  const tap = tf.model({ inputs: model.inputs, outputs: layers.map((l) => l.input as tf.SymbolicTensor) });
  tf.tidy(() => {
    const outs = tap.predict(images) as tf.Tensor | tf.Tensor[];
    const list = Array.isArray(outs) ? outs : [outs];
    layers.forEach((layer, i) => {
      const x = list[i]!;
      const axes = x.shape.slice(0, -1).map((_, k) => k);
      const { mean, variance } = tf.moments(x, axes);
      const eps = (layer.getConfig().epsilon as number) ?? 1e-3;
      const find = (s: string) => layer.weights.find((w) => w.originalName.endsWith(`/${s}`));
      const gammaV = find('gamma');
      const betaV = find('beta')!;
      const meanV = find('moving_mean')!;
      const varV = find('moving_variance')!;
      const g0 = gammaV ? gammaV.read() : tf.onesLike(betaV.read());
      const a = tf.div(g0, tf.sqrt(tf.add(varV.read(), eps)));
      const c = tf.sub(betaV.read(), tf.mul(a, meanV.read()));
      if (gammaV) {
        gammaV.write(tf.mul(a, tf.sqrt(tf.add(variance, eps))));
        varV.write(variance);
      }
      betaV.write(tf.add(c, tf.mul(a, mean)));
      meanV.write(mean);
    });
  });
  return layers.map((l) => l.name);
}
