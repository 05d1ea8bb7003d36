// insightface's PolynomialLRWarmup (arcface_torch/lr_scheduler.py), stepped once per iteration
// as train_v2.py does. Reproduces the reference's float64 values, including the chained decay factor.
import { ArcfaceError } from '../errors.ts';

export interface PolynomialLRWarmupOptions {
  /** The base learning rate (the optimiser's initial lr). */
  baseLr: number;
  /** Iterations of linear warmup (num_image // global_batch * warmup_epoch). */
  warmupSteps: number;
  /** Total iterations (num_image // global_batch * num_epoch). */
  totalSteps: number;
  /** Exponent of the decay (1 = linear, the reference's value). */
  power?: number;
}

/**
 * `lr` is the rate for the current iteration; call `step()` after each iteration (micro-batch).
 * Iteration 1 always uses the full base lr, even with warmup (the reference's first-iteration quirk):
 * warmup 3, total 10 gives 0.1, 0.0333, 0.0667, 0.1, 0.0857, ...; the lr reaches 0 after `totalSteps` steps.
 */
export class PolynomialLRWarmup {
  readonly baseLr: number;
  readonly warmupSteps: number;
  readonly totalSteps: number;
  readonly power: number;
  private lastEpoch = 0;
  private current: number;

  constructor(opts: PolynomialLRWarmupOptions) {
    const { baseLr, warmupSteps, totalSteps } = opts;
    if (!(Number.isFinite(baseLr) && baseLr >= 0)) throw new ArcfaceError(`lr schedule: baseLr must be >= 0, got ${baseLr}`);
    if (!Number.isInteger(warmupSteps) || warmupSteps < 0) throw new ArcfaceError(`lr schedule: warmupSteps must be an integer >= 0, got ${warmupSteps}`);
    if (!Number.isInteger(totalSteps) || totalSteps <= warmupSteps) {
      throw new ArcfaceError(`lr schedule: totalSteps (${totalSteps}) must be an integer larger than warmupSteps (${warmupSteps})`);
    }
    this.baseLr = baseLr;
    this.warmupSteps = warmupSteps;
    this.totalSteps = totalSteps;
    this.power = opts.power ?? 1;
    this.current = baseLr;
  }

  /** The learning rate of the current iteration. */
  get lr(): number {
    return this.current;
  }

  /** Scheduler steps taken so far (torch's last_epoch). */
  get stepCount(): number {
    return this.lastEpoch;
  }

  /** Advances by one iteration (torch's scheduler.step()). */
  step(): void {
    this.lastEpoch++;
    const l = this.lastEpoch;
    const w = this.warmupSteps;
    const t = this.totalSteps;
    if (l > t) return; // stays where it is (0)
    if (l <= w) {
      this.current = (this.baseLr * l) / w;
      return;
    }
    // Chained as in the reference: the previous lr times a ratio, so the float64 round-off matches it.
    this.current = this.current * ((1.0 - (l - w) / (t - w)) / (1.0 - (l - 1 - w) / (t - w))) ** this.power;
  }

  /** Restores the position after `steps` scheduler steps (replays them, so the floats are identical). */
  restore(steps: number): void {
    if (!Number.isInteger(steps) || steps < 0) throw new ArcfaceError(`lr schedule: cannot restore to step ${steps}`);
    this.lastEpoch = 0;
    this.current = this.baseLr;
    for (let i = 0; i < steps; i++) this.step();
  }
}
