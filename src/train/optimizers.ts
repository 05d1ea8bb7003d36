// SGD and AdamW with torch.optim semantics, parameter groups (own lr scale, optional global-norm clip),
// exportable state, and arcface_torch's gradient accumulation (train_v2.py's `gradient_acc`).
import * as tf from '@tensorflow/tfjs';
import { ArcfaceError } from '../errors.ts';
import { backendCaps } from '../backend/caps.ts';

export type OptimizerKind = 'sgd' | 'adamw';

export interface ParamGroup {
  /** e.g. 'backbone' or 'head'; names the group in the exported state. */
  name: string;
  /** Trainable variables, in a fixed order (the state is keyed by group and position, like torch's). */
  params: tf.Variable[];
  /** This group's lr = schedule lr * lrScale (default 1; < 1 gives a fine-tuned backbone a lower lr). */
  lrScale?: number;
  /** torch clip_grad_norm_ over this group's gradients (the reference: 5 on the backbone, none on the head). */
  clipNorm?: number;
}

export interface OptimizerOptions {
  kind: OptimizerKind;
  /** SGD: added to every gradient (g + wd * p); AdamW: decoupled (p *= 1 - lr * wd). */
  weightDecay: number;
  /** SGD momentum; the reference hard-codes 0.9. */
  momentum?: number;
  /** AdamW betas and eps (torch defaults 0.9, 0.999, 1e-8). */
  betas?: [number, number];
  eps?: number;
}

/** Per-parameter state as plain arrays, for checkpoints. Absent buffers mean "no step taken yet" (torch's None). */
export interface ParamState {
  group: string;
  index: number;
  shape: number[];
  step: number;
  momentumBuffer?: Float32Array;
  expAvg?: Float32Array;
  expAvgSq?: Float32Array;
}

export interface OptimizerState {
  kind: OptimizerKind;
  /** Optimiser steps taken (updates, not micro-batches). */
  step: number;
  params: ParamState[];
}

interface Slot {
  group: ParamGroup;
  index: number;
  variable: tf.Variable;
  step: number;
  buffers: Map<string, tf.Tensor>;
}

/**
 * torch.optim.SGD (momentum, no nesterov/dampening; buf = g on the first step, then 0.9 buf + g;
 * p -= lr buf) or torch.optim.AdamW (torch 1.13 single-tensor code path). Parameters without a
 * gradient are skipped, as torch skips grad None.
 */
export class TorchOptimizer {
  readonly kind: OptimizerKind;
  readonly weightDecay: number;
  readonly momentum: number;
  readonly betas: [number, number];
  readonly eps: number;
  readonly groups: ParamGroup[];
  private steps = 0;
  private readonly slots: Slot[] = [];
  private readonly byName = new Map<string, Slot>();

  constructor(groups: ParamGroup[], opts: OptimizerOptions) {
    if (opts.kind !== 'sgd' && opts.kind !== 'adamw') throw new ArcfaceError(`optimizer: unknown kind "${String(opts.kind)}" (use sgd or adamw)`);
    if (!(opts.weightDecay >= 0)) throw new ArcfaceError(`optimizer: weightDecay must be >= 0, got ${opts.weightDecay}`);
    this.kind = opts.kind;
    this.weightDecay = opts.weightDecay;
    this.momentum = opts.momentum ?? 0.9;
    this.betas = opts.betas ?? [0.9, 0.999];
    this.eps = opts.eps ?? 1e-8;
    this.groups = groups;
    const seen = new Set<string>();
    for (const group of groups) {
      group.params.forEach((variable, index) => {
        if (seen.has(variable.name)) throw new ArcfaceError(`optimizer: variable ${variable.name} is in more than one group`);
        if (!variable.trainable) throw new ArcfaceError(`optimizer: variable ${variable.name} is not trainable`);
        seen.add(variable.name);
        const slot: Slot = { group, index, variable, step: 0, buffers: new Map() };
        this.slots.push(slot);
        this.byName.set(variable.name, slot);
      });
    }
  }

  /** Optimiser steps taken so far. */
  get stepCount(): number {
    return this.steps;
  }

