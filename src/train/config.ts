// Training configs as plain data: `configs/base.json` holds every key with its default (insightface's
// `configs/base.py` names), a recipe names a base with "extends" and overrides a few keys. Unknown keys and
// wrong types are errors before any work starts.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ArcfaceError } from '../errors.ts';
import { resolveSpec, type BackboneSpec } from '../models/factory.ts';

export interface TrainConfig {
  network: string;
  embedding_size: number;
  input_size: number;
  /** IResNet blocks per stage / stage widths (null: from the network name / reference widths). */
  layers: number[] | null;
  widths: number[] | null;
  dropout: number;

  /** (m1, m2, m3): ArcFace (1, 0.5, 0), CosFace (1, 0, 0.4). */
  margin_list: [number, number, number];
  /** s; insightface hard-codes 64. */
  scale: number;
  /** 'reference' (straight-through ArcFace gradient) or 'classic' (old true-gradient ArcFace). */
  margin_variant: 'reference' | 'classic';
  interclass_filtering_threshold: number;
  sample_rate: number;

  optimizer: 'sgd' | 'adamw';
  lr: number;
  /** Accepted for insightface compatibility; SGD momentum is 0.9 as in the reference. */
  momentum: number;
  weight_decay: number;
  /** Global-norm clip of the backbone gradients (the reference: 5); 0 disables. */
  clip_grad_norm: number;
  batch_size: number;
  gradient_acc: number;
  num_epoch: number;
  warmup_epoch: number;
  /** Stop after this many iterations (null: the whole schedule). The schedule still spans num_epoch. */
  max_steps: number | null;
  /** Accepted for insightface compatibility; tfjs trains in float32. */
  fp16: boolean;

  /** Training data: a folder with train.rec/train.idx, a .rec file, or an image folder. */
  rec: string;
  /** null: from the data (property file / folder count). */
  num_classes: number | null;
  /** null: the number of images in the data. */
  num_image: number | null;
  /** Verification sets: names looked up as `<rec>/<name>.bin`, or paths to .bin files. */
  val_targets: string[];
  val_batch_size: number;

  output: string;
  /** Verification every N iterations. */
  verbose: number;
  /** Log every N iterations. */
  frequent: number;
  /** Checkpoint every N iterations (and at every epoch end). */
  save_every: number;
  seed: number;
  /** Decoding threads (null: number of cores). */
  num_workers: number | null;
  skip_corrupt: boolean;

  /** Pretrained backbone to start from (tfjs dir, .pth, .onnx or run dir). */
  init: string | null;
  /** Fine-tuning: BatchNorm uses (and keeps) its running statistics. */
  freeze_bn: boolean;
  /** Backbone lr = lr * this (the head keeps lr). */
  backbone_lr_scale: number;
  /**
   * Fine-tuning on a few photos per person: batch size and epochs adapt to the data, `val_split` of each
   * person's photos are held out as a verification set, accuracy is measured before and after.
   */
  small_data: boolean;
  /** With small_data: the share of each person's photos held out (at least two of anyone with four or more). */
  val_split: number;
  /** With small_data: train at least this many steps. */
  min_steps: number;
}

