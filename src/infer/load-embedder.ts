// Opens a face-recognition model for embedding, whatever it is stored as: a tfjs layers model
// directory, an insightface `.pth`, or an `.onnx` graph (run with onnxruntime-node).
import fs from 'node:fs';
import path from 'node:path';
import { ArcfaceError } from '../errors.ts';
import type { Embedder, ModelFormat } from './embedder.ts';
import { loadOnnxEmbedder } from './embedder-onnx.ts';
import { loadTfjsEmbedder } from './embedder-tfjs.ts';

/** Which loader a model path needs: a directory (or model.json) is tfjs, else by extension. */
export function modelFormatOf(file: string): ModelFormat {
  if (!fs.existsSync(file)) throw new ArcfaceError('no such model file or directory', file);
  if (fs.statSync(file).isDirectory() || file.endsWith('.json')) return 'tfjs';
  const ext = path.extname(file).toLowerCase();
  if (ext === '.onnx') return 'onnx';
  if (ext === '.pth' || ext === '.pt') return 'pth';
  throw new ArcfaceError('unknown model format: expected a tfjs model directory, an .onnx or a .pth/.pt file', file);
}

/** Opens a model for embedding. tfjs and .pth run on the active tfjs backend. */
export async function loadEmbedder(file: string): Promise<Embedder> {
  const format = modelFormatOf(file);
  return format === 'onnx' ? loadOnnxEmbedder(file) : loadTfjsEmbedder(file, format);
}
