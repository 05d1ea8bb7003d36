// Our training config <-> an arcface_torch config module (`config = edict(); config.key = value`).
import fs from 'node:fs';
import path from 'node:path';
import type { TrainConfig } from '../../train/config.ts';
import { IRESNET_LAYERS } from '../../models/iresnet.ts';

const IRESNET_LAYERS_OR_MBF: string[] = [...Object.keys(IRESNET_LAYERS), 'mbf', 'mbf_large'];

const STANDARD_WIDTHS = [64, 128, 256, 512];
/** Networks arcface_torch's get_model builds by name (the ones this project also builds). */
const TORCH_NETWORKS = ['r18', 'r34', 'r50', 'r100', 'r200', 'mbf', 'mbf_large'];

function py(v: unknown): string {
  if (v === null || v === undefined) return 'None';
  if (v === true) return 'True';
  if (v === false) return 'False';
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : String(v);
  if (typeof v === 'string') return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(py).join(', ')}]`;
  throw new Error(`cannot write ${String(v)} as Python`);
}
const pyFloat = (v: number) => (Number.isInteger(v) ? `${v}.0` : String(v));

export interface ConfigPyOptions {
  worldSize: number;
  numClasses: number;
  numImage: number;
  /** config.output: where train_v2.py finds checkpoint_gpu_{rank}.pt. */
  output: string;
  /** config.rec on the torchrun machine (default: the run's rec). */
  rec?: string;
}

export interface ConfigPy {
  text: string;
  /** Keys with no arcface_torch equivalent whose value changes training; one line each. */
  warnings: string[];
}

/** An arcface_torch config for continuing `cfg`'s run on `worldSize` ranks; every key of ours is accounted for. */
export function toConfigPy(cfg: TrainConfig, o: ConfigPyOptions): ConfigPy {
  const warnings: string[] = [];
  const notes: string[] = [];
  const warn = (key: keyof TrainConfig, why: string) => warnings.push(`${key} = ${JSON.stringify(cfg[key])}: ${why}`);
  const note = (key: keyof TrainConfig, why: string) => notes.push(`# our ${key} = ${JSON.stringify(cfg[key])}: ${why}`);

  const custom = cfg.network === 'iresnet' || (cfg.widths !== null && cfg.widths.join() !== STANDARD_WIDTHS.join());
  if (!TORCH_NETWORKS.includes(cfg.network) || custom) {
    warn('network', 'arcface_torch\'s get_model has no such network; register one in backbones/__init__.py with these layers/widths');
  }
  if (cfg.layers !== null && cfg.network === 'iresnet') warn('layers', 'no arcface_torch key: blocks per stage come from the network name');
  else note('layers', 'no arcface_torch key (implied by the network name)');
  if (cfg.widths !== null && cfg.widths.join() !== STANDARD_WIDTHS.join()) warn('widths', 'no arcface_torch key: its IResNet stages are 64/128/256/512 wide');
  else note('widths', 'no arcface_torch key (64/128/256/512 there)');
  if (cfg.input_size !== 112) warn('input_size', 'no arcface_torch key: its backbones take 112x112 input');
  else note('input_size', 'no arcface_torch key (112 there)');
  if (cfg.dropout !== 0) warn('dropout', 'train_v2.py builds the backbone with dropout=0.0');
  else note('dropout', 'train_v2.py uses 0.0');
  if (cfg.scale !== 64) warn('scale', 'train_v2.py hard-codes s = 64');
  else note('scale', 'hard-coded 64 in train_v2.py');
  if (cfg.margin_variant !== 'reference') warn('margin_variant', 'arcface_torch has only the reference (straight-through) ArcFace margin');
  else note('margin_variant', 'the reference margin is the only one there');
  if (cfg.clip_grad_norm !== 5) warn('clip_grad_norm', 'train_v2.py hard-codes clip_grad_norm_(backbone, 5)');
  else note('clip_grad_norm', 'hard-coded 5 in train_v2.py');
  if (cfg.max_steps !== null) warn('max_steps', 'no arcface_torch key: it trains every epoch up to num_epoch');
  else note('max_steps', 'no arcface_torch key');
  if (cfg.freeze_bn) warn('freeze_bn', 'no arcface_torch key: its BatchNorms always train');
  else note('freeze_bn', 'no arcface_torch key');
  if (cfg.backbone_lr_scale !== 1) warn('backbone_lr_scale', 'no arcface_torch key: backbone and centres share one lr there');
  else note('backbone_lr_scale', 'no arcface_torch key (one lr there)');
  if (cfg.skip_corrupt) warn('skip_corrupt', 'no arcface_torch key: a corrupt image stops its data loader');
  else note('skip_corrupt', 'no arcface_torch key');
  note('val_batch_size', 'no arcface_torch key (it verifies in batches of 10; results are the same)');
  note('save_every', 'no arcface_torch key (it saves at every epoch end)');
  note('init', 'no arcface_torch key (the run resumes from the checkpoints)');
  if (cfg.small_data) warn('small_data', 'no arcface_torch key: it trains with the batch and epochs of this config and holds nothing out');
  else note('small_data', 'no arcface_torch key');
  note('val_split', 'no arcface_torch key (small_data only)');
  note('min_steps', 'no arcface_torch key (small_data only)');

  const perRank = cfg.batch_size / o.worldSize;
  const valNames = cfg.val_targets.map((t) => path.basename(t).replace(/\.bin$/, ''));
  const lines = [
    '# arcface_torch config written by `arcface export --format torchrun` (arcface-ts).',
    '# Copy it to <arcface_torch>/configs/ and run the torchrun command in README.md next to it.',
    'from easydict import EasyDict as edict',
    '',
    'config = edict()',
    `config.network = ${py(cfg.network)}`,
    `config.embedding_size = ${cfg.embedding_size}`,
    `config.margin_list = (${cfg.margin_list.map(pyFloat).join(', ')})`,
    `config.interclass_filtering_threshold = ${py(cfg.interclass_filtering_threshold)}`,
    `config.sample_rate = ${pyFloat(cfg.sample_rate)}`,
    `config.fp16 = ${py(cfg.fp16)}`,
    `config.optimizer = ${py(cfg.optimizer)}`,
    `config.lr = ${pyFloat(cfg.lr)}`,
    `config.momentum = ${pyFloat(cfg.momentum)}`,
    `config.weight_decay = ${pyFloat(cfg.weight_decay)}`,
    `config.batch_size = ${perRank}  # per GPU: our global batch ${cfg.batch_size} / ${o.worldSize} ranks`,
    `config.gradient_acc = ${cfg.gradient_acc}`,
    `config.num_epoch = ${cfg.num_epoch}`,
    `config.warmup_epoch = ${py(cfg.warmup_epoch)}`,
    `config.rec = ${py(o.rec ?? cfg.rec)}`,
    `config.num_classes = ${o.numClasses}`,
    `config.num_image = ${o.numImage}`,
    `config.val_targets = ${py(valNames)}`,
    `config.output = ${py(o.output)}`,
    'config.resume = True',
    'config.save_all_states = True',
    'config.dali = False',
    `config.verbose = ${cfg.verbose}`,
    `config.frequent = ${cfg.frequent}`,
    `config.seed = ${cfg.seed}`,
    `config.num_workers = ${cfg.num_workers ?? 2}${cfg.num_workers === null ? '  # ours: null (one per core)' : ''}`,
    '',
    '# Keys of ours with no arcface_torch equivalent:',
    ...warnings.map((w) => `# WARNING our ${w}`),
    ...notes,
    '',
  ];
  return { text: lines.join('\n'), warnings };
}

