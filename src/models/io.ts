// Saving and loading tfjs layers models on disk (`model.json` + `weights.bin`) without tfjs-node, in the
// standard layout that tfjs-node's `file://` handler and `tf.loadLayersModel` over http also read.
// saveModel builds the directory under a temporary name and switches it in (writeFolderAtomic), so a failed
// or killed save leaves the previous model or none.
import * as tf from '@tensorflow/tfjs';
import fs from 'node:fs';
import path from 'node:path';
import { writeFolderAtomic } from '../util/atomic.ts';
import type { BackboneSpec } from './factory.ts';
import { modelJsonOf } from './io-memory.ts';
import './grouped-conv.ts'; // registers the custom layer before any model.json is parsed

export { specOf } from './io-memory.ts';

export const MODEL_JSON = 'model.json';
export const WEIGHTS_BIN = 'weights.bin';

export class ModelFileError extends Error {
  constructor(readonly file: string, message: string) {
    super(`${file}: ${message}`);
    this.name = 'ModelFileError';
  }
}

/** Saves a model as `dir/model.json` + `dir/weights.bin`, with the backbone spec in its user metadata. */
export async function saveModel(model: tf.LayersModel, dir: string, spec?: BackboneSpec): Promise<void> {
  await writeFolderAtomic(dir, (tmp) => writeModelFiles(model, tmp, spec));
}

/**
 * Writes `dir/model.json` + `dir/weights.bin` in place (creating `dir`), for writers that make a larger
 * folder atomic themselves (checkpoints). saveModel is the atomic form.
 */
export async function writeModelFiles(model: tf.LayersModel, dir: string, spec?: BackboneSpec): Promise<void> {
  if (spec) model.setUserDefinedMetadata({ ...(model.getUserDefinedMetadata() ?? {}), arcface: spec as unknown as object });
  fs.mkdirSync(dir, { recursive: true });
  await model.save(
    tf.io.withSaveHandler(async (a) => {
      const weightData = a.weightData as ArrayBuffer | ArrayBuffer[] | undefined;
      const weights = Array.isArray(weightData) ? Buffer.concat(weightData.map((b) => Buffer.from(b))) : Buffer.from(weightData ?? new ArrayBuffer(0));
      const json = modelJsonOf(a, WEIGHTS_BIN);
      fs.writeFileSync(path.join(dir, WEIGHTS_BIN), weights);
      fs.writeFileSync(path.join(dir, MODEL_JSON), JSON.stringify(json));
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON', weightDataBytes: weights.length } };
    }),
  );
}

/** The model.json and weights of a saved model directory (or of a model.json path). */
export function readModelArtifacts(dirOrJson: string): tf.io.ModelArtifacts {
  const jsonPath = dirOrJson.endsWith('.json') ? dirOrJson : path.join(dirOrJson, MODEL_JSON);
  if (!fs.existsSync(jsonPath)) throw new ModelFileError(jsonPath, 'no such file: expected a tfjs layers model directory with model.json');
  let json: {
    modelTopology?: object;
    weightsManifest?: { paths: string[]; weights: tf.io.WeightsManifestEntry[] }[];
    userDefinedMetadata?: object;
    format?: string;
  };
  try {
    json = JSON.parse(fs.readFileSync(jsonPath, 'utf8'));
  } catch (e) {
    throw new ModelFileError(jsonPath, `not valid JSON (${(e as Error).message})`);
  }
  if (!json.modelTopology || !Array.isArray(json.weightsManifest)) {
    throw new ModelFileError(jsonPath, 'not a tfjs layers model (needs modelTopology and weightsManifest)');
  }
  const dir = path.dirname(jsonPath);
  const buffers: Buffer[] = [];
  const specs: tf.io.WeightsManifestEntry[] = [];
  for (const group of json.weightsManifest) {
    for (const p of group.paths) {
      const f = path.join(dir, p);
      if (!fs.existsSync(f)) throw new ModelFileError(f, 'weight shard listed in model.json is missing');
      buffers.push(fs.readFileSync(f));
    }
    specs.push(...group.weights);
  }
  const weightData = Buffer.concat(buffers);
  const need = specs.reduce((a, s) => a + s.shape.reduce((x, y) => x * y, 1) * (s.dtype === 'float32' || s.dtype === 'int32' ? 4 : 1), 0);
  if (weightData.length < need) throw new ModelFileError(dir, `weights are truncated: ${weightData.length} bytes, model.json needs ${need}`);
  return {
    modelTopology: json.modelTopology,
    weightSpecs: specs,
    weightData: weightData.buffer.slice(weightData.byteOffset, weightData.byteOffset + weightData.byteLength),
    userDefinedMetadata: json.userDefinedMetadata as Record<string, object> | undefined,
    format: json.format,
  };
}

/** Loads a saved tfjs layers model from a directory (or model.json path). */
export async function loadModel(dirOrJson: string): Promise<tf.LayersModel> {
  return tf.loadLayersModel(tf.io.fromMemory(readModelArtifacts(dirOrJson)));
}

export { GENERIC_NETWORK } from './io-memory.ts';
