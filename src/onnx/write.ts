// Writing an exported graph to an .onnx file (Node only; export.ts itself also runs in browsers).
import type * as tf from '@tensorflow/tfjs';
import { ArcfaceError } from '../errors.ts';
import { writeFileAtomic } from '../util/atomic.ts';
import { exportOnnx, type ExportOnnxOptions } from './export.ts';

/** Exports and writes `file` atomically (a temporary name renamed into place). */
export function writeOnnx(file: string, model: tf.LayersModel, opts: ExportOnnxOptions = {}): void {
  const bytes = exportOnnx(model, { label: file, ...opts });
  try {
    writeFileAtomic(file, bytes);
  } catch (e) {
    throw e instanceof ArcfaceError ? e : new ArcfaceError(`cannot write ONNX file: ${(e as Error).message}`, file);
  }
}