type Kind = 'number' | 'integer' | 'string' | 'boolean' | 'number[]' | 'integer[]' | 'string[]';
interface Rule {
  kind: Kind;
  nullable?: boolean;
  /** Bounds of the value, or of every item of a list. */
  min?: number;
  max?: number;
  choices?: readonly string[];
  length?: number;
}
const SCHEMA: Record<keyof TrainConfig, Rule> = {
  network: { kind: 'string' },
  // Upper bounds far past any real network: they stop a typo from building a model that cannot fit in memory.
  embedding_size: { kind: 'integer', min: 1, max: 65536 },
  input_size: { kind: 'integer', min: 16, max: 4096 },
  layers: { kind: 'integer[]', nullable: true, length: 4, min: 1, max: 1024 },
  widths: { kind: 'integer[]', nullable: true, length: 4, min: 1, max: 16384 },
  dropout: { kind: 'number', min: 0 },
  margin_list: { kind: 'number[]', length: 3 },
  scale: { kind: 'number', min: 0 },
  margin_variant: { kind: 'string', choices: ['reference', 'classic'] },
  interclass_filtering_threshold: { kind: 'number', min: 0 },
  sample_rate: { kind: 'number', min: 0 },
  optimizer: { kind: 'string', choices: ['sgd', 'adamw'] },
  lr: { kind: 'number', min: 0 },
  momentum: { kind: 'number', min: 0 },
  weight_decay: { kind: 'number', min: 0 },
  clip_grad_norm: { kind: 'number', min: 0 },
  batch_size: { kind: 'integer', min: 1 },
  gradient_acc: { kind: 'integer', min: 1 },
  num_epoch: { kind: 'integer', min: 1 },
  warmup_epoch: { kind: 'number', min: 0 },
  max_steps: { kind: 'integer', nullable: true, min: 1 },
  fp16: { kind: 'boolean' },
  rec: { kind: 'string' },
  num_classes: { kind: 'integer', nullable: true, min: 1 },
  num_image: { kind: 'integer', nullable: true, min: 1 },
  val_targets: { kind: 'string[]' },
  val_batch_size: { kind: 'integer', min: 1 },
  output: { kind: 'string' },
  verbose: { kind: 'integer', min: 1 },
  frequent: { kind: 'integer', min: 1 },
  save_every: { kind: 'integer', min: 1 },
  seed: { kind: 'integer', min: 0 },
  num_workers: { kind: 'integer', nullable: true, min: 0 },
  skip_corrupt: { kind: 'boolean' },
  init: { kind: 'string', nullable: true },
  freeze_bn: { kind: 'boolean' },
  backbone_lr_scale: { kind: 'number', min: 0 },
  small_data: { kind: 'boolean' },
  val_split: { kind: 'number', min: 0 },
  min_steps: { kind: 'integer', min: 1 },
};

export const CONFIG_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'configs');

function levenshtein(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++)
    for (let j = 1; j <= b.length; j++)
      d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
  return d[a.length]![b.length]!;
}

function checkValue(key: string, v: unknown, rule: Rule): string | null {
  if (v === null) return rule.nullable ? null : `${key} must not be null`;
  const isInt = (x: unknown) => typeof x === 'number' && Number.isInteger(x);
  const isNum = (x: unknown) => typeof x === 'number' && Number.isFinite(x);
  const base = rule.kind.replace('[]', '');
  const one = (x: unknown) => (base === 'integer' ? isInt(x) : base === 'number' ? isNum(x) : typeof x === base);
  if (rule.kind.endsWith('[]')) {
    if (!Array.isArray(v) || !v.every(one)) return `${key} must be a list of ${base}s, got ${JSON.stringify(v)}`;
    if (rule.length !== undefined && v.length !== rule.length) return `${key} must have ${rule.length} entries, got ${v.length}`;
    const out = v.find((x) => (rule.min !== undefined && (x as number) < rule.min) || (rule.max !== undefined && (x as number) > rule.max));
    if (out !== undefined) return `${key} entries must be between ${rule.min} and ${rule.max}, got ${JSON.stringify(v)}`;
    return null;
  }
  if (!one(v)) return `${key} must be ${base === 'integer' ? 'an integer' : `a ${base}`}, got ${JSON.stringify(v)}`;
  if (rule.min !== undefined && (v as number) < rule.min) return `${key} must be >= ${rule.min}, got ${v}`;
  if (rule.max !== undefined && (v as number) > rule.max) return `${key} must be <= ${rule.max}, got ${v}`;
  if (rule.choices && !rule.choices.includes(v as string)) return `${key} must be one of ${rule.choices.join(', ')}, got ${JSON.stringify(v)}`;
  return null;
}

/** Checks keys and types of a (partial) config object; throws one error listing every problem. */
export function validateConfig(obj: Record<string, unknown>, where: string): void {
  const problems: string[] = [];
  const known = Object.keys(SCHEMA);
  for (const [k, v] of Object.entries(obj)) {
    if (k === 'extends') continue;
    // Own keys only: "toString" or "constructor" must not find Object.prototype's members.
    const rule = Object.hasOwn(SCHEMA, k) ? SCHEMA[k as keyof TrainConfig] : undefined;
    if (!rule) {
      const near = known.filter((n) => levenshtein(n, k) <= 3).sort((a, b) => levenshtein(a, k) - levenshtein(b, k))[0];
      problems.push(`unknown key "${k}"${near ? ` (did you mean "${near}"?)` : ''}`);
      continue;
    }
    const p = checkValue(k, v, rule);
    if (p) problems.push(p);
  }
  if (problems.length) throw new ArcfaceError(`invalid config:\n  ${problems.join('\n  ')}`, where);
}

