// `arcface inspect`: counts, classes and a sample of a training pack (.rec) or a verification set (.bin).
import type { CommandModule } from 'yargs';
import fs from 'node:fs';
import { inspectBin, inspectRec, type BinSummary, type RecSummary } from '../../data/inspect.ts';
import { ArcfaceError } from '../../errors.ts';

interface Args {
  file: string;
  sample: number;
  verify: boolean;
  json: boolean;
}

function text(s: RecSummary | BinSummary): string {
  const lines: string[] = [];
  const sample = s.sample.map((x) => `  key ${x.key}${x.label !== undefined ? ` label ${x.label}` : ''}: ${x.format} ${x.width ?? '?'}x${x.height ?? '?'}, ${x.bytes} bytes, sha256 ${x.sha256.slice(0, 16)}…`);
  if (s.kind === 'recordio') {
    lines.push(`${s.file}: RecordIO pack, ${s.layout} layout`);
    lines.push(`images: ${s.images}`);
    lines.push(`classes: ${s.classes} (labels found: ${s.labelsFound}; images per class min ${s.imagesPerClass.min}, mean ${s.imagesPerClass.mean.toFixed(1)}, max ${s.imagesPerClass.max})`);
    if (s.property) lines.push(`property: ${s.property.numClasses},${s.property.height},${s.property.width}`);
    if (s.meta) lines.push(`meta record 0: images are keys 1..${s.meta.a - 1}, identity records ${s.meta.a}..${s.meta.b - 1}`);
  } else {
    lines.push(`${s.file}: verification set`);
    lines.push(`pairs: ${s.pairs} (${s.same} same, ${s.different} different), images: ${s.images}`);
    lines.push(`image sizes: ${Object.entries(s.sizes).map(([k, v]) => `${k} x${v}`).join(', ')}`);
  }
  lines.push('sample:', ...sample);
  if (s.corrupt) lines.push(`corrupt images: ${s.corrupt.length}`, ...s.corrupt.slice(0, 20).map((c) => `  key ${c.key}: ${c.reason}`));
  return lines.join('\n') + '\n';
}

const command: CommandModule<object, Args> = {
  command: 'inspect <file>',
  describe: 'Show counts, classes and a sample of a training pack (train.rec or its folder) or a .bin verification set',
  builder: (y) =>
    y
      .positional('file', { type: 'string', demandOption: true, describe: 'train.rec, a folder holding train.rec, or a .bin' })
      .option('sample', { type: 'number', default: 3, describe: 'number of images to describe' })
      .option('verify', { type: 'boolean', default: false, describe: 'decode every image and list the corrupt ones (exit code 1 if any)' })
      .option('json', { type: 'boolean', default: false, describe: 'print one JSON object instead of text' })
      .example('$0 inspect data/ms1m/train.rec', 'a training pack')
      .example('$0 inspect data/ms1m/lfw.bin --verify', 'a verification set, decoding every image') as never,
  handler: async (argv) => {
    if (!fs.existsSync(argv.file)) throw new ArcfaceError('no such file or folder', argv.file);
    const opts = { sample: argv.sample, verify: argv.verify };
    const summary = argv.file.endsWith('.bin') ? await inspectBin(argv.file, opts) : await inspectRec(argv.file, opts);
    process.stdout.write(argv.json ? `${JSON.stringify(summary)}\n` : text(summary));
    if (summary.corrupt?.length) {
      throw new ArcfaceError(`${summary.corrupt.length} corrupt image(s) (first: key ${summary.corrupt[0].key}: ${summary.corrupt[0].reason})`, argv.file);
    }
  },
};

export default command;
