// The model card: what a user of an exported face model needs to use it exactly as trained — embedding
// and input size, input convention, alignment template, calibrated thresholds (with the FAR and the data
// set they were measured on) and provenance. Stored as `model-card.json` beside a tfjs model.json, as a
// `<file>.card.json` sidecar beside .onnx/.pth files, and inside exported ONNX as metadata.
import fs from 'node:fs';
import path from 'node:path';
import { writeFileAtomic } from '../util/atomic.ts';
import { readOnnxModel } from '../convert/onnx/reader.ts';
import { CARD_FILE, ONNX_CARD_KEY, parseCard, type ModelCard } from './model-card.ts';

export * from './model-card.ts';

/** Where a model's card lives: inside a tfjs model directory (a run's final model), else a sidecar beside the file. */
export function cardPath(model: string): string {
  if (fs.existsSync(model) && fs.statSync(model).isDirectory()) {
    const final = path.join(model, 'model');
    return fs.existsSync(path.join(final, 'model.json')) && !fs.existsSync(path.join(model, 'model.json')) ? path.join(final, CARD_FILE) : path.join(model, CARD_FILE);
  }
  if (path.basename(model) === 'model.json') return path.join(path.dirname(model), CARD_FILE);
  return `${model}.card.json`;
}

/** The card stored with a model (beside it, or inside an ONNX file's metadata), or undefined when it has none. */
export function readCard(model: string): ModelCard | undefined {
  const file = cardPath(model);
  if (fs.existsSync(file)) return parseCard(fs.readFileSync(file, 'utf8'), file);
  if (model.toLowerCase().endsWith('.onnx') && fs.existsSync(model)) {
    const props = readOnnxModel(model).model.metadataProps ?? [];
    const text = props.find((p) => p.key === ONNX_CARD_KEY)?.value;
    if (text) return parseCard(text, `${model} (metadata ${ONNX_CARD_KEY})`);
  }
  return undefined;
}

export function writeCard(model: string, card: ModelCard): string {
  const file = cardPath(model);
  writeFileAtomic(file, `${JSON.stringify(card, null, 2)}\n`);
  return file;
}