  /**
   * One update. `grads` maps variable names to gradients (what `tf.variableGrads` returns; the caller
   * keeps ownership). `lr` is the schedule's current lr; each group uses lr * lrScale. Clipping is done
   * on the device: no value is read back.
   */
  step(grads: tf.NamedTensorMap, lr: number): void {
    this.steps++;
    for (const group of this.groups) {
      const present = group.params.filter((v) => grads[v.name] !== undefined);
      let scaled = present.map((v) => grads[v.name]);
      const owned: tf.Tensor[] = [];
      if (group.clipNorm !== undefined && scaled.length > 0) {
        scaled = clipByGlobalNorm(scaled, group.clipNorm);
        owned.push(...scaled);
      }
      const groupLr = lr * (group.lrScale ?? 1);
      present.forEach((v, i) => {
        const slot = this.byName.get(v.name)!;
        if (this.kind === 'sgd') this.sgd(slot, scaled[i], groupLr);
        else this.adamw(slot, scaled[i], groupLr);
      });
      tf.dispose(owned);
    }
  }

  private sgd(slot: Slot, g: tf.Tensor, lr: number): void {
    const p = slot.variable;
    const prev = slot.buffers.get('momentumBuffer');
    if (backendCaps().hostArrays) {
      slot.buffers.set('momentumBuffer', this.sgdFused(p, g, prev, lr));
      prev?.dispose();
      slot.step++;
      return;
    }
    const buf = tf.tidy(() => {
      const d = this.weightDecay !== 0 ? g.add(p.mul(this.weightDecay)) : g.clone();
      return prev ? prev.mul(this.momentum).add(d) : d;
    });
    tf.tidy(() => p.assign(p.sub(buf.mul(lr))));
    prev?.dispose();
    slot.buffers.set('momentumBuffer', buf);
    slot.step++;
  }

  /**
   * The same update as one loop over the arrays, for backends whose tensors are JS arrays (six
   * broadcasting tf ops there run at ~30M values/s: 4.5 s a step for r18). Every operation is rounded
   * to float32 (Math.fround) as the tf ops round it, so both paths give the same bits.
   */
  private sgdFused(p: tf.Variable, g: tf.Tensor, prev: tf.Tensor | undefined, lr: number): tf.Tensor {
    const pv = p.dataSync() as Float32Array;
    const gv = g.dataSync() as Float32Array;
    const bv = prev?.dataSync() as Float32Array | undefined;
    const n = pv.length;
    const nextP = new Float32Array(n);
    const nextB = new Float32Array(n);
    const f = Math.fround;
    const wd = f(this.weightDecay);
    const mu = f(this.momentum);
    const rate = f(lr);
    for (let i = 0; i < n; i++) {
      const d = wd !== 0 ? f(gv[i]! + f(pv[i]! * wd)) : gv[i]!;
      const b = bv ? f(f(bv[i]! * mu) + d) : d;
      nextB[i] = b;
      nextP[i] = f(pv[i]! - f(b * rate));
    }
    tf.tidy(() => p.assign(tf.tensor(nextP, p.shape)));
    return tf.tensor(nextB, p.shape);
  }

  private adamw(slot: Slot, g: tf.Tensor, lr: number): void {
    const p = slot.variable;
    const [beta1, beta2] = this.betas;
    slot.step++;
    const step = slot.step;
    const m0 = slot.buffers.get('expAvg');
    const v0 = slot.buffers.get('expAvgSq');
    // Scalars in float64 as torch computes them in Python, then used as float32.
    const decay = 1 - lr * this.weightDecay;
    const stepSize = lr / (1 - beta1 ** step);
    const bc2Sqrt = Math.sqrt(1 - beta2 ** step);
    const [m, v] = tf.tidy(() => {
      const mPrev = m0 ?? tf.zerosLike(g);
      const vPrev = v0 ?? tf.zerosLike(g);
      return [mPrev.mul(beta1).add(g.mul(1 - beta1)), vPrev.mul(beta2).add(g.mul(g).mul(1 - beta2))];
    });
    tf.tidy(() => {
      const decayed = p.mul(decay);
      const denom = v.sqrt().div(bc2Sqrt).add(this.eps);
      p.assign(decayed.sub(m.div(denom).mul(stepSize)));
    });
    tf.dispose([m0, v0].filter((t): t is tf.Tensor => t !== undefined));
    slot.buffers.set('expAvg', m);
    slot.buffers.set('expAvgSq', v);
  }

  /** Copies the state to the host (reads every buffer: for checkpoints, not per step). */
  getState(): OptimizerState {
    return {
      kind: this.kind,
      step: this.steps,
      params: this.slots.map((s) => {
        const st: ParamState = { group: s.group.name, index: s.index, shape: [...s.variable.shape], step: s.step };
        for (const [k, t] of s.buffers) (st as unknown as Record<string, Float32Array>)[k] = t.dataSync() as Float32Array;
        return st;
      }),
    };
  }

