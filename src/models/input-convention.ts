// What a face model takes as input: channel order and the per-channel normalisation its first layer
// expects. insightface's torch models take RGB (x - 127.5) / 127.5; MXNet-era models take raw 0..255
// RGB with (x - 127.5) * 0.0078125 inside the graph; Caffe-style models take BGR. Stored in a saved
// model's metadata (`arcfaceInput`), so training, evaluation, embedding and export feed a model what
// it was made for.
import type * as tf from '@tensorflow/tfjs';

export interface InputConvention {
  /** Channel order of the model input. */
  order: 'RGB' | 'BGR';
  /** The tfjs model's input is (pixel - mean) / std per channel (in `order`); mean 0, std 1: raw 0..255 pixels. */
  mean: number[];
  std: number[];
  /**
   * The original model took raw 0..255 pixels and normalised them itself; the tfjs network (converted to
   * the native backbone) does not, and an ONNX export puts the normalisation back in front.
   */
  normalisationInGraph?: boolean;
}

/** insightface's arcface_torch convention: RGB, (x - 127.5) / 127.5. */
export const STANDARD_INPUT: InputConvention = { order: 'RGB', mean: [127.5, 127.5, 127.5], std: [127.5, 127.5, 127.5] };
/** Raw 0..255 RGB pixels (a tfjs model with its normalisation inside). */
export const RAW_INPUT: InputConvention = { order: 'RGB', mean: [0, 0, 0], std: [1, 1, 1] };

const same = (a: number[], b: number[]) => a.length === b.length && a.every((v, i) => Math.abs(v - b[i]!) <= 1e-6 * Math.max(1, Math.abs(b[i]!)));

/** True when the tfjs model takes exactly what the data pipeline writes (RGB, (x - 127.5) / 127.5). */
export function isStandardInput(c: InputConvention): boolean {
  return c.order === 'RGB' && same(c.mean, STANDARD_INPUT.mean) && same(c.std, STANDARD_INPUT.std);
}

/** True when the tfjs model takes raw 0..255 pixels. */
export function isRawInput(c: InputConvention): boolean {
  return same(c.mean, [0, 0, 0]) && same(c.std, [1, 1, 1]);
}

/** One line for logs and model cards, e.g. "RGB, (x - 127.5) / 128 inside the graph". */
export function describeInput(c: InputConvention): string {
  const fmt = (v: number[]) => (v.every((x) => x === v[0]) ? `${+v[0]!.toFixed(6)}` : `[${v.map((x) => +x.toFixed(6)).join(', ')}]`);
  if (isRawInput(c)) return `${c.order}, raw 0..255`;
  return `${c.order}, (x - ${fmt(c.mean)}) / ${fmt(c.std)}${c.normalisationInGraph ? ' inside the graph (raw 0..255 input)' : ''}`;
}

function valid(c: unknown): c is InputConvention {
  const o = c as InputConvention;
  const three = (v: unknown) => Array.isArray(v) && v.length === 3 && v.every((x) => typeof x === 'number' && Number.isFinite(x));
  return !!o && (o.order === 'RGB' || o.order === 'BGR') && three(o.mean) && three(o.std) && o.std.every((s) => s !== 0);
}

/**
 * The input convention in a model's metadata: `arcfaceInput` when set; raw pixels for a graph imported
 * from ONNX with its normalisation inside; otherwise the standard one.
 */
export function inputConventionOf(model: tf.LayersModel): InputConvention {
  const meta = model.getUserDefinedMetadata() as { arcfaceInput?: unknown; onnx?: { normalisationBuiltIn?: boolean } } | undefined;
  if (valid(meta?.arcfaceInput)) return meta.arcfaceInput;
  if (meta?.onnx?.normalisationBuiltIn === true) return RAW_INPUT;
  return STANDARD_INPUT;
}

/** Records the convention in the model's metadata (kept by saveModel). */
export function setInputConvention(model: tf.LayersModel, c: InputConvention): void {
  model.setUserDefinedMetadata({ ...(model.getUserDefinedMetadata() ?? {}), arcfaceInput: c as unknown as object });
}

/**
 * Per channel of the model input, y = a * x[src] + b for x in the pipeline's RGB (x - 127.5) / 127.5,
 * i.e. pixel = 127.5 x + 127.5. Null when the model takes the pipeline's values unchanged.
 */
export function inputAffine(c: InputConvention): { a: number[]; b: number[]; src: number[] } | null {
  if (isStandardInput(c)) return null;
  const src = c.order === 'BGR' ? [2, 1, 0] : [0, 1, 2];
  return { a: c.std.map((s) => 127.5 / s), b: c.mean.map((m, i) => (127.5 - m) / c.std[i]!), src };
}

/** Rewrites NHWC RGB (x - 127.5) / 127.5 values in place into what the model takes (no-op for the standard). */
export function adaptStandardInput(data: Float32Array, c: InputConvention, length = data.length): void {
  const f = inputAffine(c);
  if (!f) return;
  const [a0, a1, a2] = f.a as [number, number, number];
  const [b0, b1, b2] = f.b as [number, number, number];
  const [s0, s1, s2] = f.src as [number, number, number];
  for (let i = 0; i + 2 < length; i += 3) {
    const x0 = data[i + s0]!;
    const x1 = data[i + s1]!;
    const x2 = data[i + s2]!;
    data[i] = a0 * x0 + b0;
    data[i + 1] = a1 * x1 + b1;
    data[i + 2] = a2 * x2 + b2;
  }
}

