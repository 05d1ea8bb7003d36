// `arcface export --format torchrun`: a run (ours, or an arcface_torch folder of any world size) as the
// folder train_v2.py resumes from on N ranks: checkpoint_gpu_{rank}.pt, model.pt, config.py, README.md.
import fs from 'node:fs';
import path from 'node:path';
import { ArcfaceError } from '../../errors.ts';
import { writeTorchObject } from '../../formats/torch-write.ts';
import { EPOCH_CHECKPOINT, loadCheckpoint, resolveCheckpointDir, type CheckpointContents } from '../../train/checkpoint.ts';
import { loadConfig, type TrainConfig } from '../../train/config.ts';
import { openTrainingSource } from '../../data/open-source.ts';
import { toConfigPy } from './config-py.ts';
import { isTorchrunPath, rankFile, readTorchrun } from './read.ts';
import { contentsToTorchrun, torchrunToContents, type TorchrunContents, type Warn } from './state.ts';
import { configFromPy, parseConfigPy } from './config-py.ts';

export interface ExportTorchrunOptions {
  worldSize: number;
  /** config.output in the written config.py (default: the absolute output folder). */
  torchOutput?: string;
  /** config.rec in the written config.py (default: the run's). */
  rec?: string;
  /** Images per epoch when the checkpoint does not record it (default: counted in the run's data). */
  numImage?: number;
  warn?: Warn;
}

export interface ExportTorchrunResult {
  out: string;
  worldSize: number;
  epoch: number;
  globalStep: number;
  lr: number;
  shards: { rank: number; classStart: number; numLocal: number }[];
  /** The checkpoint actually exported (an epoch-boundary one). */
  source: string;
  warnings: string[];
}

/** Our training contents, or an arcface_torch folder's, from a run / checkpoint / torchrun path. */
export async function loadRunContents(p: string, warn: Warn): Promise<{ contents: CheckpointContents & Partial<Pick<TorchrunContents, 'origin'>>; source: string }> {
  if (isTorchrunPath(p)) {
    const run = readTorchrun(p);
    const fromPy = run.configPy ? configFromPy(parseConfigPy(run.configPy), run.worldSize) : {};
    if (!run.configPy) warn(`${run.dir} has no config.py: batch size, data and epochs are configs/base.json's (copy the run's arcface_torch config there as config.py)`);
    const base = loadConfig('base', fromPy);
    return { contents: torchrunToContents(run, base, warn), source: run.dir };
  }
  const dir = resolveCheckpointDir(p);
  const contents = await loadCheckpoint(dir);
  if (contents.position.batch === 0) return { contents, source: dir };
  // arcface_torch resumes at epoch boundaries: fall back to the last epoch-boundary checkpoint.
  const epochDir = [path.join(path.dirname(dir), EPOCH_CHECKPOINT), path.join(p, EPOCH_CHECKPOINT)].find((d) => fs.existsSync(path.join(d, 'state.json')));
  const where = `step ${contents.position.step} (epoch ${contents.position.epoch}, batch ${contents.position.batch})`;
  if (!epochDir) {
    contents.backbone.dispose();
    throw new ArcfaceError(`the checkpoint is mid-epoch at ${where} and the run kept no epoch-boundary checkpoint (${EPOCH_CHECKPOINT}/); arcface_torch resumes only at epoch boundaries: train to the end of an epoch first`, dir);
  }
  contents.backbone.dispose();
  const atEpoch = await loadCheckpoint(epochDir);
  warn(
    `${dir} is mid-epoch at ${where}; arcface_torch resumes at epoch boundaries, so the epoch-boundary checkpoint ${epochDir} ` +
      `(step ${atEpoch.position.step}, epoch ${atEpoch.position.epoch}) is exported instead`,
  );
  return { contents: atEpoch, source: epochDir };
}