// ---- reading a config.py back (the literal subset configs use)

class PyLiteral {
  private i = 0;
  constructor(private readonly s: string) {}
  parse(): unknown {
    const v = this.value();
    this.ws();
    if (this.i < this.s.length && this.s[this.i] !== '#') throw new Error('trailing text');
    return v;
  }
  private ws() {
    while (this.i < this.s.length && /\s/.test(this.s[this.i]!)) this.i++;
  }
  private value(): unknown {
    this.ws();
    const c = this.s[this.i];
    if (c === '(' || c === '[') {
      const close = c === '(' ? ')' : ']';
      this.i++;
      const out: unknown[] = [];
      for (;;) {
        this.ws();
        if (this.s[this.i] === close) {
          this.i++;
          return out;
        }
        out.push(this.value());
        this.ws();
        if (this.s[this.i] === ',') this.i++;
        else if (this.s[this.i] !== close) throw new Error('expected , or closing bracket');
      }
    }
    const str = /^[rRuUbB]?(['"])((?:\\.|(?!\1).)*)\1/.exec(this.s.slice(this.i));
    if (str) {
      this.i += str[0].length;
      const raw = /^[rR]/.test(str[0]);
      return raw ? str[2] : str[2]!.replace(/\\(.)/g, (_m, ch: string) => (ch === 'n' ? '\n' : ch === 't' ? '\t' : ch));
    }
    const word = /^(True|False|None|[-+]?(\d[\d_]*\.?\d*([eE][-+]?\d+)?|\.\d+([eE][-+]?\d+)?))/.exec(this.s.slice(this.i));
    if (!word) throw new Error('not a literal');
    this.i += word[0].length;
    if (word[0] === 'True') return true;
    if (word[0] === 'False') return false;
    if (word[0] === 'None') return null;
    return Number(word[0].replace(/_/g, ''));
  }
}

/** `config.key = literal` assignments of an arcface_torch config file (others, e.g. computed values, are skipped). */
export function parseConfigPy(file: string): Map<string, unknown> {
  const out = new Map<string, unknown>();
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    const m = /^config\.(\w+)\s*=\s*(.+)$/.exec(line.trim());
    if (!m) continue;
    try {
      out.set(m[1]!, new PyLiteral(m[2]!).parse());
    } catch {
      // not a literal (an expression or a name): arcface_torch evaluates it, we cannot
    }
  }
  return out;
}

/** Our config keys from an arcface_torch config (batch size made global for `worldSize` ranks). */
export function configFromPy(values: Map<string, unknown>, worldSize: number): Partial<Record<keyof TrainConfig, unknown>> {
  const out: Partial<Record<keyof TrainConfig, unknown>> = {};
  const same: (keyof TrainConfig)[] = [
    'network', 'embedding_size', 'interclass_filtering_threshold', 'sample_rate', 'fp16', 'optimizer', 'lr', 'momentum',
    'weight_decay', 'gradient_acc', 'num_epoch', 'warmup_epoch', 'rec', 'num_classes', 'num_image', 'verbose', 'frequent', 'seed', 'num_workers',
  ];
  for (const k of same) if (values.has(k) && values.get(k) !== null) out[k] = values.get(k);
  // A network arcface_torch does not name (a custom IResNet registered there) is not a config of ours on its
  // own: the checkpoints give its layout.
  if (typeof out.network === 'string' && !IRESNET_LAYERS_OR_MBF.includes(out.network)) delete out.network;
  const margin = values.get('margin_list');
  if (Array.isArray(margin) && margin.length === 3 && margin.every((x) => typeof x === 'number')) out.margin_list = margin;
  const bs = values.get('batch_size');
  if (typeof bs === 'number') out.batch_size = bs * worldSize;
  const vt = values.get('val_targets');
  if (Array.isArray(vt) && vt.every((x) => typeof x === 'string')) out.val_targets = vt;
  return out;
}
