// The model card's contents and the decisions made from it, with no file access (browsers included):
// what a user of an exported face model needs to use it exactly as trained. src/infer/card.ts reads and
// writes it beside models.
import { ArcfaceError } from '../errors.ts';
import { arcfaceTemplate } from './align.ts';

export const CARD_FILE = 'model-card.json';
/** The ONNX metadata_props key that holds the card's JSON. */
export const ONNX_CARD_KEY = 'arcface.model_card';

export interface CalibratedThreshold {
  /** The FAR the threshold was chosen for. */
  far: number;
  /** Same person iff cosine similarity > this. */
  cosine: number;
  /** Genuine pairs accepted at it. */
  tar: number;
  /** The pair set it was measured on, and how many pairs it has. */
  dataset: string;
  pairs: number;
}

export interface ModelCard {
  embeddingSize: number;
  inputSize: number;
  /** Pixels the model expects: (x - mean) / std per channel, in this channel order and layout. */
  input: { channels: 'RGB' | 'BGR'; mean: number[]; std: number[]; layout: 'NHWC' | 'NCHW' };
  alignment: { template: string; points: (readonly [number, number])[] };
  network?: string;
  thresholds: CalibratedThreshold[];
  provenance: { source?: string; created: string; tool: string; notes?: string[] };
}

export function defaultCard(embeddingSize: number, inputSize: number, extra: Partial<ModelCard> = {}): ModelCard {
  return {
    embeddingSize,
    inputSize,
    input: { channels: 'RGB', mean: [127.5, 127.5, 127.5], std: [127.5, 127.5, 127.5], layout: 'NHWC' },
    alignment: { template: `insightface arcface ${inputSize}x${inputSize}`, points: [...arcfaceTemplate(inputSize)] },
    thresholds: [],
    provenance: { created: new Date().toISOString(), tool: 'arcface-ts' },
    ...extra,
  };
}

/** Checks a parsed card's shape; `where` names the file (or ONNX metadata) in errors. */
export function parseCard(text: string, where: string): ModelCard {
  let c: unknown;
  try {
    c = JSON.parse(text);
  } catch (e) {
    throw new ArcfaceError(`model card is not valid JSON (${(e as Error).message})`, where);
  }
  const card = c as ModelCard;
  const bad = (key: string) => new ArcfaceError(`model card: "${key}" is missing or invalid`, where);
  if (typeof c !== 'object' || c === null || Array.isArray(c)) throw new ArcfaceError('model card must be a JSON object', where);
  if (!Number.isInteger(card.embeddingSize) || card.embeddingSize < 1) throw bad('embeddingSize');
  if (!Number.isInteger(card.inputSize) || card.inputSize < 1) throw bad('inputSize');
  if (!Array.isArray(card.thresholds)) throw bad('thresholds');
  card.thresholds.forEach((t, i) => {
    if (!(t && t.far > 0 && t.far <= 1 && Number.isFinite(t.cosine) && t.cosine >= -1 && t.cosine <= 1)) throw bad(`thresholds[${i}]`);
  });
  return card;
}

/** Replaces the card's thresholds measured on `dataset` (other data sets' stay). */
export function withThresholds(card: ModelCard, dataset: string, thresholds: CalibratedThreshold[]): ModelCard {
  return { ...card, thresholds: [...card.thresholds.filter((t) => t.dataset !== dataset), ...thresholds] };
}

/**
 * The threshold to decide with: at the FAR asked for, else 1e-3 if calibrated, else the smallest FAR
 * calibrated (the strictest). Undefined when the card has none.
 */
export function pickThreshold(card: ModelCard | undefined, far?: number): CalibratedThreshold | undefined {
  const ts = card?.thresholds ?? [];
  if (!ts.length) return undefined;
  const at = (f: number) => ts.find((t) => Math.abs(t.far - f) <= 1e-12 * f);
  if (far !== undefined) return at(far);
  return at(1e-3) ?? [...ts].sort((a, b) => a.far - b.far)[0];
}

export interface Decision {
  /** Same person iff cosine > value. */
  value: number;
  /** Where it came from, for the user: "--threshold", "model card: FAR 0.001 on lfw", "default". */
  source: string;
}

/**
 * The threshold to decide with: one given explicitly wins; else the card's (at `far` when given); else
 * `fallback`. Asking for a FAR the card has no threshold for is an error naming the FARs it has.
 */
export function decisionThreshold(opts: { threshold?: number; far?: number; card?: ModelCard; cardFile?: string; fallback: number }): Decision {
  if (opts.threshold !== undefined) return { value: opts.threshold, source: 'given' };
  const t = pickThreshold(opts.card, opts.far);
  if (t) return { value: t.cosine, source: `model card: FAR ${t.far} on ${t.dataset}` };
  if (opts.far !== undefined) {
    const have = opts.card?.thresholds.map((x) => x.far).join(', ');
    throw new ArcfaceError(`the model card has no threshold at FAR ${opts.far}${have ? ` (it has ${have})` : ''}; calibrate one at that FAR first`, opts.cardFile);
  }
  return { value: opts.fallback, source: 'default' };
}
