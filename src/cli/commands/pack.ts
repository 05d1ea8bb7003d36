// `arcface pack`: an image folder (one sub-folder per identity) -> train.rec / train.idx / property.
import type { CommandModule } from 'yargs';
import { SingleBar, Presets } from 'cli-progress';
import { existingPack, packFolder } from '../../data/pack-folder.ts';
import type { PackLayout } from '../../data/pack-writer.ts';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ArcfaceError } from '../../errors.ts';
import { alignPhotos } from '../../infer/align-photos.ts';
import { initInferBackend } from '../../infer/backend.ts';
import { sweepTemporaries } from '../../util/atomic.ts';
import { acquireOutputLock, commandLine } from '../../util/lock.ts';

interface Args {
  folder: string;
  out: string;
  size: number;
  quality: number;
  layout: PackLayout;
  force: boolean;
  progress: boolean;
  align: boolean;
  workers?: number;
  backend?: string;
}

const command: CommandModule<object, Args> = {
  command: 'pack <folder>',
  describe: 'Pack an image folder (one sub-folder per identity) into insightface RecordIO (train.rec/.idx/property)',
  builder: (y) =>
    y
      .positional('folder', { type: 'string', demandOption: true, describe: 'folder with one sub-folder of images per identity' })
      .option('out', { type: 'string', demandOption: true, describe: 'output folder' })
      .option('size', { type: 'number', default: 112, describe: 'side of the stored square images; others are resized (shorter side + centre crop)' })
      .option('quality', { type: 'number', default: 95, describe: 'JPEG quality for re-encoded images' })
      .option('layout', { type: 'string', choices: ['insightface', 'plain'], default: 'insightface', describe: 'insightface: meta record 0 + identity records; plain: images only, keys from 0' })
      .option('force', { type: 'boolean', default: false, describe: 'replace an existing pack in --out' })
      .option('progress', { type: 'boolean', default: true, describe: 'show a progress bar on stderr' })
      .option('align', { type: 'boolean', default: false, describe: 'detect and align the faces of raw photos first (as `arcface align`; report in --out)' })
      .option('workers', { type: 'number', describe: 'with --align: worker threads for detection' })
      .example('$0 pack photos/ --out data/mine', 'photos/alice/*.jpg, photos/bob/*.png ... -> data/mine/train.rec')
      .example('$0 pack raw-photos/ --out data/mine --align', 'detect and align first') as never,
  handler: async (argv) => {
    if (!Number.isInteger(argv.size) || argv.size < 8) throw new ArcfaceError(`--size must be an integer >= 8, got ${argv.size}`);
    if (!Number.isInteger(argv.quality) || argv.quality < 1 || argv.quality > 100) throw new ArcfaceError(`--quality must be 1..100, got ${argv.quality}`);
    const bar = argv.progress && process.stderr.isTTY ? new SingleBar({ stream: process.stderr, format: 'pack [{bar}] {value}/{total} images | {eta_formatted} left' }, Presets.shades_classic) : null;
    const lock = acquireOutputLock(argv.out, commandLine('arcface'));
    sweepTemporaries(argv.out);
    const existing = argv.force ? undefined : existingPack(argv.out);
    if (existing) {
      lock.release();
      throw new ArcfaceError('already exists (the `force` option replaces it)', existing);
    }
    const controller = new AbortController();
    const onSignal = (): void => controller.abort();
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    let started = false;
    let folder = argv.folder;
    let aligned: string | undefined;
    try {
      if (argv.align) {
        await initInferBackend(argv.backend, true);
        aligned = fs.mkdtempSync(path.join(os.tmpdir(), 'arcface-pack-align-'));
        const report = await alignPhotos([argv.folder], aligned, { size: argv.size, workers: argv.workers });
        fs.mkdirSync(argv.out, { recursive: true });
        const reportFile = path.join(argv.out, 'align-report.json');
        fs.writeFileSync(reportFile, `${JSON.stringify(report, null, 2)}\n`);
        for (const f of report.flagged) process.stderr.write(`arcface: ${f.file}: ${f.notes.join('; ')}\n`);
        process.stderr.write(`arcface: aligned ${report.aligned + report.passthrough} of ${report.photos} photos (report: ${reportFile})\n`);
        folder = aligned;
      }
      const r = await packFolder(folder, {
        out: argv.out,
        size: argv.size,
        quality: argv.quality,
        layout: argv.layout,
        force: argv.force,
        signal: controller.signal,
        onProgress: (done, total) => {
          if (!bar) return;
          if (!started) bar.start(total, 0);
          started = true;
          bar.update(done);
        },
        onSkip: (file, reason) => {
          if (!bar) process.stderr.write(`arcface: skipped ${file}: ${reason}\n`);
        },
      });
      bar?.stop();
      if (bar) for (const s of r.skipped) process.stderr.write(`arcface: skipped ${s.file}: ${s.reason}\n`);
      process.stderr.write(
        `arcface: packed ${r.images} images of ${r.identities} identities into ${argv.out} (${r.skipped.length} files skipped, ${r.reencoded} re-encoded, ${r.splitRecords} split records)\n`,
      );
      process.stdout.write(
        `${JSON.stringify({ out: argv.out, identities: r.identities, images: r.images, skipped: r.skipped.length, reencoded: r.reencoded, splitRecords: r.splitRecords, files: r.files })}\n`,
      );
    } finally {
      if (aligned) fs.rmSync(aligned, { recursive: true, force: true });
      bar?.stop();
      lock.release();
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
  },
};

export default command;
