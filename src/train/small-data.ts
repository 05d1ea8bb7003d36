// Fine-tuning on a few photos per person (small_data): hold out some of each person's photos as a
// verification set, and size the batch and the schedule to the data instead of the recipe's defaults
// (a recipe's batch of 32 or 128 does not fit 20 people x 5-10 photos).
import { ArcfaceError } from '../errors.ts';
import { drawPairs } from '../data/draw-pairs.ts';
import { Rng } from '../data/random.ts';
import type { TrainConfig } from './config.ts';

export interface SmallDataPlan {
  /** Indices of the images to train on, and of those held out. */
  train: number[];
  holdout: number[];
  /** Verification pairs over `holdout` indices (empty when too few to split into 10 folds). */
  pairs: [number, number, boolean][];
  batchSize: number;
  numEpoch: number;
  /** Verify every this many steps (about four times a run, and once before the first step). */
  verbose: number;
  /** What was chosen, in words. */
  note: string;
}

const FOLDS = 10;

export function planSmallData(labels: ArrayLike<number>, cfg: Pick<TrainConfig, 'batch_size' | 'num_epoch' | 'val_split' | 'min_steps' | 'seed' | 'gradient_acc'>, where: string): SmallDataPlan {
  if (!(cfg.val_split >= 0 && cfg.val_split < 1)) throw new ArcfaceError(`val_split must be in [0, 1), got ${cfg.val_split}`, where);
  const rng = new Rng([cfg.seed, 0x5a11]);
  const byClass = new Map<number, number[]>();
  for (let i = 0; i < labels.length; i++) byClass.set(labels[i]!, [...(byClass.get(labels[i]!) ?? []), i]);
  let train: number[] = [];
  let holdout: number[] = [];
  for (const items of byClass.values()) {
    // Two held-out photos of a person make a genuine pair; at least two stay for training.
    const k = cfg.val_split > 0 && items.length >= 4 ? Math.min(items.length - 2, Math.max(2, Math.round(cfg.val_split * items.length))) : 0;
    const shuffled = rng.shuffle(items.slice());
    holdout.push(...shuffled.slice(0, k));
    train.push(...shuffled.slice(k));
  }
  train.sort((a, b) => a - b);
  holdout.sort((a, b) => a - b);
  let pairs: [number, number, boolean][] = [];
  if (holdout.length) {
    const heldLabels = holdout.map((i) => labels[i]!);
    try {
      pairs = drawPairs(heldLabels, where, { seed: cfg.seed }).map(([a, b, same]) => [holdout[a]!, holdout[b]!, same]);
    } catch (e) {
      if (!(e instanceof ArcfaceError)) throw e;
    }
    if (pairs.length < FOLDS) pairs = [];
  }
  if (!pairs.length) {
    train = Array.from({ length: labels.length }, (_, i) => i);
    holdout = [];
  }
  if (train.length < 2) throw new ArcfaceError(`small data: ${train.length} photo(s) left to train on; at least 2 are needed`, where);
  // A batch of about a quarter of the photos (a power of two), so an epoch is several steps.
  const fit = 2 ** Math.floor(Math.log2(Math.max(2, train.length / 4)));
  const batchSize = Math.max(2, Math.min(cfg.batch_size, fit, train.length));
  const stepsPerEpoch = Math.floor(train.length / batchSize);
  const numEpoch = Math.max(cfg.num_epoch, Math.ceil(cfg.min_steps / stepsPerEpoch));
  const total = stepsPerEpoch * numEpoch;
  const verbose = Math.max(1, Math.floor(total / 4));
  const people = byClass.size;
  const note =
    `small data: ${labels.length} photos of ${people} people; ` +
    (pairs.length
      ? `${holdout.length} held out for verification (${pairs.filter((p) => p[2]).length} genuine + ${pairs.filter((p) => !p[2]).length} impostor pairs); `
      : `no verification set (too few photos per person to hold out pairs); `) +
    `training on ${train.length} with batch ${batchSize}, ${numEpoch} epochs (${total} steps)`;
  return { train, holdout, pairs, batchSize, numEpoch, verbose, note };
}
