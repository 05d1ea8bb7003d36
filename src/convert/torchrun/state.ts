// A training state, both ways: arcface_torch's per-rank checkpoints (backbone, centre shards, torch
// optimiser and PolynomialLRWarmup state dicts) <-> this project's checkpoint contents.
import { ArcfaceError } from '../../errors.ts';
import { PyFloat, PyTuple } from '../../formats/pickle.ts';
import { TorchOrderedDict, type TorchTensor, type TorchTensorOut } from '../../formats/torch.ts';
import { buildBackbone } from '../../models/factory.ts';
import { SamplerRng } from '../../losses/class-sampler.ts';
import { PolynomialLRWarmup } from '../../train/lr-schedule.ts';
import type { CheckpointContents, ScheduleState } from '../../train/checkpoint.ts';
import type { OptimizerState, ParamState } from '../../train/optimizers.ts';
import type { TrainConfig } from '../../train/config.ts';
import { inferSpec } from '../infer-spec.ts';
import { loadStateDict, toStateDict } from '../torch-mapping.ts';
import { isBufferKey, shardLayout, torchKeyOrder, torchParams, type Shard } from './layout.ts';
import type { TorchrunRun } from './read.ts';

/** Our contents plus what only an N-rank run has: each rank's BatchNorm buffers (DDP keeps them per GPU). */
export interface TorchrunContents extends CheckpointContents {
  schedule: ScheduleState;
  numImage?: number;
  origin?: { worldSize: number; step: number; rankBuffers: Map<string, TorchTensor>[] };
}

const asFloat = (t: TorchTensor): Float32Array => (t.data instanceof Float32Array ? t.data : Float32Array.from(t.data as ArrayLike<number>, Number));
const num = (v: unknown): number | undefined => (typeof v === 'number' ? v : typeof v === 'bigint' ? Number(v) : undefined);

export type Warn = (message: string) => void;

/** The class centres of all ranks, concatenated in rank order after checking PartialFC_V2's split. */
export function gatherCentres(run: TorchrunRun): { shape: [number, number]; data: Float32Array; layout: Shard[] } {
  const embedding = run.ranks[0]!.centres.shape[1]!;
  const numClasses = run.ranks.reduce((a, r) => a + r.centres.shape[0]!, 0);
  const layout = run.ranks.length === 1 ? [{ rank: 0, classStart: 0, numLocal: numClasses }] : shardLayout(numClasses, run.worldSize);
  const data = new Float32Array(numClasses * embedding);
  run.ranks.forEach((r, i) => {
    if (r.centres.shape[0] !== layout[i]!.numLocal) {
      throw new ArcfaceError(
        `holds ${r.centres.shape[0]} classes, but PartialFC_V2 gives rank ${i} ${layout[i]!.numLocal} of ${numClasses} over ${run.worldSize} ranks`,
        r.file,
      );
    }
    data.set(asFloat(r.centres), layout[i]!.classStart * embedding);
  });
  return { shape: [numClasses, embedding], data, layout };
}

/**
 * Gathers an arcface_torch run into our checkpoint contents: rank 0's backbone (every rank holds the same
 * weights), the shards concatenated in rank order, the optimiser buffers mapped onto our parameter order
 * and layouts, the schedule and position. `base` supplies what the checkpoints do not hold (batch size,
 * data, margin, ...); the network, classes, optimiser and schedule come from the checkpoints.
 */
