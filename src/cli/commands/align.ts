// `arcface align photos/ --out aligned/`: raw photos -> aligned 112x112 face crops (insightface's
// norm_crop on detected five points), folder layout kept, with a JSON report of photos to look at.
import type { CommandModule } from 'yargs';
import fs from 'node:fs';
import path from 'node:path';
import { SingleBar, Presets } from 'cli-progress';
import { initInferBackend } from '../../infer/backend.ts';
import { alignPhotos } from '../../infer/align-photos.ts';
import { ArcfaceError } from '../../errors.ts';

interface Args {
  inputs: string[];
  out: string;
  size: number;
  'all-faces': boolean;
  'min-confidence': number;
  'low-confidence': number;
  workers?: number;
  report?: string;
  progress: boolean;
  backend?: string;
}

const command: CommandModule<object, Args> = {
  command: 'align <inputs..>',
  describe: 'Detect and align the faces of raw photos into square crops (folders per identity kept), with a report',
  builder: (y) =>
    y
      .positional('inputs', { type: 'string', array: true, demandOption: true, describe: 'photos or folders (walked recursively; sub-folders kept)' })
      .option('out', { type: 'string', demandOption: true, describe: 'output folder for the crops' })
      .option('size', { type: 'number', default: 112, describe: 'crop side (the ArcFace template scales with it)' })
      .option('all-faces', { type: 'boolean', default: false, describe: 'keep every face (name_0, name_1, ...) instead of the largest' })
      .option('min-confidence', { type: 'number', default: 0.5, describe: 'detector score below which a face is not found' })
      .option('low-confidence', { type: 'number', default: 0.8, describe: 'kept faces scoring below this are reported' })
      .option('workers', { type: 'number', describe: 'worker threads, each with its own detector (default: CPU count, at most 4)' })
      .option('report', { type: 'string', describe: 'JSON report to write (default: <out>/align-report.json)' })
      .option('progress', { type: 'boolean', default: true, describe: 'show a progress bar on stderr' })
      .example('$0 align photos/ --out aligned/', 'photos/alice/*.jpg -> aligned/alice/*.jpg') as never,
  handler: async (argv) => {
    if (argv.workers !== undefined && (!Number.isInteger(argv.workers) || argv.workers < 1)) throw new ArcfaceError(`--workers must be a positive integer, got ${argv.workers}`);
    await initInferBackend(argv.backend, true);
    const bar = argv.progress && process.stderr.isTTY ? new SingleBar({ stream: process.stderr, format: 'align [{bar}] {value}/{total} photos | {eta_formatted} left' }, Presets.shades_classic) : null;
    let started = false;
    try {
      const report = await alignPhotos(argv.inputs.map(String), argv.out, {
        size: argv.size,
        allFaces: argv['all-faces'],
        minConfidence: argv['min-confidence'],
        lowConfidence: argv['low-confidence'],
        workers: argv.workers,
        onProgress: (done, total) => {
          if (!bar) return;
          if (!started) bar.start(total, 0);
          started = true;
          bar.update(done);
        },
      });
      bar?.stop();
      const file = argv.report ?? path.join(argv.out, 'align-report.json');
      fs.writeFileSync(file, `${JSON.stringify(report, null, 2)}\n`);
      for (const r of report.flagged) process.stderr.write(`arcface: ${r.file}: ${r.notes.join('; ')}\n`);
      process.stderr.write(
        `arcface: aligned ${report.aligned} of ${report.photos} photos into ${argv.out} (${report.passthrough} already crops, ${report.noFace} without a face, ${report.multipleFaces} with several, ${report.unreadable} unreadable; ${(report.photos / report.seconds).toFixed(2)} photos/s); report: ${file}\n`,
      );
      const { flagged, records, ...summary } = report;
      process.stdout.write(`${JSON.stringify({ ...summary, flagged: flagged.length, report: file })}\n`);
    } finally {
      bar?.stop();
    }
  },
};

export default command;
