// `arcface export`: any backbone (tfjs dir, .pth, training run) -> tfjs layers, ONNX or an insightface .pth.
import type { CommandModule } from 'yargs';
import fs from 'node:fs';
import { initBackend } from '../../backend/select.ts';
import { loadBackbone } from '../../convert/load-backbone.ts';
import { toStateDict } from '../../convert/torch-mapping.ts';
import { writeTorchStateDict } from '../../formats/torch.ts';
import { saveModel } from '../../models/io.ts';
import { ArcfaceError } from '../../errors.ts';
import { acquireOutputLock, commandLine } from '../../util/lock.ts';

interface Args {
  format: 'tfjs' | 'onnx' | 'pth';
  model: string;
  out: string;
  opset?: number;
  'fold-bn'?: boolean;
  'embed-normalization'?: boolean;
  'ort-cpu'?: boolean;
  backend?: string;
}

const command: CommandModule<object, Args> = {
  command: 'export',
  describe: 'Write a backbone as a tfjs layers model, an ONNX graph or an insightface-compatible .pth',
  builder: (y) =>
    y
      .option('format', { choices: ['tfjs', 'onnx', 'pth'] as const, demandOption: true, describe: 'output format' })
      .option('model', { type: 'string', demandOption: true, describe: 'tfjs model dir, .pth, or training run dir' })
      .option('out', { type: 'string', demandOption: true, describe: 'output directory (tfjs) or file (.onnx, .pth)' })
      .option('opset', { type: 'number', default: 11, describe: 'ONNX opset (9-17)' })
      .option('fold-bn', { type: 'boolean', default: false, describe: 'ONNX: fold BatchNorm into the preceding conv' })
      .option('embed-normalization', { type: 'boolean', default: false, describe: 'ONNX: take raw 0..255 RGB input' })
      .option('ort-cpu', { type: 'boolean', default: false, describe: "ONNX: rewrite PReLU for onnxruntime's CPU engine (same outputs, up to 2x faster there)" })
      .example('$0 export --format onnx --model runs/tiny --out tiny.onnx', 'serve a trained model with onnxruntime')
      .example('$0 export --format onnx --model models/r50 --opset 13 --fold-bn --ort-cpu --out r50.onnx', 'fastest on onnxruntime CPU')
      .example('$0 export --format pth --model runs/r50 --out backbone.pth', 'continue in insightface') as never,
  handler: async (argv) => {
    const lock = acquireOutputLock(argv.out, commandLine('arcface'));
    try {
      await exportModel(argv);
    } finally {
      lock.release();
    }
  },
};

async function exportModel(argv: Args): Promise<void> {
  await initBackend(argv.backend);
  const { model, spec } = await loadBackbone(argv.model);
  try {
    if (argv.format === 'tfjs') {
      await saveModel(model, argv.out, spec);
    } else if (argv.format === 'pth') {
      writeTorchStateDict(argv.out, toStateDict(model));
    } else {
      const { writeOnnx } = await import('../../convert/onnx/export.ts');
      if (argv.opset! < 9 || argv.opset! > 17) throw new ArcfaceError(`--opset ${argv.opset} is outside 9-17`);
      writeOnnx(argv.out, model, { opset: argv.opset, foldBatchNorm: argv['fold-bn'], embedNormalization: argv['embed-normalization'], ortCpu: argv['ort-cpu'], spec });
    }
  } finally {
    model.dispose();
  }
  const bytes = fs.statSync(argv.out).isDirectory()
    ? fs.readdirSync(argv.out).reduce((a, f) => a + fs.statSync(`${argv.out}/${f}`).size, 0)
    : fs.statSync(argv.out).size;
  process.stdout.write(`${JSON.stringify({ format: argv.format, model: argv.model, out: argv.out, bytes, ...(spec ?? {}) })}\n`);
}

export default command;