function readJson(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    throw new ArcfaceError('config file not found', file);
  }
  try {
    const v = JSON.parse(text);
    if (!v || typeof v !== 'object' || Array.isArray(v)) throw new Error('not a JSON object');
    return v as Record<string, unknown>;
  } catch (e) {
    throw new ArcfaceError(`not a valid JSON config (${(e as Error).message})`, file);
  }
}

/** Resolves a config name ("tiny") or path ("configs/tiny.json", "my.json"). */
export function configPath(nameOrPath: string, relativeTo = CONFIG_DIR): string {
  if (fs.existsSync(nameOrPath) && fs.statSync(nameOrPath).isFile()) return nameOrPath;
  const inDir = path.join(relativeTo, nameOrPath.endsWith('.json') ? nameOrPath : `${nameOrPath}.json`);
  if (fs.existsSync(inDir)) return inDir;
  const bundled = path.join(CONFIG_DIR, nameOrPath.endsWith('.json') ? nameOrPath : `${nameOrPath}.json`);
  if (fs.existsSync(bundled)) return bundled;
  throw new ArcfaceError(`config not found (looked for a file and for ${path.relative(process.cwd(), inDir)})`, nameOrPath);
}

/** Loads a config with its `extends` chain, then applies `overrides`; validates everything. */
export function loadConfig(nameOrPath: string, overrides: Partial<Record<string, unknown>> = {}): TrainConfig {
  const chain: Record<string, unknown>[] = [];
  /** The file each entry of `chain` came from. */
  const files: string[] = [];
  const seen = new Set<string>();
  let file = configPath(nameOrPath);
  for (;;) {
    const real = path.resolve(file);
    if (seen.has(real)) throw new ArcfaceError('config "extends" chain loops', file);
    seen.add(real);
    const obj = readJson(file);
    validateConfig(obj, file);
    chain.unshift(obj);
    files.unshift(file);
    if (typeof obj.extends !== 'string') {
      if (obj.extends !== undefined) throw new ArcfaceError('"extends" must be a config name', file);
      break;
    }
    file = configPath(obj.extends, path.dirname(file));
  }
  validateConfig(overrides as Record<string, unknown>, 'command-line overrides');
  const merged: Record<string, unknown> = {};
  for (const obj of [...chain, overrides]) for (const [k, v] of Object.entries(obj)) if (k !== 'extends' && v !== undefined) merged[k] = v;
  const missing = Object.keys(SCHEMA).filter((k) => !(k in merged));
  if (missing.length) throw new ArcfaceError(`config lacks ${missing.join(', ')} (does it extend "base"?)`, nameOrPath);
  const cfg = merged as unknown as TrainConfig;
  // The network and its layers/widths must make a backbone; say which file set them.
  try {
    specFromConfig(cfg);
  } catch (e) {
    const sets = (o: Partial<Record<string, unknown>>) => ['network', 'layers', 'widths'].some((k) => Object.hasOwn(o, k) && o[k] !== undefined);
    let where = sets(overrides) ? 'command-line overrides' : nameOrPath;
    for (let i = chain.length - 1; i >= 0 && !sets(overrides); i--) {
      if (sets(chain[i]!)) {
        where = files[i]!;
        break;
      }
    }
    throw new ArcfaceError(`invalid config: key "network": ${(e as Error).message}`, where);
  }
  return cfg;
}

/** The backbone a config describes (network name plus optional layers/widths, sizes). */
export function specFromConfig(cfg: TrainConfig): BackboneSpec {
  return resolveSpec({
    network: cfg.network,
    embeddingSize: cfg.embedding_size,
    inputSize: cfg.input_size,
    ...(cfg.layers ? { layers: cfg.layers } : {}),
    ...(cfg.widths ? { widths: cfg.widths } : {}),
  });
}