  /** `getState` for backends that can only read asynchronously (webgpu in Node); the same values. */
  async readState(): Promise<OptimizerState> {
    const params: ParamState[] = [];
    for (const s of this.slots) {
      const st: ParamState = { group: s.group.name, index: s.index, shape: [...s.variable.shape], step: s.step };
      for (const [k, t] of s.buffers) (st as unknown as Record<string, Float32Array>)[k] = (await t.data()) as Float32Array;
      params.push(st);
    }
    return { kind: this.kind, step: this.steps, params };
  }

  /** Restores a state from `getState` exactly; errors if groups, order or shapes differ. */
  setState(state: OptimizerState): void {
    if (state.kind !== this.kind) throw new ArcfaceError(`optimizer state is for ${state.kind}, this optimizer is ${this.kind}`);
    if (state.params.length !== this.slots.length) {
      throw new ArcfaceError(`optimizer state has ${state.params.length} parameters, this optimizer has ${this.slots.length}`);
    }
    state.params.forEach((ps, i) => {
      const s = this.slots[i];
      const where = `optimizer state parameter ${i} (${ps.group}[${ps.index}])`;
      if (ps.group !== s.group.name || ps.index !== s.index) throw new ArcfaceError(`${where} does not match ${s.group.name}[${s.index}]`);
      if (ps.shape.join(',') !== s.variable.shape.join(',')) {
        throw new ArcfaceError(`${where} has shape [${ps.shape}], the variable ${s.variable.name} has [${s.variable.shape}]`);
      }
    });
    this.steps = state.step;
    state.params.forEach((ps, i) => {
      const s = this.slots[i];
      for (const t of s.buffers.values()) t.dispose();
      s.buffers.clear();
      s.step = ps.step;
      for (const key of ['momentumBuffer', 'expAvg', 'expAvgSq'] as const) {
        const data = ps[key];
        if (data === undefined) continue;
        if (data.length !== s.variable.size) throw new ArcfaceError(`optimizer state parameter ${i}: ${key} has ${data.length} values, expected ${s.variable.size}`);
        s.buffers.set(key, tf.tensor(data, s.variable.shape, 'float32'));
      }
    });
  }

  dispose(): void {
    for (const s of this.slots) for (const t of s.buffers.values()) t.dispose();
    for (const s of this.slots) s.buffers.clear();
  }
}

/**
 * torch.nn.utils.clip_grad_norm_: total = ||(||g_1||, ..., ||g_n||)||, scale = min(1, max / (total + 1e-6)).
 * Returns new tensors (owned by the caller), computed on the device.
 */
export function clipByGlobalNorm(grads: tf.Tensor[], maxNorm: number): tf.Tensor[] {
  return tf.tidy(() => {
    const total = globalNorm(grads);
    const scale = tf.minimum(tf.scalar(maxNorm).div(total.add(1e-6)), 1);
    return grads.map((g) => g.mul(scale));
  });
}

/** The L2 norm of the per-tensor L2 norms (a scalar tensor). */
export function globalNorm(grads: tf.Tensor[]): tf.Scalar {
  return tf.tidy(() => tf.stack(grads.map((g) => g.square().sum().sqrt())).square().sum().sqrt() as tf.Scalar);
}

/**
 * The reference's gradient accumulation: gradients of k micro-batches are summed (the loss is not
 * divided by k); the optimiser steps on every k-th micro-batch (global step % k == 0) while the lr
 * schedule steps on every micro-batch.
 */
export class GradientAccumulator {
  private sums = new Map<string, tf.Tensor>();
  private count = 0;

  constructor(readonly every: number) {
    if (!Number.isInteger(every) || every < 1) throw new ArcfaceError(`gradient accumulation must be an integer >= 1, got ${every}`);
  }

  /** Adds a micro-batch's gradients (the caller keeps ownership of `grads`). Returns true when it is time to step. */
  add(grads: tf.NamedTensorMap): boolean {
    for (const [name, g] of Object.entries(grads)) {
      const prev = this.sums.get(name);
      this.sums.set(name, prev ? tf.tidy(() => prev.add(g)) : g.clone());
      prev?.dispose();
    }
    this.count++;
    return this.count % this.every === 0;
  }

  /** Takes the summed gradients (now owned by the caller) and starts a new sum. */
  take(): tf.NamedTensorMap {
    const out = Object.fromEntries(this.sums);
    this.sums = new Map();
    return out;
  }

  dispose(): void {
    for (const t of this.sums.values()) t.dispose();
    this.sums.clear();
  }
}
