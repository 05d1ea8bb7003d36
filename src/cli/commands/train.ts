// `arcface train`: run a training recipe (configs/*.json), resume a run, or fine-tune a pretrained backbone.
import type { CommandModule } from 'yargs';
import { initBackend } from '../../backend/select.ts';
import path from 'node:path';
import { loadConfig, type TrainConfig } from '../../train/config.ts';
import { isTorchrunPath, listTorchrun } from '../../convert/torchrun/read.ts';
import { configFromPy, parseConfigPy } from '../../convert/torchrun/config-py.ts';
import { train } from '../../train/loop.ts';
import { ArcfaceError } from '../../errors.ts';
import { sweepTemporaries } from '../../util/atomic.ts';
import { acquireOutputLock, commandLine } from '../../util/lock.ts';

interface Args {
  config?: string;
  resume?: string;
  init?: string;
  rec?: string;
  output?: string;
  'max-steps'?: number;
  'freeze-bn'?: boolean;
  'backbone-lr-scale'?: number;
  workers?: number;
  'skip-corrupt'?: boolean;
  set?: string[];
  quiet?: boolean;
  backend?: string;
}

/** `--set key=value` (value parsed as JSON when it parses, else a string). */
function parseSets(sets: string[] = []): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const s of sets) {
    const eq = s.indexOf('=');
    if (eq < 1) throw new ArcfaceError(`--set expects key=value, got "${s}"`);
    const raw = s.slice(eq + 1);
    let v: unknown = raw;
    try {
      v = JSON.parse(raw);
    } catch {
      // a bare string
    }
    out[s.slice(0, eq)] = v;
  }
  return out;
}

const command: CommandModule<object, Args> = {
  command: 'train',
  describe: 'Train a backbone with an ArcFace/CosFace margin and Partial FC (configs/*.json)',
  builder: (y) =>
    y
      .option('config', { type: 'string', describe: 'config name in configs/ or a JSON file (default: tiny; base under an arcface_torch --resume)' })
      .option('resume', { type: 'string', describe: 'continue a run: its output dir, a checkpoint dir, or an arcface_torch output folder (checkpoint_gpu_*.pt)' })
      .option('init', { type: 'string', describe: 'fine-tune from a pretrained backbone (tfjs dir, .pth, .onnx, run dir)' })
      .option('rec', { type: 'string', describe: 'training data (folder with train.rec, .rec, or image folder)' })
      .option('output', { type: 'string', describe: 'run directory (logs, checkpoints, models)' })
      .option('max-steps', { type: 'number', describe: 'stop after this many iterations' })
      .option('freeze-bn', { type: 'boolean', describe: 'keep BatchNorm running statistics fixed' })
      .option('backbone-lr-scale', { type: 'number', describe: 'backbone lr = lr x this (fine-tuning)' })
      .option('workers', { type: 'number', describe: 'decoding threads (default: cores)' })
      .option('skip-corrupt', { type: 'boolean', describe: 'replace undecodable images (counted on stderr) instead of stopping' })
      .option('set', { type: 'string', array: true, describe: 'override any config key: --set lr=0.05 --set num_epoch=2' })
      .option('quiet', { type: 'boolean', default: false, describe: 'no progress output (the JSONL log is still written)' })
      .example('$0 train --config ms1mv3_r50 --rec data/ms1m-retinaface-t1', 'the reference recipe')
      .example('$0 train --config finetune_custom --init models/r50 --rec my_faces/', 'fine-tune on your photos')
      .example('$0 train --resume work_dirs/ms1mv3_r50', 'continue where it stopped')
      .example('$0 train --resume r50_8gpu --rec data/ms1m --max-steps 100000', 'continue a torchrun run here (any world size)') as never,
  handler: async (argv) => {
    const overrides: Partial<Record<keyof TrainConfig, unknown>> = {
      ...parseSets(argv.set),
      ...(argv.rec !== undefined ? { rec: argv.rec } : {}),
      ...(argv.output !== undefined ? { output: argv.output } : {}),
      ...(argv['max-steps'] !== undefined ? { max_steps: argv['max-steps'] } : {}),
      ...(argv.init !== undefined ? { init: argv.init } : {}),
      ...(argv['freeze-bn'] !== undefined ? { freeze_bn: argv['freeze-bn'] } : {}),
      ...(argv['backbone-lr-scale'] !== undefined ? { backbone_lr_scale: argv['backbone-lr-scale'] } : {}),
      ...(argv.workers !== undefined ? { num_workers: argv.workers } : {}),
      ...(argv['skip-corrupt'] !== undefined ? { skip_corrupt: argv['skip-corrupt'] } : {}),
    };
    let cfg: TrainConfig;
    if (argv.resume && isTorchrunPath(argv.resume)) {
      // An arcface_torch folder: its config.py (batch made global) under the command line; the checkpoints
      // then fix the network, classes, optimiser and schedule.
      const run = listTorchrun(argv.resume);
      const fromPy = run.configPy ? configFromPy(parseConfigPy(run.configPy), run.files.length) : {};
      const output = overrides.output ?? path.join('work_dirs', path.basename(path.resolve(run.dir)));
      cfg = loadConfig(argv.config ?? 'base', { ...fromPy, ...overrides, output });
    } else {
      cfg = loadConfig(argv.config ?? 'tiny', overrides);
    }
    // One run per output folder; what killed runs left there (checkpoint or model temporaries) goes now.
    const lock = acquireOutputLock(cfg.output, commandLine('arcface'));
    try {
      for (const d of [cfg.output, path.join(cfg.output, 'best')]) sweepTemporaries(d);
      await initBackend(argv.backend, { workload: 'train' });
      const result = await train(cfg, { resume: argv.resume, quiet: argv.quiet });
      process.stdout.write(`${JSON.stringify(result)}\n`);
    } finally {
      lock.release();
    }
  },
};

export default command;
