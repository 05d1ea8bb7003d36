// The training run, top to bottom like insightface's train_v2.py: config -> data -> backbone -> margin +
// Partial FC -> optimiser -> schedule -> loop -> callbacks (log, verification, checkpoint).
import fs from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { ArcfaceError } from '../errors.ts';
import { createTrainLoader } from '../data/loader.ts';
import { openTrainingSource } from '../data/open-source.ts';
import { buildBackbone, type BackboneSpec } from '../models/factory.ts';
import { GENERIC_NETWORK, saveModel } from '../models/io.ts';
import { writeFileAtomic, writeFolderAtomic } from '../util/atomic.ts';
import { adaptStandardInput, describeInput, inputConventionOf, setInputConvention } from '../models/input-convention.ts';
import { PartialFC } from '../losses/partial-fc.ts';
import { formatAccuracyFlip } from '../eval/verification.ts';
import { evaluateModel, prepareVerificationSet, type PreparedSet, type SetEvaluation } from '../eval/evaluate-bin.ts';
import { writeBin } from '../data/bin-set.ts';
import { subsetSource } from '../data/subset.ts';
import { defaultCard, withThresholds, writeCard } from '../infer/card.ts';
import { planSmallData } from './small-data.ts';
import { specFromConfig, type TrainConfig } from './config.ts';
import { trainableVariables, type BatchNormUpdate } from './forward.ts';
import { trainStep, type StepParts } from './step.ts';
import { GradientAccumulator, TorchOptimizer } from './optimizers.ts';
import { PolynomialLRWarmup } from './lr-schedule.ts';
import { EPOCH_CHECKPOINT, loadCheckpoint, saveCheckpoint, type CheckpointContents, type ScheduleState, type TrainPosition } from './checkpoint.ts';
import { isTorchrunPath, readTorchrun } from '../convert/torchrun/read.ts';
import { torchrunToContents } from '../convert/torchrun/state.ts';
import { copyMatchingWeights, recalibrateBatchNorms } from './init.ts';
import { loadBackbone, type LoadedBackbone } from '../convert/load-backbone.ts';
import { ProgressLog } from './progress.ts';
import { backendCaps } from '../backend/caps.ts';
import type { TrainProgress } from './fit.ts';

export interface TrainOptions {
  /** A run or checkpoint directory to continue from, or an arcface_torch output folder (checkpoint_gpu_*.pt). */
  resume?: string;
  /** Print progress on stderr (default: when stderr is a TTY, a live line; otherwise plain log lines). */
  quiet?: boolean;
  /** Called after every iteration (each batch; with gradient_acc > 1 the optimiser steps every few). */
  onProgress?: (p: TrainProgress) => void;
  /** Aborting stops after the current step; the run then verifies, checkpoints, saves and resolves (`stopped`). */
  signal?: AbortSignal;
}

export interface TrainResult {
  output: string;
  steps: number;
  samplesPerSecond: number;
  finalLoss: number;
  /** Last verification result per set (mean accuracy), if any ran. */
  verification: Record<string, { accuracy: number; std: number; xnorm: number }>;
  /** small_data: the held-out verification before the first step. */
  verificationBefore?: Record<string, { accuracy: number; std: number; xnorm: number }>;
  best: Record<string, number>;
  modelDir: string;
  /** True when `signal` stopped the run before its last step. */
  stopped: boolean;
}

function resolveValTargets(cfg: TrainConfig): string[] {
  const recDir = fs.existsSync(cfg.rec) && fs.statSync(cfg.rec).isDirectory() ? cfg.rec : path.dirname(cfg.rec);
  const out: string[] = [];
  for (const t of cfg.val_targets) {
    const explicit = t.endsWith('.bin') || t.includes('/');
    const file = explicit ? t : path.join(recDir, `${t}.bin`);
    if (fs.existsSync(file)) out.push(file);
    else if (explicit) throw new ArcfaceError('verification set not found (val_targets)', file);
    else process.stderr.write(`arcface: warning: val_targets "${t}": ${file} not found, not evaluated\n`);
  }
  return out;
}

