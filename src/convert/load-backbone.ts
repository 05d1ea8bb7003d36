// Opens a backbone from whatever a user has: a tfjs layers model directory (or model.json), an insightface
// `.pth`/`.pt`, an `.onnx` graph, or a training run / checkpoint directory holding `backbone/model.json`.
// An ONNX graph that is an IResNet or MobileFaceNet, whatever exported it, becomes the native network
// (src/convert/onnx-backbone.ts); any other graph is imported as a generic tfjs model.
import fs from 'node:fs';
import path from 'node:path';
import type * as tf from '@tensorflow/tfjs';
import { loadModel, specOf, MODEL_JSON } from '../models/io.ts';
import type { BackboneSpec } from '../models/factory.ts';
import { inputConventionOf, RAW_INPUT, setInputConvention, STANDARD_INPUT, type InputConvention } from '../models/input-convention.ts';
import { ArcfaceError } from '../errors.ts';
import { importTorch } from './import-torch.ts';

export interface LoadedBackbone {
  model: tf.LayersModel;
  /** Set for the native networks (IResNet, MobileFaceNet); undefined for a generic tfjs model. */
  spec?: BackboneSpec;
  source: 'tfjs' | 'pth' | 'onnx';
  /** What the model takes (also in its metadata). */
  input: InputConvention;
  /** How an ONNX graph was taken: recognised as a native network, or imported generically (and why). */
  note?: string;
  /** BatchNorms the exporter had folded into convolutions (restored with identity statistics). */
  foldedBatchNorms?: number;
  /** Their layer names, for recalibrateBatchNorms (src/train/init.ts) before training with batch statistics. */
  foldedLayers?: string[];
}

export interface LoadBackboneOptions {
  /** Channel order of the model's input when the file cannot say (default: detected, else RGB). */
  order?: 'RGB' | 'BGR';
  /** ONNX: import as a generic tfjs model even when the graph is an IResNet/MobileFaceNet. */
  generic?: boolean;
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

/** An ONNX graph: the native network when it is one, else the generic import. */
export async function loadOnnxBackbone(file: string, opts: LoadBackboneOptions = {}): Promise<LoadedBackbone> {
  const { tryRecogniseOnnxBackbone } = await import('./onnx-backbone.ts');
  const r = opts.generic ? undefined : tryRecogniseOnnxBackbone(file, { order: opts.order });
  if (r && !(r instanceof Error)) {
    setInputConvention(r.model, r.input);
    return { model: r.model, spec: r.spec, source: 'onnx', input: r.input, note: `recognised ${r.summary}`, foldedBatchNorms: r.foldedBatchNorms, foldedLayers: r.foldedLayers };
  }
  const { importOnnx } = await import('./onnx/index.ts');
  const imported = await importOnnx(file);
  const base = imported.normalisationBuiltIn ? RAW_INPUT : STANDARD_INPUT;
  const input = { ...base, order: opts.order ?? base.order };
  setInputConvention(imported.model, input);
  const why = r ? ` (not an IResNet/MobileFaceNet: ${r.message})` : '';
  return { model: imported.model, source: 'onnx', input, note: `imported as a generic tfjs model${why}` };
}

export async function loadBackbone(p: string, opts: LoadBackboneOptions = {}): Promise<LoadedBackbone> {
  if (!fs.existsSync(p)) throw new ArcfaceError('no such file or directory', p);
  const ext = path.extname(p).toLowerCase();
  if (fs.statSync(p).isFile() && (ext === '.pth' || ext === '.pt')) {
    const { model, spec } = importTorch(p);
    const input = { ...STANDARD_INPUT, order: opts.order ?? 'RGB' };
    if (opts.order) setInputConvention(model, input);
    return { model, spec, source: 'pth', input };
  }
  if (fs.statSync(p).isFile() && ext === '.onnx') return loadOnnxBackbone(p, opts);
  const json = resolveModelJson(p);
  if (!json) throw new ArcfaceError('not a model: expected a tfjs model directory (model.json), a .pth/.pt file or a training run directory', p);
  let model: tf.LayersModel;
  try {
    model = await loadModel(json);
  } catch (e) {
    throw new ArcfaceError((e as Error).message, json);
  }
  let input = inputConventionOf(model);
  if (opts.order && opts.order !== input.order) {
    input = { ...input, order: opts.order };
    setInputConvention(model, input);
  }
  return { model, spec: specOf(model), source: 'tfjs', input };
}
