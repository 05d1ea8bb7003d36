// Reads an arcface_torch output folder: the `checkpoint_gpu_{rank}.pt` that train_v2.py writes for every
// rank with `save_all_states` (epoch, global_step, backbone, the rank's class-centre shard, optimiser and
// lr-scheduler state dicts).
import fs from 'node:fs';
import path from 'node:path';
import { ArcfaceError } from '../../errors.ts';
import { readTorchObject, TorchFormatError, type TorchTensor } from '../../formats/torch.ts';

export const RANK_FILE = /^checkpoint_gpu_(\d+)\.pt$/;
export const rankFile = (rank: number): string => `checkpoint_gpu_${rank}.pt`;

export interface TorchOptimizerDict {
  /** Per parameter id: buffer name -> tensor (or a number, e.g. an old-style AdamW step). */
  state: Map<number, Map<string, TorchTensor | number>>;
  /** Each group's hyper-parameters and `params` (parameter ids). */
  paramGroups: Map<string, unknown>[];
}

export interface TorchrunRank {
  file: string;
  epoch: number;
  globalStep: number;
  /** state_dict_backbone (a DDP `module.` prefix removed); of ranks > 0, readTorchrun keeps only the BatchNorm buffers. */
  backbone: Map<string, TorchTensor>;
  /** state_dict_softmax_fc.weight: this rank's [num_local, D] centres. */
  centres: TorchTensor;
  /** Of ranks > 0, readTorchrun keeps only the centres' state. */
  optimizer: TorchOptimizerDict;
  /** state_lr_scheduler (null when absent). */
  scheduler: Map<string, unknown> | null;
}

export interface TorchrunRun {
  dir: string;
  worldSize: number;
  ranks: TorchrunRank[];
  /** The folder's config.py, when it has one. */
  configPy?: string;
}

/** True for a folder holding checkpoint_gpu_0.pt, or for such a file itself. */
export function isTorchrunPath(p: string): boolean {
  if (!fs.existsSync(p)) return false;
  if (fs.statSync(p).isFile()) return RANK_FILE.test(path.basename(p));
  return fs.existsSync(path.join(p, rankFile(0)));
}

const asNumber = (v: unknown): number | undefined => (typeof v === 'number' ? v : typeof v === 'bigint' ? Number(v) : undefined);

function isTensor(v: unknown): v is TorchTensor {
  return typeof v === 'object' && v !== null && 'dtype' in v && 'shape' in v && 'data' in v;
}

function readRank(file: string): TorchrunRank {
  let root: unknown;
  try {
    root = readTorchObject(file);
  } catch (e) {
    if (e instanceof TorchFormatError) throw new ArcfaceError(e.message);
    throw e;
  }
  const fail = (msg: string): never => {
    throw new ArcfaceError(msg, file);
  };
  if (!(root instanceof Map)) fail('not an arcface_torch checkpoint (its pickle is not a dict)');
  const dict = root as Map<string, unknown>;
  for (const k of ['epoch', 'global_step', 'state_dict_backbone', 'state_dict_softmax_fc', 'state_optimizer']) {
    if (!dict.has(k)) fail(`has no "${k}" entry: not a train_v2.py checkpoint saved with save_all_states (keys: ${[...dict.keys()].join(', ')})`);
  }
  const epoch = asNumber(dict.get('epoch'));
  const globalStep = asNumber(dict.get('global_step'));
  if (epoch === undefined || !Number.isInteger(epoch) || epoch < 0) fail(`"epoch" is not a non-negative integer`);
  if (globalStep === undefined || !Number.isInteger(globalStep) || globalStep < 0) fail(`"global_step" is not a non-negative integer`);

  const sdRaw = dict.get('state_dict_backbone');
  if (!(sdRaw instanceof Map)) fail('"state_dict_backbone" is not a dict');
  const backbone = new Map<string, TorchTensor>();
  for (const [k, v] of sdRaw as Map<string, unknown>) {
    if (!isTensor(v)) fail(`state_dict_backbone["${k}"] is not a tensor`);
    backbone.set(String(k).startsWith('module.') ? String(k).slice(7) : String(k), v as TorchTensor);
  }
  const fc = dict.get('state_dict_softmax_fc');
  const centres = fc instanceof Map ? fc.get('weight') : undefined;
  if (!isTensor(centres) || centres.shape.length !== 2 || !(centres.data instanceof Float32Array)) {
    fail('state_dict_softmax_fc has no 2-D float "weight" (the rank\'s class centres)');
  }

  const optRaw = dict.get('state_optimizer');
  if (!(optRaw instanceof Map) || !(optRaw.get('state') instanceof Map) || !Array.isArray(optRaw.get('param_groups'))) {
    fail('"state_optimizer" is not a torch optimizer state dict (needs "state" and "param_groups")');
  }
  const state = new Map<number, Map<string, TorchTensor | number>>();
  for (const [id, s] of (optRaw as Map<string, unknown>).get('state') as Map<unknown, unknown>) {
    const pid = asNumber(id);
    if (pid === undefined || !(s instanceof Map)) fail(`state_optimizer.state[${String(id)}] is not a per-parameter dict`);
    const entry = new Map<string, TorchTensor | number>();
    for (const [k, v] of s as Map<string, unknown>) {
      const n = asNumber(v);
      if (isTensor(v)) entry.set(String(k), v);
      else if (n !== undefined) entry.set(String(k), n);
    }
    state.set(pid!, entry);
  }
  const paramGroups = ((optRaw as Map<string, unknown>).get('param_groups') as unknown[]).map((g, i) => {
    if (!(g instanceof Map) || !Array.isArray(g.get('params'))) fail(`state_optimizer.param_groups[${i}] has no "params" list`);
    return g as Map<string, unknown>;
  });
  const sch = dict.get('state_lr_scheduler');
  return {
    file,
    epoch: epoch!,
    globalStep: globalStep!,
    backbone,
    centres: centres as TorchTensor,
    optimizer: { state, paramGroups },
    scheduler: sch instanceof Map ? (sch as Map<string, unknown>) : null,
  };
}