/** Says on stderr how the `init` model is taken (native network or generic, its input convention). */
function describePretrained(p: LoadedBackbone, cfg: TrainConfig): void {
  const lines: string[] = [];
  if (p.note) lines.push(`${cfg.init}: ${p.note}`);
  if (p.spec && p.spec.network !== cfg.network) lines.push(`the \`init\` model holds network "${p.spec.network}"; training that (the config says "${cfg.network}")`);
  if (!p.spec) lines.push(`${cfg.init} is not an IResNet/MobileFaceNet: fine-tuning it as a generic tfjs model (layer by layer, its own layers' training semantics)`);
  if (p.foldedBatchNorms && !cfg.freeze_bn) {
    lines.push(`${p.foldedBatchNorms} BatchNorms of ${cfg.init} were folded into convolutions by its exporter: their statistics are recalibrated on the first batch (freeze_bn true keeps them as they are)`);
  }
  lines.push(`input: ${describeInput(p.input)}`);
  for (const l of lines) process.stderr.write(`arcface: note: ${l}\n`);
}

/** The spec-shaped summary of a generic model: its input side and embedding size. */
function genericSpec(model: tf.LayersModel, cfg: TrainConfig): BackboneSpec {
  const inShape = model.inputs.length === 1 ? model.inputs[0]!.shape : [];
  const outShape = model.outputs.length === 1 ? model.outputs[0]!.shape : [];
  const [, h, w, c] = inShape;
  if (inShape.length !== 4 || c !== 3 || !h || h !== w) {
    throw new ArcfaceError(`the \`init\` model takes ${JSON.stringify(inShape)}; a face model takes one [batch, S, S, 3] image input`, cfg.init ?? undefined);
  }
  const e = outShape[1];
  if (outShape.length !== 2 || typeof e !== 'number') {
    throw new ArcfaceError(`the \`init\` model outputs ${JSON.stringify(outShape)}; an embedding model outputs one [batch, E] tensor`, cfg.init ?? undefined);
  }
  if (e !== cfg.embedding_size) process.stderr.write(`arcface: note: the \`init\` model's embedding size is ${e}; training that (the config says ${cfg.embedding_size})\n`);
  return { network: GENERIC_NETWORK, embeddingSize: e, inputSize: h };
}