export function torchrunToContents(run: TorchrunRun, base: TrainConfig, warn: Warn = () => {}): TorchrunContents {
  const r0 = run.ranks[0]!;
  let spec;
  try {
    spec = inferSpec(r0.backbone);
  } catch (e) {
    throw new ArcfaceError((e as Error).message, r0.file);
  }
  const backbone = buildBackbone(spec);
  try {
    try {
      loadStateDict(backbone, r0.backbone);
    } catch (e) {
      throw new ArcfaceError(`state_dict_backbone: ${(e as Error).message}`, r0.file);
    }
    const embedding = r0.centres.shape[1]!;
    if (embedding !== spec.embeddingSize) throw new ArcfaceError(`centres are ${embedding}-d but the backbone embeds in ${spec.embeddingSize}-d`, r0.file);

    // ---- class centres: PartialFC_V2's layout, gathered in rank order
    const centres = gatherCentres(run);
    const [numClasses] = centres.shape;
    const layout = centres.layout;
    const gather = (pick: (r: (typeof run.ranks)[number]) => Float32Array): Float32Array => {
      const out = new Float32Array(numClasses * embedding);
      run.ranks.forEach((r, i) => out.set(pick(r), layout[i]!.classStart * embedding));
      return out;
    };
    const head = { shape: [numClasses, embedding], data: centres.data };

    // ---- optimiser
    const groups = r0.optimizer.paramGroups;
    const g0 = groups[0]!;
    const kind = g0.has('betas') ? 'adamw' : g0.has('momentum') ? 'sgd' : undefined;
    if (!kind) throw new ArcfaceError(`state_optimizer is neither SGD nor AdamW (group keys: ${[...g0.keys()].join(', ')})`, r0.file);
    const params = torchParams(backbone);
    const ids0 = g0.get('params') as unknown[];
    const ids1 = groups[1]?.get('params') as unknown[] | undefined;
    if (groups.length !== 2 || ids0.length !== params.length || ids1?.length !== 1) {
      throw new ArcfaceError(
        `state_optimizer has ${groups.length} groups of ${groups.map((g) => (g.get('params') as unknown[]).length).join(' + ')} parameters; ` +
          `train_v2.py's are [${params.length} backbone parameters] + [the centres]`,
        r0.file,
      );
    }
    if (kind === 'sgd') {
      if (num(g0.get('momentum')) !== 0.9 || num(g0.get('dampening')) !== 0 || g0.get('nesterov') === true) {
        warn(`${r0.file}: SGD momentum ${String(g0.get('momentum'))}, dampening ${String(g0.get('dampening'))}, nesterov ${String(g0.get('nesterov'))}: continuing with momentum 0.9, no dampening, no nesterov (train_v2.py's)`);
      }
    } else {
      const betas = g0.get('betas') as unknown[];
      if (num(betas?.[0]) !== 0.9 || num(betas?.[1]) !== 0.999 || num(g0.get('eps')) !== 1e-8 || g0.get('amsgrad') === true) {
        warn(`${r0.file}: AdamW betas/eps/amsgrad differ from torch's defaults; continuing with betas (0.9, 0.999), eps 1e-8`);
      }
    }
    const weightDecay = num(g0.get('weight_decay')) ?? base.weight_decay;
    const baseLr = num(g0.get('initial_lr')) ?? num(g0.get('lr')) ?? base.lr;
    const bufferNames = kind === 'sgd' ? ([['momentum_buffer', 'momentumBuffer']] as const) : ([['exp_avg', 'expAvg'], ['exp_avg_sq', 'expAvgSq']] as const);
    const trainable = backbone.trainableWeights;
    const paramStates: ParamState[] = trainable.map((w, index) => ({ group: 'backbone', index, shape: [...w.shape] as number[], step: 0 }));
    let adamStep = 0;
    params.forEach((p, i) => {
      const st = r0.optimizer.state.get(num(ids0[i])!);
      if (!st || st.size === 0) return;
      if (!p.slot) {
        warn(`${r0.file}: optimiser state for the frozen parameter ${p.key} ignored`);
        return;
      }
      const ps = paramStates[p.trainableIndex]!;
      for (const [torchName, ours] of bufferNames) {
        const t = st.get(torchName);
        if (!t || typeof t === 'number') throw new ArcfaceError(`state_optimizer.state[${String(ids0[i])}] (${p.key}) has no ${torchName}`, r0.file);
        if (t.shape.join() !== p.shape.join()) throw new ArcfaceError(`state_optimizer.state[${String(ids0[i])}].${torchName} is [${t.shape}], ${p.key} is [${p.shape}]`, r0.file);
        ps[ours] = p.slot.toTf(asFloat(t), p.slot.torchShape);
      }
      const step = st.get('step');
      if (kind === 'adamw') {
        ps.step = typeof step === 'number' ? step : step ? asFloat(step)[0]! : 0;
        adamStep = Math.max(adamStep, ps.step);
      }
    });
    const headState: ParamState = { group: 'head', index: 0, shape: [numClasses, embedding], step: 0 };
    const headStates = run.ranks.map((r) => r.optimizer.state.get(num((r.optimizer.paramGroups[1]?.get('params') as unknown[] | undefined)?.[0])!));
    const withState = headStates.filter((s) => s && s.size > 0).length;
    if (withState !== 0 && withState !== run.ranks.length) throw new ArcfaceError('some ranks have optimiser state for their centres and some do not', run.dir);
    if (withState) {
      for (const [torchName, ours] of bufferNames) {
        headState[ours] = gather((r) => {
          const t = headStates[run.ranks.indexOf(r)]!.get(torchName);
          if (!t || typeof t === 'number' || t.shape.join() !== r.centres.shape.join()) {
            throw new ArcfaceError(`the centres' ${torchName} is missing or not [${r.centres.shape}]`, r.file);
          }
          return asFloat(t);
        });
      }
      if (kind === 'adamw') {
        const step = headStates[0]!.get('step');
        headState.step = typeof step === 'number' ? step : step ? asFloat(step)[0]! : 0;
        adamStep = Math.max(adamStep, headState.step);
      }
    }
    const optSteps = kind === 'adamw' ? adamStep : Math.floor(r0.globalStep / Math.max(1, base.gradient_acc));
    if (kind === 'sgd') {
      for (const ps of [...paramStates, headState]) if (ps.momentumBuffer) ps.step = optSteps;
    }
    const optimizer: OptimizerState = { kind, step: optSteps, params: [...paramStates, headState] };

    // ---- schedule (PolynomialLRWarmup)
    const sch = r0.scheduler;
    const totalIters = num(sch?.get('total_iters'));
    const warmupIters = num(sch?.get('warmup_iters'));
    let schedule: ScheduleState;
    if (sch && totalIters !== undefined && warmupIters !== undefined) {
      const baseLrs = sch.get('base_lrs') as unknown[] | undefined;
      schedule = { baseLr: num(baseLrs?.[0]) ?? baseLr, warmupSteps: warmupIters, totalSteps: totalIters, power: num(sch.get('power')) ?? 1 };
      const last = num(sch.get('last_epoch'));
      if (last !== r0.globalStep) warn(`${r0.file}: the lr scheduler is at step ${last}, the checkpoint at step ${r0.globalStep}; continuing from the checkpoint's step`);
    } else {
      const spe = Math.floor((base.num_image ?? 0) / base.batch_size);
      if (!(spe > 0)) throw new ArcfaceError('state_lr_scheduler is not a PolynomialLRWarmup state and the config has no num_image to rebuild the schedule from', r0.file);
      schedule = { baseLr, warmupSteps: Math.floor(spe * base.warmup_epoch), totalSteps: spe * base.num_epoch, power: 1 };
      warn(`${r0.file}: state_lr_scheduler is not PolynomialLRWarmup's; the lr follows the config's schedule (${schedule.totalSteps} steps)`);
    }
    const sched = new PolynomialLRWarmup({ baseLr: schedule.baseLr, warmupSteps: schedule.warmupSteps, totalSteps: schedule.totalSteps, power: schedule.power });
    sched.restore(r0.globalStep);
    const savedLr = num(g0.get('lr'));
    if (savedLr !== undefined && Math.abs(savedLr - sched.lr) > 1e-12 * Math.max(1, Math.abs(savedLr))) {
      warn(`${r0.file}: the optimiser's lr ${savedLr} is not the schedule's ${sched.lr} at step ${r0.globalStep}`);
    }

    const config: TrainConfig = {
      ...base,
      network: spec.network,
      embedding_size: spec.embeddingSize,
      input_size: spec.inputSize,
      layers: spec.network === 'iresnet' ? spec.layers! : null,
      widths: spec.widths && spec.widths.join() !== '64,128,256,512' ? spec.widths : null,
      num_classes: numClasses,
      optimizer: kind,
      lr: schedule.baseLr,
      weight_decay: weightDecay,
      momentum: num(g0.get('momentum')) ?? base.momentum,
      // What train_v2.py hard-codes.
      scale: 64,
      clip_grad_norm: 5,
      dropout: 0,
      margin_variant: 'reference',
      backbone_lr_scale: 1,
      freeze_bn: false,
      init: null,
    };
    const rankBuffers = run.ranks.map((r) => new Map([...r.backbone].filter(([k]) => isBufferKey(k))));
    return {
      backbone,
      spec,
      head,
      optimizer,
      position: { step: r0.globalStep, epoch: r0.epoch, batch: 0, headRng: new SamplerRng(config.seed).state, best: {}, bestMean: -1 },
      config,
      schedule,
      ...(base.num_image !== null ? { numImage: base.num_image } : {}),
      origin: { worldSize: run.worldSize, step: r0.globalStep, rankBuffers },
    };
  } catch (e) {
    backbone.dispose();
    throw e;
  }
}

