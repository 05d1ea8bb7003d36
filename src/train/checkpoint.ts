// Training checkpoints: everything needed to continue a run exactly — the backbone (a tfjs layers model,
// BN running statistics included), the Partial FC centres, the optimiser buffers, the iteration, the
// data-order position and the sampler's random state. Built in a temporary folder and switched in
// (writeFolderAtomic), so a kill during a save leaves the previous checkpoint or none.
import fs from 'node:fs';
import path from 'node:path';
import type * as tf from '@tensorflow/tfjs';
import { ArcfaceError } from '../errors.ts';
import { loadModel, writeModelFiles } from '../models/io.ts';
import { writeFolderAtomic } from '../util/atomic.ts';
import type { BackboneSpec } from '../models/factory.ts';
import type { OptimizerState, ParamState } from './optimizers.ts';
import type { TrainConfig } from './config.ts';

export const CHECKPOINT_FORMAT = 1;
/** A run's copy of its last epoch-boundary checkpoint (what arcface_torch can continue from). */
export const EPOCH_CHECKPOINT = 'checkpoint_epoch';

/** Where a run stands; `epoch`/`batch` is the next batch to train on. */
export interface TrainPosition {
  /** Iterations (micro-batches) done. */
  step: number;
  epoch: number;
  batch: number;
  /** Sampler state of the Partial FC head. */
  headRng: number;
  /** Highest verification accuracy per set so far. */
  best: Record<string, number>;
  /** Highest mean accuracy over the sets (what "best model" is kept by). */
  bestMean: number;
}

/** The lr schedule a run follows (kept so a run continued from another engine keeps its own). */
export interface ScheduleState {
  baseLr: number;
  warmupSteps: number;
  totalSteps: number;
  power: number;
}

interface StateFile {
  format: number;
  position: TrainPosition;
  schedule?: ScheduleState;
  numImage?: number;
  spec: BackboneSpec;
  config: TrainConfig;
  head: { shape: number[]; offset: number };
  optimizer: { kind: OptimizerState['kind']; step: number; params: (Omit<ParamState, 'momentumBuffer' | 'expAvg' | 'expAvgSq'> & { buffers: Record<string, number> })[] };
}

const STATE = 'state.json';
const TENSORS = 'tensors.bin';
const BACKBONE = 'backbone';

export interface CheckpointContents {
  backbone: tf.LayersModel;
  spec: BackboneSpec;
  head: { shape: number[]; data: Float32Array };
  optimizer: OptimizerState;
  position: TrainPosition;
  config: TrainConfig;
  schedule?: ScheduleState;
  /** Images per epoch the schedule was computed from. */
  numImage?: number;
}

/** Writes a checkpoint directory atomically (replacing an older one at the same path). */
export async function saveCheckpoint(dir: string, c: Omit<CheckpointContents, 'head'> & { head: { shape: number[]; data: Float32Array } }): Promise<void> {
  await writeFolderAtomic(dir, async (tmp) => {
    const chunks: Float32Array[] = [];
    let offset = 0;
    const push = (a: Float32Array): number => {
      chunks.push(a);
      const at = offset;
      offset += a.length;
      return at;
    };
    const head = { shape: c.head.shape, offset: push(c.head.data) };
    const params = c.optimizer.params.map((p) => {
      const { momentumBuffer, expAvg, expAvgSq, ...rest } = p;
      const buffers: Record<string, number> = {};
      for (const [k, v] of Object.entries({ momentumBuffer, expAvg, expAvgSq })) if (v) buffers[k] = push(v);
      return { ...rest, buffers };
    });
    const state: StateFile = {
      format: CHECKPOINT_FORMAT,
      position: c.position,
      ...(c.schedule ? { schedule: c.schedule } : {}),
      ...(c.numImage !== undefined ? { numImage: c.numImage } : {}),
      spec: c.spec,
      config: c.config,
      head,
      optimizer: { kind: c.optimizer.kind, step: c.optimizer.step, params },
    };
    const fd = fs.openSync(path.join(tmp, TENSORS), 'w');
    try {
      for (const a of chunks) fs.writeSync(fd, new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
    } finally {
      fs.closeSync(fd);
    }
    await writeModelFiles(c.backbone, path.join(tmp, BACKBONE), c.spec);
    fs.writeFileSync(path.join(tmp, STATE), JSON.stringify(state));
  });
}

/** A run directory resumes from its `checkpoint/`; a checkpoint directory from itself. */
export function resolveCheckpointDir(p: string): string {
  if (fs.existsSync(path.join(p, STATE))) return p;
  if (fs.existsSync(path.join(p, 'checkpoint', STATE))) return path.join(p, 'checkpoint');
  throw new ArcfaceError('no checkpoint here (expected state.json, or a run directory with checkpoint/state.json)', p);
}

export async function loadCheckpoint(p: string): Promise<CheckpointContents> {
  const dir = resolveCheckpointDir(p);
  let state: StateFile;
  try {
    state = JSON.parse(fs.readFileSync(path.join(dir, STATE), 'utf8'));
  } catch (e) {
    throw new ArcfaceError(`unreadable checkpoint state (${(e as Error).message})`, path.join(dir, STATE));
  }
  if (state.format !== CHECKPOINT_FORMAT) throw new ArcfaceError(`checkpoint format ${state.format} is not ${CHECKPOINT_FORMAT}`, dir);
  const raw = fs.readFileSync(path.join(dir, TENSORS));
  const all = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
  const take = (offset: number, n: number, what: string): Float32Array => {
    if (offset + n > all.length) throw new ArcfaceError(`checkpoint tensors are truncated (${what})`, path.join(dir, TENSORS));
    return all.slice(offset, offset + n);
  };
  const headN = state.head.shape.reduce((a, b) => a * b, 1);
  const params: ParamState[] = state.optimizer.params.map((p) => {
    const n = p.shape.reduce((a, b) => a * b, 1);
    const out: ParamState = { group: p.group, index: p.index, shape: p.shape, step: p.step };
    for (const [k, off] of Object.entries(p.buffers)) (out as unknown as Record<string, Float32Array>)[k] = take(off, n, `${p.group}[${p.index}].${k}`);
    return out;
  });
  const backbone = await loadModel(path.join(dir, BACKBONE));
  return {
    backbone,
    spec: state.spec,
    head: { shape: state.head.shape, data: take(state.head.offset, headN, 'head') },
    optimizer: { kind: state.optimizer.kind, step: state.optimizer.step, params },
    position: state.position,
    config: state.config,
    ...(state.schedule ? { schedule: state.schedule } : {}),
    ...(state.numImage !== undefined ? { numImage: state.numImage } : {}),
  };
}
