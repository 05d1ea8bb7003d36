// `arcface eval`: a backbone on verification .bin sets (lfw, cfp_fp, agedb_30, your own), insightface's
// protocol; a table (or JSON lines) on stdout and every set's ROC curve in one PNG.
import type { CommandModule } from 'yargs';
import fs from 'node:fs';
import path from 'node:path';
import { compileIfEnabled } from '../../ort/infer.ts';
import { initBackend } from '../../backend/select.ts';
import { loadBackbone } from '../../convert/load-backbone.ts';
import { readBin } from '../../data/bin-set.ts';
import { evaluateModel, modelInputSize, prepareVerificationSet, type SetEvaluation } from '../../eval/evaluate-bin.ts';
import { writeRocImage } from '../../eval/roc-image.ts';
import { parseFarList } from '../../eval/calibrate.ts';
import { defaultCard, readCard, withThresholds, writeCard } from '../../infer/card.ts';
import { evalJson, formatEvalTable } from '../../eval/table.ts';
import { formatAccuracyFlip } from '../../eval/verification.ts';
import { ArcfaceError } from '../../errors.ts';
import { writeFileAtomicWith } from '../../util/atomic.ts';

interface Args {
  model: string;
  bin: string[];
  'batch-size': number;
  roc?: string;
  far: string;
  'write-card': boolean;
  json: boolean;
  backend?: string;
}

/** `<model dir>/roc.png`: beside model.json, inside a run directory, or next to a .pth file. */
export function defaultRocPath(model: string): string {
  const dir = fs.existsSync(model) && fs.statSync(model).isDirectory() ? model : path.dirname(model);
  return path.join(dir, 'roc.png');
}

const command: CommandModule<object, Args> = {
  command: 'eval',
  describe: 'Verification accuracy of a backbone on .bin pair sets (LFW / CFP-FP / AgeDB-30 protocol) and their ROC curves',
  builder: (y) =>
    y
      .option('model', { type: 'string', demandOption: true, describe: 'tfjs model directory, insightface .pth, or training run directory' })
      .option('bin', { type: 'string', array: true, demandOption: true, describe: 'one or more verification .bin files' })
      .option('batch-size', { type: 'number', default: 10, describe: 'images per forward pass (the reference uses 10)' })
      .option('roc', { type: 'string', describe: 'ROC curve PNG to write (default: roc.png in the model\'s directory)' })
      .option('far', { type: 'string', default: '1e-3,1e-4', describe: 'FARs at which to report TAR and the cosine threshold (comma-separated)' })
      .option('write-card', { type: 'boolean', default: false, describe: "store the cosine thresholds in the model's card (compare and embed then use them)" })
      .option('json', { type: 'boolean', default: false, describe: 'one JSON object per set on stdout instead of the table' })
      .example('$0 eval --model models/r50 --bin lfw.bin cfp_fp.bin agedb_30.bin', 'the three standard sets')
      .example('$0 eval --model backbone.pth --bin my.bin --roc my_roc.png --json', 'an insightface checkpoint, JSON output')
      .example('$0 eval --model models/mine --bin holdout.bin --far 1e-3,1e-4 --write-card', 'calibrate thresholds for compare') as never,
  handler: async (argv) => {
    const batchSize = argv['batch-size'];
    if (!Number.isInteger(batchSize) || batchSize < 1) throw new ArcfaceError(`--batch-size must be a positive integer, got ${argv['batch-size']}`);
    const farTargets = parseFarList(argv.far);
    const bins = argv.bin.map(String);
    if (!bins.length) throw new ArcfaceError('--bin needs at least one .bin file');
    // Check every file's structure before the slow work, so a bad third file fails at once.
    for (const b of bins) {
      if (!fs.existsSync(b)) throw new ArcfaceError('no such file', b);
      readBin(b);
    }
    const rocPath = argv.roc ?? defaultRocPath(argv.model);
    if (!fs.existsSync(path.dirname(path.resolve(rocPath)))) throw new ArcfaceError('cannot write the ROC image: no such directory', rocPath);
    await initBackend(argv.backend);
    const { model } = await loadBackbone(argv.model);
    // On the ort engines, one compiled onnxruntime graph for every set (src/ort/infer.ts).
    const compiled = compileIfEnabled(model, { cache: false });
    try {
      const size = modelInputSize(model);
      const rows: SetEvaluation[] = [];
      for (const file of bins) {
        const set = await prepareVerificationSet(file, size);
        const t0 = performance.now();
        const r = await evaluateModel(model, set, { batchSize, compiled, farTargets });
        const seconds = (performance.now() - t0) / 1000;
        process.stderr.write(`arcface: ${formatAccuracyFlip(r.name, undefined, r)} XNorm: ${r.xnorm.toFixed(6)} (${(4 * r.pairs / seconds).toFixed(1)} img/s incl. flips)\n`);
        if (argv.json) process.stdout.write(`${JSON.stringify(evalJson(r, { file, seconds: Number(seconds.toFixed(3)) }))}\n`);
        rows.push(r);
      }
      if (!argv.json) process.stdout.write(formatEvalTable(rows));
      // Through a temporary name, so an interrupted run never leaves a half-written PNG.
      let tmpName = '';
      try {
        const curves = rows.map((r) => ({
          name: `${r.name} ${r.accuracyMean.toFixed(5)}`,
          fpr: r.roc.fpr,
          tpr: r.roc.tpr,
          marks: r.calibration.map((c) => ({ far: c.farTarget, tar: c.tar })),
        }));
        await writeFileAtomicWith(rocPath, (tmp) => {
          tmpName = tmp;
          return writeRocImage(tmp, curves, { title: `ROC ${path.basename(argv.model).slice(0, 60)}` });
        });
      } catch (e) {
        throw e instanceof ArcfaceError ? new ArcfaceError(tmpName ? e.message.split(tmpName).join(rocPath) : e.message) : new ArcfaceError(`cannot write the ROC image: ${(e as Error).message}`, rocPath);
      }
      process.stderr.write(`arcface: wrote ROC curves to ${rocPath}\n`);
      if (argv['write-card']) {
        const dim = Number(model.outputs[0]?.shape[1]);
        let card = readCard(argv.model) ?? defaultCard(dim, size, { provenance: { source: path.resolve(argv.model), created: new Date().toISOString(), tool: 'arcface-ts' } });
        for (const r of rows) {
          card = withThresholds(card, r.name, r.calibration.map((c) => ({ far: c.farTarget, cosine: c.threshold, tar: c.tar, dataset: r.name, pairs: r.pairs })));
        }
        process.stderr.write(`arcface: wrote the calibrated thresholds to ${writeCard(argv.model, card)}\n`);
      }
    } finally {
      compiled?.dispose();
      model.dispose();
    }
  },
};

export default command;