export interface RankCheckpoints {
  /** checkpoint_gpu_{rank}.pt contents, rank order. */
  ranks: Map<string, unknown>[];
  /** model.pt: rank 0's backbone. */
  model: TorchOrderedDict;
  layout: Shard[];
  lr: number;
  schedule: ScheduleState;
}

const f32 = (shape: number[], data: Float32Array): TorchTensorOut => ({ shape, data });

/**
 * What train_v2.py would have saved at this position on `worldSize` ranks. The position must be an epoch
 * boundary (the caller picks one). Each rank gets its PartialFC_V2 shard of the centres and of their
 * optimiser buffers; BatchNorm buffers are the model's, or each rank's own when the contents came from a
 * run with this many ranks at this very step.
 */
export function contentsToTorchrun(c: CheckpointContents & { origin?: TorchrunContents['origin'] }, worldSize: number, numImage: number): RankCheckpoints {
  const cfg = c.config;
  if (c.position.batch !== 0) throw new ArcfaceError(`the checkpoint is mid-epoch (epoch ${c.position.epoch}, batch ${c.position.batch}); arcface_torch resumes at epoch boundaries`);
  if (cfg.batch_size % worldSize !== 0) {
    throw new ArcfaceError(`the global batch ${cfg.batch_size} does not split over ${worldSize} ranks (arcface_torch's batch_size is per GPU); choose a world size dividing it`);
  }
  const [numClasses, embedding] = c.head.shape as [number, number];
  const layout = shardLayout(numClasses, worldSize);
  const spe = Math.floor(numImage / cfg.batch_size);
  const schedule: ScheduleState = c.schedule ?? { baseLr: cfg.lr, warmupSteps: Math.floor(spe * cfg.warmup_epoch), totalSteps: spe * cfg.num_epoch, power: 1 };
  const sched = new PolynomialLRWarmup(schedule);
  const step = c.position.step;
  sched.restore(step);
  const lr = sched.lr;

  // ---- backbone state dict in torch's key order; num_batches_tracked counts the training forwards (= steps)
  const ours = toStateDict(c.backbone);
  const sdFor = (rank: number): TorchOrderedDict => {
    const own = c.origin && c.origin.worldSize === worldSize && c.origin.step === step ? c.origin.rankBuffers[rank] : undefined;
    const sd = new TorchOrderedDict();
    for (const key of torchKeyOrder([...ours.keys()])) {
      const t = ours.get(key)!;
      const kept = own?.get(key);
      if (kept && isBufferKey(key)) sd.set(key, { shape: kept.shape, data: kept.data instanceof BigInt64Array ? kept.data : asFloat(kept) });
      else if (key.endsWith('.num_batches_tracked')) sd.set(key, { shape: [], data: BigInt64Array.of(BigInt(step)) });
      else sd.set(key, t);
    }
    return sd;
  };

  // ---- optimiser: ids follow [backbone.parameters()..., partial_fc.weight]
  const params = torchParams(c.backbone);
  const byTrainable = new Map<number, ParamState>();
  let headState: ParamState | undefined;
  for (const ps of c.optimizer.params) {
    if (ps.group === 'backbone') byTrainable.set(ps.index, ps);
    else if (ps.group === 'head') headState = ps;
  }
  if (c.optimizer.params.length !== params.filter((p) => p.slot).length + 1) {
    throw new ArcfaceError(`the optimiser state has ${c.optimizer.params.length} parameters; the backbone has ${params.filter((p) => p.slot).length} trainable ones plus the centres`);
  }
  const kind = c.optimizer.kind;
  const pyLr = new PyFloat(lr);
  const groupDict = (ids: number[]): Map<string, unknown> =>
    kind === 'sgd'
      ? new Map<string, unknown>([
          ['lr', pyLr], ['momentum', new PyFloat(0.9)], ['dampening', 0], ['weight_decay', new PyFloat(cfg.weight_decay)], ['nesterov', false],
          ['maximize', false], ['foreach', null], ['differentiable', false], ['initial_lr', new PyFloat(schedule.baseLr)], ['params', ids],
        ])
      : new Map<string, unknown>([
          ['lr', pyLr], ['betas', new PyTuple([new PyFloat(0.9), new PyFloat(0.999)])], ['eps', new PyFloat(1e-8)], ['weight_decay', new PyFloat(cfg.weight_decay)],
          ['amsgrad', false], ['foreach', null], ['maximize', false], ['capturable', false], ['initial_lr', new PyFloat(schedule.baseLr)], ['params', ids],
        ]);
  const entry = (ps: ParamState | undefined, toTorch: (d: Float32Array) => Float32Array, shape: number[]): Map<string, unknown> | undefined => {
    if (!ps) return undefined;
    if (kind === 'sgd') return ps.momentumBuffer ? new Map([['momentum_buffer', f32(shape, toTorch(ps.momentumBuffer))]]) : undefined;
    if (!ps.expAvg || !ps.expAvgSq) return undefined;
    return new Map<string, unknown>([
      ['step', f32([], Float32Array.of(ps.step))],
      ['exp_avg', f32(shape, toTorch(ps.expAvg))],
      ['exp_avg_sq', f32(shape, toTorch(ps.expAvgSq))],
    ]);
  };
  const backboneState = new Map<number, unknown>();
  params.forEach((p, id) => {
    const e = p.slot ? entry(byTrainable.get(p.trainableIndex), p.slot.toTorch, p.shape) : undefined;
    if (e) backboneState.set(id, e);
  });
  const headId = params.length;
  const rows = (data: Float32Array, s: Shard) => data.slice(s.classStart * embedding, (s.classStart + s.numLocal) * embedding);

  const schedulerDict = () =>
    new Map<string, unknown>([
      ['base_lrs', [new PyFloat(schedule.baseLr), new PyFloat(schedule.baseLr)]],
      ['last_epoch', step],
      ['verbose', false],
      ['_step_count', step + 1],
      ['_get_lr_called_within_step', false],
      ['_last_lr', [pyLr, pyLr]],
      ['total_iters', schedule.totalSteps],
      ['power', new PyFloat(schedule.power)],
      ['warmup_iters', schedule.warmupSteps],
    ]);

  const ranks = layout.map((s) => {
    const state = new Map<number, unknown>(backboneState);
    const he = entry(headState, (d) => rows(d, s), [s.numLocal, embedding]);
    if (he) state.set(headId, he);
    return new Map<string, unknown>([
      ['epoch', c.position.epoch],
      ['global_step', step],
      ['state_dict_backbone', sdFor(s.rank)],
      ['state_dict_softmax_fc', new TorchOrderedDict([['weight', f32([s.numLocal, embedding], rows(c.head.data, s))]])],
      [
        'state_optimizer',
        new Map<string, unknown>([
          ['state', state],
          ['param_groups', [groupDict(params.map((_, i) => i)), groupDict([headId])]],
        ]),
      ],
      ['state_lr_scheduler', schedulerDict()],
    ]);
  });
  return { ranks, model: sdFor(0), layout, lr, schedule };
}
