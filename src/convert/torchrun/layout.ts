// How arcface_torch lays a run out over N ranks: PartialFC_V2's class shards, and the order of the
// optimiser's parameters (train_v2.py builds it as [backbone.parameters()..., partial_fc.weight]).
import type * as tf from '@tensorflow/tfjs';
import { ArcfaceError } from '../../errors.ts';
import { slotsOf, toStateDict, type WeightSlot } from '../torch-mapping.ts';

export interface Shard {
  rank: number;
  classStart: number;
  numLocal: number;
}

/** PartialFC_V2: rank r holds C // W + (r < C % W) classes from (C // W) * r + min(r, C % W). */
export function shardLayout(numClasses: number, worldSize: number): Shard[] {
  if (!Number.isInteger(worldSize) || worldSize < 1) throw new ArcfaceError(`world size must be a positive integer, got ${worldSize}`);
  if (!Number.isInteger(numClasses) || numClasses < 1) throw new ArcfaceError(`number of classes must be a positive integer, got ${numClasses}`);
  if (numClasses < worldSize) throw new ArcfaceError(`${numClasses} classes cannot be split over ${worldSize} ranks (PartialFC_V2 needs at least one per rank)`);
  const base = Math.floor(numClasses / worldSize);
  const rest = numClasses % worldSize;
  return Array.from({ length: worldSize }, (_, rank) => ({
    rank,
    classStart: base * rank + Math.min(rank, rest),
    numLocal: base + (rank < rest ? 1 : 0),
  }));
}

const BUFFER_SUFFIXES = ['.running_mean', '.running_var', '.num_batches_tracked'];
export const isBufferKey = (k: string): boolean => BUFFER_SUFFIXES.some((s) => k.endsWith(s));

/**
 * State-dict keys in PyTorch's registration order. Our IResNet layers list a block's shortcut before
 * its last BN; torch registers `downsample` after `bn3`, so it moves to the end of its block.
 */
export function torchKeyOrder(keys: string[]): string[] {
  const out: string[] = [];
  let block = '';
  let pending: string[] = [];
  const flush = () => {
    out.push(...pending);
    pending = [];
  };
  for (const k of keys) {
    const m = /^(layer\d+\.\d+\.)(downsample\.)?/.exec(k);
    const b = m ? m[1]! : '';
    if (b !== block) {
      flush();
      block = b;
    }
    if (m?.[2]) pending.push(k);
    else out.push(k);
  }
  flush();
  return out;
}

/** One backbone parameter as torch lists it; `variable` is null for a frozen one (IResNet's last BN gamma). */
export interface TorchParam {
  key: string;
  shape: number[];
  slot: WeightSlot | null;
  /** Position in `trainableVariables(model)` (our optimiser's backbone group), or -1 when frozen. */
  trainableIndex: number;
}

/** The backbone's parameters in `backbone.parameters()` order, matched to our trainable variables. */
export function torchParams(model: tf.LayersModel): TorchParam[] {
  const sd = toStateDict(model);
  const slots = new Map(slotsOf(model).map((s) => [s.torchKey, s]));
  const trainable = model.trainableWeights.map((w) => w.read());
  const out: TorchParam[] = [];
  for (const key of torchKeyOrder([...sd.keys()])) {
    if (isBufferKey(key)) continue;
    const slot = slots.get(key) ?? null;
    const trainableIndex = slot ? trainable.indexOf(slot.variable.read()) : -1;
    if (slot && trainableIndex < 0) throw new Error(`${key}: weight is not trainable in the tfjs model`);
    out.push({ key, shape: sd.get(key)!.shape, slot, trainableIndex });
  }
  if (out.filter((p) => p.slot).length !== trainable.length) {
    throw new Error(`the backbone has ${trainable.length} trainable variables but ${out.filter((p) => p.slot).length} map to torch parameters`);
  }
  return out;
}
