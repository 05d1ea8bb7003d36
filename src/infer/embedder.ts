// What every face-recognition model runner provides (tfjs layers model, `.pth`, `.onnx`), and the
// input preparation they share.
import { ArcfaceError } from '../errors.ts';
import type { RgbImage } from './image.ts';

export type ModelFormat = 'tfjs' | 'onnx' | 'pth';

export interface Embedder {
  /** The model path, for messages. */
  readonly file: string;
  readonly format: ModelFormat;
  /** Side of the square RGB input. */
  readonly inputSize: number;
  readonly embeddingSize: number;
  /** True when the model normalises itself (raw 0..255 input); else it gets (x - 127.5) / 127.5. */
  readonly rawInput: boolean;
  /** Largest batch one call takes (a fixed batch dimension in the graph), Infinity when dynamic. */
  readonly maxBatch: number;
  /** Raw (not L2-normalised) embeddings of `inputSize` crops, in order. */
  embed(crops: RgbImage[]): Promise<Float32Array[]>;
  dispose(): Promise<void>;
}

/** Model input as float32, normalised unless the model does it; NHWC or NCHW. */
export function inputTensorData(crops: RgbImage[], size: number, layout: 'nhwc' | 'nchw', rawInput: boolean): Float32Array {
  const plane = size * size;
  const out = new Float32Array(crops.length * plane * 3);
  crops.forEach((c, n) => {
    if (c.width !== size || c.height !== size) throw new Error(`crop is ${c.width}x${c.height}, the model takes ${size}x${size}`);
    const base = n * plane * 3;
    for (let i = 0; i < plane; i++) {
      for (let ch = 0; ch < 3; ch++) {
        const v = c.data[i * 3 + ch];
        out[layout === 'nhwc' ? base + i * 3 + ch : base + ch * plane + i] = rawInput ? v : (v - 127.5) / 127.5;
      }
    }
  });
  return out;
}

/** Checks an image-input shape: square, 3 channels. Returns the side. */
export function checkImageInput(file: string, h: number | string | null | undefined, w: number | string | null | undefined, c: number | string | null | undefined, what: string): number {
  if (c !== 3) throw new ArcfaceError(`the model input ${what} has ${c ?? '?'} channels; a face model takes 3 (RGB)`, file);
  if (typeof h !== 'number' || typeof w !== 'number' || h <= 0) {
    throw new ArcfaceError(`the model input ${what} has no fixed height and width; give a model with a fixed square input`, file);
  }
  if (h !== w) throw new ArcfaceError(`the model input ${what} is ${h}x${w}; a face model takes a square crop`, file);
  return h;
}