function numImageOf(contents: CheckpointContents, opts: ExportTorchrunOptions): number {
  const n = opts.numImage ?? contents.numImage ?? contents.config.num_image ?? undefined;
  if (n !== undefined) return n;
  try {
    return openTrainingSource(contents.config.rec).length;
  } catch (e) {
    throw new ArcfaceError(`cannot tell the number of images per epoch (the checkpoint does not record it and the data is not readable: ${(e as Error).message}); the \`numImage\` option gives it`);
  }
}

function readme(cfg: TrainConfig, r: ExportTorchrunResult, torchOutput: string): string {
  const n = r.worldSize;
  return `# Continue this run on ${n} GPU${n > 1 ? 's' : ''} with insightface's arcface_torch

Written by \`arcface export --format torchrun --world-size ${n}\` from \`${r.source}\`: the state after
epoch ${r.epoch} (global step ${r.globalStep}, lr ${r.lr}).

| file | what |
|---|---|
${r.shards.map((s) => `| \`${rankFile(s.rank)}\` | rank ${s.rank}: backbone, centres of classes ${s.classStart}–${s.classStart + s.numLocal - 1} (${s.numLocal}), optimiser and lr-scheduler state |`).join('\n')}
| \`model.pt\` | the backbone state dict (what train_v2.py writes as model.pt) |
| \`config.py\` | the arcface_torch config: per-GPU batch ${cfg.batch_size / n}, \`resume = True\`, \`output = ${JSON.stringify(torchOutput)}\` |

## Run

\`config.output\` must name this folder as seen from where torchrun starts (pass \`--torch-output\` to
\`arcface export\` if it moves), and \`config.rec\` the training data there.

\`\`\`sh
cp config.py <arcface_torch>/configs/arcface_ts_resume.py
cd <arcface_torch>
torchrun --nproc_per_node=${n} train_v2.py configs/arcface_ts_resume.py
\`\`\`

train_v2.py loads \`checkpoint_gpu_{rank}.pt\` on every rank and continues at epoch ${r.epoch}. It needs exactly
${n} ranks: the class centres are split for ${n} (export again with another \`--world-size\` for another count).
Come back with \`arcface train --resume <this folder>\` (any world size) or \`arcface import --from <this folder>\`.
${r.warnings.length ? `\n## Warnings\n\n${r.warnings.map((w) => `- ${w}`).join('\n')}\n` : ''}`;
}

/** Writes the torchrun folder for `worldSize` ranks from a run, checkpoint or arcface_torch folder. */
export async function exportTorchrun(from: string, out: string, opts: ExportTorchrunOptions): Promise<ExportTorchrunResult> {
  const warnings: string[] = [];
  const warn: Warn = (m) => {
    warnings.push(m);
    opts.warn?.(m);
  };
  const { contents, source } = await loadRunContents(from, warn);
  try {
    const numImage = numImageOf(contents, opts);
    const ranks = contentsToTorchrun(contents, opts.worldSize, numImage);
    const torchOutput = opts.torchOutput ?? path.resolve(out);
    const configPy = toConfigPy(contents.config, { worldSize: opts.worldSize, numClasses: contents.head.shape[0]!, numImage, output: torchOutput, rec: opts.rec });
    for (const w of configPy.warnings) warn(`config key ${w}`);
    fs.mkdirSync(out, { recursive: true });
    ranks.ranks.forEach((r, i) => writeTorchObject(path.join(out, rankFile(i)), r));
    writeTorchObject(path.join(out, 'model.pt'), ranks.model);
    fs.writeFileSync(path.join(out, 'config.py'), configPy.text);
    const result: ExportTorchrunResult = {
      out,
      worldSize: opts.worldSize,
      epoch: contents.position.epoch,
      globalStep: contents.position.step,
      lr: ranks.lr,
      shards: ranks.layout,
      source,
      warnings,
    };
    fs.writeFileSync(path.join(out, 'README.md'), readme(contents.config, result, torchOutput));
    return result;
  } finally {
    contents.backbone.dispose();
  }
}
