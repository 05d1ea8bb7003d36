// tfjs layers models to and from memory and URLs (no files), for browsers and servers alike. The backbone
// spec rides in the model's user metadata under `arcface`, as saveModel (io.ts) writes it to disk.
import * as tf from '@tensorflow/tfjs';
import type { BackboneSpec } from './factory.ts';
import './grouped-conv.ts'; // registers the custom layer before any model topology is parsed

/** Spec network name of a model fine-tuned through the generic path (any tfjs layers model): not rebuildable from a spec. */
export const GENERIC_NETWORK = 'generic';

/**
 * The backbone spec stored in a saved model's metadata, if it has one (a generic model's is not a spec).
 * The model's input convention sits beside it as `arcfaceInput` (src/models/input-convention.ts).
 */
export function specOf(model: tf.LayersModel): BackboneSpec | undefined {
  const spec = (model.getUserDefinedMetadata() as { arcface?: BackboneSpec } | undefined)?.arcface;
  return spec?.network === GENERIC_NETWORK ? undefined : spec;
}

/** The model's topology and weights as tfjs ModelArtifacts (weights in one ArrayBuffer), spec included. */
export async function modelToArtifacts(model: tf.LayersModel, spec: BackboneSpec | undefined = specOf(model)): Promise<tf.io.ModelArtifacts> {
  if (spec) model.setUserDefinedMetadata({ ...(model.getUserDefinedMetadata() ?? {}), arcface: spec as unknown as object });
  let out: tf.io.ModelArtifacts | undefined;
  await model.save(
    tf.io.withSaveHandler(async (a) => {
      const parts = Array.isArray(a.weightData) ? a.weightData : a.weightData ? [a.weightData] : [];
      const weights = new Uint8Array(parts.reduce((n, b) => n + b.byteLength, 0));
      let o = 0;
      for (const b of parts) {
        weights.set(new Uint8Array(b), o);
        o += b.byteLength;
      }
      out = { ...a, weightData: weights.buffer };
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON', weightDataBytes: weights.length } };
    }),
  );
  return out!;
}

/** A model from ModelArtifacts (what modelToArtifacts returns, or a parsed model.json plus its weights). */
export function modelFromArtifacts(artifacts: tf.io.ModelArtifacts): Promise<tf.LayersModel> {
  return tf.loadLayersModel(tf.io.fromMemory(artifacts));
}

/** The model.json of `a` with its weights in one file, `weightsPath` (the layout `arcface export --format tfjs` writes). */
export function modelJsonOf(a: tf.io.ModelArtifacts, weightsPath: string): Record<string, unknown> {
  return {
    format: a.format ?? 'layers-model',
    generatedBy: a.generatedBy,
    convertedBy: 'arcface-ts',
    modelTopology: a.modelTopology,
    userDefinedMetadata: a.userDefinedMetadata,
    weightsManifest: [{ paths: [weightsPath], weights: a.weightSpecs ?? [] }],
  };
}

/** A model from a model.json URL (its weight shards next to it), e.g. one written by `arcface export --format tfjs`. */
export function loadModelFromUrl(url: string, opts?: tf.io.LoadOptions): Promise<tf.LayersModel> {
  return tf.loadLayersModel(url, opts);
}
