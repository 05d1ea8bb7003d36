// Opens a backbone from whatever a user has: a tfjs layers model directory (or model.json), an insightface
// `.pth`/`.pt`, an `.onnx` graph (converted to layers), or a training run / checkpoint directory holding `backbone/model.json`.
import fs from 'node:fs';
import path from 'node:path';
import type * as tf from '@tensorflow/tfjs';
import { loadModel, specOf, MODEL_JSON } from '../models/io.ts';
import type { BackboneSpec } from '../models/factory.ts';
import { ArcfaceError } from '../errors.ts';
import { importTorch } from './import-torch.ts';

export interface LoadedBackbone {
  model: tf.LayersModel;
  /** Undefined for a tfjs model saved by another tool. */
  spec?: BackboneSpec;
  source: 'tfjs' | 'pth' | 'onnx';
}

/** Finds the model.json a path refers to, looking inside run/checkpoint directories too. */
export function resolveModelJson(p: string): string | undefined {
  if (p.endsWith('.json') && fs.existsSync(p)) return p;
  // A model dir; a training run (its final model, else its latest checkpoint); a checkpoint dir.
  for (const candidate of [
    path.join(p, MODEL_JSON),
    path.join(p, 'model', MODEL_JSON),
    path.join(p, 'checkpoint', 'backbone', MODEL_JSON),
    path.join(p, 'backbone', MODEL_JSON),
  ]) {
    if (fs.existsSync(candidate)) return candidate;
  }
  return undefined;
}

export async function loadBackbone(p: string): Promise<LoadedBackbone> {
  if (!fs.existsSync(p)) throw new ArcfaceError('no such file or directory', p);
  const ext = path.extname(p).toLowerCase();
  if (fs.statSync(p).isFile() && (ext === '.pth' || ext === '.pt')) {
    const { model, spec } = importTorch(p);
    return { model, spec, source: 'pth' };
  }
  if (fs.statSync(p).isFile() && ext === '.onnx') {
    const { importOnnx } = await import('./onnx/index.ts');
    return { model: (await importOnnx(p)).model, source: 'onnx' };
  }
  const json = resolveModelJson(p);
  if (!json) throw new ArcfaceError('not a model: expected a tfjs model directory (model.json), a .pth/.pt file or a training run directory', p);
  try {
    const model = await loadModel(json);
    return { model, spec: specOf(model), source: 'tfjs' };
  } catch (e) {
    throw new ArcfaceError((e as Error).message, json);
  }
}