/** Trains a backbone as the config says; returns a summary. Throws ArcfaceError on bad input or divergence. */
export async function train(cfg: TrainConfig, opts: TrainOptions = {}): Promise<TrainResult> {
  const fromTorchrun = opts.resume !== undefined && isTorchrunPath(opts.resume);
  // An arcface_torch folder brings the network, centres, optimiser and schedule; `cfg` the rest (data, batch).
  const resumed: CheckpointContents | undefined = !opts.resume
    ? undefined
    : fromTorchrun
      ? torchrunToContents(readTorchrun(opts.resume), cfg, (m) => process.stderr.write(`arcface: warning: ${m}\n`))
      : await loadCheckpoint(opts.resume);
  if (resumed) cfg = { ...resumed.config, max_steps: cfg.max_steps, output: cfg.output };
  if (cfg.fp16) process.stderr.write('arcface: note: fp16 is not used by TensorFlow.js training here; training in float32\n');

  // ---- network layout first: the data is decoded at its input size. Fine-tuning keeps the
  // pretrained network's layout, with any embedding size.
  const pretrained: LoadedBackbone | undefined = !resumed && cfg.init ? await loadBackbone(cfg.init) : undefined;
  if (pretrained) describePretrained(pretrained, cfg);
  // A model that is not one of the native networks trains as it is, through the generic tfjs path.
  const generic = pretrained !== undefined && !pretrained.spec;
  const spec: BackboneSpec =
    resumed?.spec ??
    (pretrained?.spec ? { ...pretrained.spec, embeddingSize: cfg.embedding_size } : undefined) ??
    (generic ? genericSpec(pretrained.model, cfg) : specFromConfig(cfg));

  // ---- data
  let source = openTrainingSource(cfg.rec);
  const numClasses = cfg.num_classes ?? source.numClasses;
  if (source.numClasses > numClasses) {
    throw new ArcfaceError(`the data has ${source.numClasses} classes but num_classes is ${numClasses}`, cfg.rec);
  }
  let holdoutBin: string | undefined;
  if (cfg.small_data) {
    const plan = planSmallData(Array.from({ length: source.length }, (_, i) => source.label(i)), cfg, cfg.rec);
    process.stderr.write(`arcface: ${plan.note}\n`);
    if (plan.pairs.length) {
      // The held-out pairs as a .bin beside the run: verified during training, and reusable for calibration.
      holdoutBin = path.join(cfg.output, 'holdout.bin');
      fs.mkdirSync(cfg.output, { recursive: true });
      const full = source;
      writeBin(holdoutBin, { images: plan.pairs.flatMap(([a, b]) => [full.bytes(a), full.bytes(b)]), issame: plan.pairs.map((p) => p[2]) });
      source = subsetSource(full, plan.train);
      full.close();
    }
    cfg = { ...cfg, batch_size: plan.batchSize, num_epoch: plan.numEpoch, verbose: plan.verbose };
  }
  const numImage = cfg.num_image ?? source.length;
  const loader = await createTrainLoader({
    source,
    batchSize: cfg.batch_size,
    seed: cfg.seed,
    inputSize: spec.inputSize,
    workers: cfg.num_workers ?? undefined,
    skipCorrupt: cfg.skip_corrupt,
  });
  const valFiles = resolveValTargets(cfg);
  const valSets: PreparedSet[] = [];
  for (const f of valFiles) valSets.push(await prepareVerificationSet(f, spec.inputSize));
  if (holdoutBin) valSets.push(await prepareVerificationSet(holdoutBin, spec.inputSize));

  // ---- backbone and head
  const backbone = resumed?.backbone ?? (generic ? pretrained.model : buildBackbone(spec, { seed: cfg.seed, dropout: cfg.dropout }));
  if (pretrained && !generic) {
    try {
      copyMatchingWeights(backbone, pretrained.model, cfg.init!);
    } finally {
      pretrained.model.dispose();
    }
  }
  // The pretrained model's input convention stays with the network: the batches are converted to it,
  // and every saved model carries it.
  if (pretrained) setInputConvention(backbone, pretrained.input);
  const inputConvention = inputConventionOf(backbone);
  // BNs folded by the exporter get real statistics from the first batch before training uses batch statistics.
  let recalibrate = pretrained && !generic && !cfg.freeze_bn ? (pretrained.foldedLayers ?? []) : [];
  const [m1, m2, m3] = cfg.margin_list;
  const head = new PartialFC({
    numClasses,
    embeddingSize: spec.embeddingSize,
    margin: { s: cfg.scale, m1, m2, m3, interclassFilteringThreshold: cfg.interclass_filtering_threshold, variant: cfg.margin_variant },
    sampleRate: cfg.sample_rate,
    seed: cfg.seed,
  });
  if (resumed) {
    if (resumed.head.shape.join() !== [numClasses, spec.embeddingSize].join()) {
      throw new ArcfaceError(`checkpoint head is [${resumed.head.shape}], the data needs [${numClasses},${spec.embeddingSize}]`, opts.resume);
    }
    head.setWeight(resumed.head.data);
  }

  // ---- optimiser and schedule (per iteration, as the reference)
  const backboneVars = trainableVariables(backbone);
  const opt = new TorchOptimizer(
    [
      { name: 'backbone', params: backboneVars, lrScale: cfg.backbone_lr_scale, clipNorm: cfg.clip_grad_norm > 0 ? cfg.clip_grad_norm : undefined },
      { name: 'head', params: [head.weight] },
    ],
    { kind: cfg.optimizer, weightDecay: cfg.weight_decay, momentum: 0.9 },
  );
  const stepsPerEpoch = Math.floor(numImage / cfg.batch_size);
  if (stepsPerEpoch < 1) throw new ArcfaceError(`num_image ${numImage} is smaller than one batch of ${cfg.batch_size}`, cfg.rec);
  // A resumed run keeps the schedule it was on (an arcface_torch run's comes from its scheduler state).
  const schedule: ScheduleState = resumed?.schedule ?? {
    baseLr: cfg.lr,
    warmupSteps: Math.floor(stepsPerEpoch * cfg.warmup_epoch),
    totalSteps: stepsPerEpoch * cfg.num_epoch,
    power: 1,
  };
  const totalSteps = schedule.totalSteps;
  if (fromTorchrun && resumed!.position.step !== stepsPerEpoch * resumed!.position.epoch) {
    process.stderr.write(
      `arcface: warning: the arcface_torch run is at step ${resumed!.position.step} after ${resumed!.position.epoch} epochs, but ${numImage} images in ` +
        `batches of ${cfg.batch_size} make ${stepsPerEpoch} steps per epoch: is batch_size the global batch (per-GPU batch x world size)?\n`,
    );
  }
  const sched = new PolynomialLRWarmup(schedule);
  const lastStep = Math.min(totalSteps, cfg.max_steps ?? totalSteps);

  const pos: TrainPosition = resumed?.position ?? { step: 0, epoch: 0, batch: 0, headRng: head.rngState, best: {}, bestMean: -1 };
  if (resumed) {
    opt.setState(resumed.optimizer);
    sched.restore(pos.step);
    head.rngState = pos.headRng;
  }

  fs.mkdirSync(cfg.output, { recursive: true });
  writeFileAtomic(path.join(cfg.output, 'config.json'), `${JSON.stringify(cfg, null, 2)}\n`);
  const log = new ProgressLog(path.join(cfg.output, 'train.jsonl'), { quiet: opts.quiet, total: lastStep, stepsPerEpoch, batchSize: cfg.batch_size });
  log.event({ type: 'start', step: pos.step, totalSteps, lastStep, stepsPerEpoch, numClasses, numImage, backend: tf.getBackend(), spec, resumedFrom: opts.resume ?? null });

  const checkpointDir = path.join(cfg.output, 'checkpoint');
  let lastCheckpoint: string | null = resumed ? opts.resume! : null;
  const accumulator = cfg.gradient_acc > 1 ? new GradientAccumulator(cfg.gradient_acc) : null;
  const verification: TrainResult['verification'] = {};
  const lastEvaluation: Record<string, SetEvaluation> = {};
  const bnUpdates: BatchNormUpdate[] = [];
  const stepParts: StepParts = { backbone, head, optimizer: opt, backboneVars, bnUpdates, accumulator, freezeBatchNorm: cfg.freeze_bn };
  const side = spec.inputSize;
  let lossSum = 0;
  let lossCount = 0;
  let finalLoss = NaN;
  const startTime = performance.now();
  const backendKeepsHostArrays = backendCaps().adoptsHostBuffers;
  const startStep = pos.step;

  let savedAt = resumed ? pos.step : -1;
  let epochSavedAt = -1;
  let verifiedAt = -1;
  const checkpoint = async () => {
    // Only between optimiser steps: accumulated gradients are not part of a checkpoint.
    if (savedAt === pos.step || (accumulator && pos.step % cfg.gradient_acc !== 0)) return;
    savedAt = pos.step;
    pos.headRng = head.rngState;
    await saveCheckpoint(checkpointDir, {
      backbone,
      spec,
      head: { shape: [numClasses, spec.embeddingSize], data: (await head.weight.data()) as Float32Array },
      optimizer: await opt.readState(),
      position: { ...pos, best: { ...pos.best } },
      config: cfg,
      schedule,
      numImage,
    });
    lastCheckpoint = checkpointDir;
    log.event({ type: 'checkpoint', step: pos.step, dir: checkpointDir });
  };

  const verify = async () => {
    if (!valSets.length || verifiedAt === pos.step) return;
    verifiedAt = pos.step;
    let sum = 0;
    for (const set of valSets) {
      const r = await evaluateModel(backbone, set, { batchSize: cfg.val_batch_size });
      pos.best[r.name] = Math.max(pos.best[r.name] ?? 0, r.accuracyMean);
      verification[r.name] = { accuracy: r.accuracyMean, std: r.accuracyStd, xnorm: r.xnorm };
      lastEvaluation[r.name] = r;
      sum += r.accuracyMean;
      log.line(`[${r.name}][${pos.step}]XNorm: ${r.xnorm.toFixed(6)}`);
      log.line(formatAccuracyFlip(r.name, pos.step, r));
      log.line(`[${r.name}][${pos.step}]Accuracy-Highest: ${pos.best[r.name]!.toFixed(5)}`);
      log.event({ type: 'verification', step: pos.step, set: r.name, accuracy: r.accuracyMean, std: r.accuracyStd, xnorm: r.xnorm, highest: pos.best[r.name] });
    }
    const mean = sum / valSets.length;
    if (mean > pos.bestMean) {
      pos.bestMean = mean;
      await saveModel(backbone, path.join(cfg.output, 'best', 'backbone'), spec);
      log.event({ type: 'best', step: pos.step, meanAccuracy: mean });
    }
  };

  let verificationBefore: TrainResult['verification'] | undefined;
  let stopped = false;
  try {
    if (holdoutBin && pos.step === 0) {
      // Small data: how the starting model does on the held-out people, to compare with after.
      await verify();
      verificationBefore = { ...verification };
    }
    epochs: for (let epoch = pos.epoch; epoch < cfg.num_epoch && pos.step < lastStep; epoch++) {
      for await (const batch of loader.batches(epoch, { startBatch: epoch === pos.epoch ? pos.batch : 0 })) {
        if (opts.signal?.aborted) {
          stopped = true;
          break epochs;
        }
        adaptStandardInput(batch.images, inputConvention, batch.size * side * side * 3);
        const images = tf.tensor4d(batch.images, [batch.size, side, side, 3]);
        // Backends with their own memory (wasm, tensorflow) copied the pixels: the loader may reuse the buffer.
        if (!backendKeepsHostArrays) batch.release();
        let loss: number;
        if (recalibrate.length) {
          const done = recalibrateBatchNorms(backbone, recalibrate, images);
          log.line(`recalibrated ${done.length} BatchNorms the exporter had folded, on the first batch`);
          recalibrate = [];
        }
        try {
          loss = await trainStep(stepParts, images, batch.labels, sched.lr);
        } finally {
          images.dispose();
        }
        if (!Number.isFinite(loss)) {
          throw new ArcfaceError(
            `loss is ${loss} at step ${pos.step + 1} (epoch ${epoch}, batch ${batch.index}); stopped. ` +
              `Last good checkpoint: ${lastCheckpoint ?? 'none yet'}; nothing was overwritten. Lower lr or check the data.`,
          );
        }
        pos.step++;
        const stepLr = sched.lr;
        sched.step();
        pos.epoch = epoch;
        pos.batch = batch.index + 1;
        if (pos.batch >= loader.batchesPerEpoch) {
          pos.epoch = epoch + 1;
          pos.batch = 0;
        }
        lossSum += loss;
        lossCount++;
        finalLoss = loss;
        log.progress({ step: pos.step, epoch, loss, lr: sched.lr });
        opts.onProgress?.({ step: pos.step, totalSteps: lastStep, epoch, loss, lr: stepLr });
        if (pos.step % cfg.frequent === 0) {
          log.event({ type: 'train', step: pos.step, epoch, loss: lossSum / lossCount, lr: sched.lr, numTensors: tf.memory().numTensors, ...log.speed() });
          lossSum = 0;
          lossCount = 0;
        }
        if (pos.step % cfg.verbose === 0) await verify();
        if (pos.step % cfg.save_every === 0) await checkpoint();
        if (pos.step >= lastStep) break;
      }
      if (pos.batch === 0) {
        // epoch end; a copy is kept because arcface_torch can only continue from an epoch boundary
        await checkpoint();
        if (savedAt === pos.step && lastCheckpoint === checkpointDir && epochSavedAt !== pos.step) {
          await writeFolderAtomic(path.join(cfg.output, EPOCH_CHECKPOINT), (tmp) => fs.cpSync(checkpointDir, tmp, { recursive: true }));
          epochSavedAt = pos.step;
        }
      }
    }
    await verify(); // the final model's figures (the reference only verifies every `verbose` steps)
    await checkpoint();
    const modelDir = path.join(cfg.output, 'model');
    await saveModel(backbone, modelDir, spec);
    const held = holdoutBin ? lastEvaluation.holdout : undefined;
    if (held) {
      const card = defaultCard(spec.embeddingSize, spec.inputSize, {
        network: spec.network,
        provenance: { source: cfg.init ?? undefined, created: new Date().toISOString(), tool: 'arcface-ts', notes: [`fine-tuned on ${cfg.rec}`] },
      });
      writeCard(modelDir, withThresholds(card, 'holdout', held.calibration.map((c) => ({ far: c.farTarget, cosine: c.threshold, tar: c.tar, dataset: 'holdout', pairs: held.pairs }))));
      const before = verificationBefore?.holdout?.accuracy;
      process.stderr.write(`arcface: held-out verification accuracy: ${before === undefined ? '' : `before ${before.toFixed(4)}, `}after ${held.accuracyMean.toFixed(4)}\n`);
    }
    const seconds = (performance.now() - startTime) / 1000;
    const result: TrainResult = {
      output: cfg.output,
      steps: pos.step,
      samplesPerSecond: ((pos.step - startStep) * cfg.batch_size) / seconds,
      finalLoss,
      verification,
      ...(verificationBefore ? { verificationBefore } : {}),
      best: pos.best,
      modelDir,
      stopped,
    };
    log.event({ type: 'end', ...result });
    return result;
  } finally {
    log.close();
    await loader.close();
    accumulator?.dispose();
    opt.dispose();
    head.dispose();
    backbone.dispose();
  }
}