/** The rank files of a run folder (see readTorchrun) without reading them. */
export function listTorchrun(p: string): { dir: string; files: string[]; configPy?: string } {
  if (!fs.existsSync(p)) throw new ArcfaceError('no such file or directory', p);
  const isFile = fs.statSync(p).isFile();
  const dir = isFile ? path.dirname(p) : p;
  let files: string[];
  if (isFile && (!RANK_FILE.test(path.basename(p)) || !fs.existsSync(path.join(dir, rankFile(0))))) {
    files = [p];
  } else {
    const ranks = fs
      .readdirSync(dir)
      .map((f) => RANK_FILE.exec(f))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => Number(m[1]))
      .sort((a, b) => a - b);
    if (ranks.length === 0) throw new ArcfaceError('no checkpoint_gpu_*.pt here: not an arcface_torch output folder (train with save_all_states = True)', dir);
    ranks.forEach((r, i) => {
      if (r !== i) throw new ArcfaceError(`ranks are not 0..${ranks.length - 1}: ${rankFile(i)} is missing`, dir);
    });
    files = ranks.map((r) => path.join(dir, rankFile(r)));
  }
  const configPy = path.join(dir, 'config.py');
  return { dir, files, configPy: fs.existsSync(configPy) ? configPy : undefined };
}

const BUFFER = /\.(running_mean|running_var|num_batches_tracked)$/;

function pruneRank(r: TorchrunRank): TorchrunRank {
  const headId = asNumber((r.optimizer.paramGroups[1]?.get('params') as unknown[] | undefined)?.[0]);
  const state = new Map([...r.optimizer.state].filter(([id]) => id === headId));
  return { ...r, backbone: new Map([...r.backbone].filter(([k]) => BUFFER.test(k))), optimizer: { ...r.optimizer, state } };
}

/**
 * Reads every rank of a run folder (or the folder of one checkpoint_gpu_N.pt file; any other checkpoint
 * file, or one without rank 0 beside it, is read as a one-rank run). Ranks must be 0..W-1 with the same epoch and step.
 */
export function readTorchrun(p: string): TorchrunRun {
  const { dir, files, configPy } = listTorchrun(p);
  // Ranks > 0 repeat rank 0's backbone and its optimiser state: only their centres, the centres' state
  // and their own BatchNorm buffers are kept (a large run's files are each the size of the network twice).
  const ranks = files.map((f, i) => (i === 0 ? readRank(f) : pruneRank(readRank(f))));
  for (const r of ranks.slice(1)) {
    if (r.epoch !== ranks[0]!.epoch || r.globalStep !== ranks[0]!.globalStep) {
      throw new ArcfaceError(
        `is at epoch ${r.epoch}, step ${r.globalStep} but ${path.basename(ranks[0]!.file)} at epoch ${ranks[0]!.epoch}, step ${ranks[0]!.globalStep}: ranks from different saves`,
        r.file,
      );
    }
    if (r.centres.shape[1] !== ranks[0]!.centres.shape[1]) throw new ArcfaceError(`centres are ${r.centres.shape[1]}-d, rank 0's ${ranks[0]!.centres.shape[1]}-d`, r.file);
  }
  return { dir, worldSize: ranks.length, ranks, configPy };
}
