// `arcface export`: any backbone (tfjs dir, .pth, training run) -> tfjs layers, ONNX or an insightface .pth;
// a whole training run -> an arcface_torch folder for torchrun on N ranks.
import type { CommandModule } from 'yargs';
import fs from 'node:fs';
import { initBackend } from '../../backend/select.ts';
import { loadBackbone } from '../../convert/load-backbone.ts';
import { toStateDict } from '../../convert/torch-mapping.ts';
import { writeTorchStateDict } from '../../formats/torch-write.ts';
import { saveModel } from '../../models/io.ts';
import { ArcfaceError } from '../../errors.ts';
import { defaultCard, ONNX_CARD_KEY, readCard, writeCard, type ModelCard } from '../../infer/card.ts';
import { writeFileAtomic } from '../../util/atomic.ts';
import { isRawInput } from '../../models/input-convention.ts';
import { acquireOutputLock, commandLine } from '../../util/lock.ts';

interface Args {
  format: 'tfjs' | 'onnx' | 'pth' | 'torchrun';
  model: string;
  out: string;
  opset?: number;
  'fold-bn'?: boolean;
  'embed-normalization'?: boolean;
  'ort-cpu'?: boolean;
  'world-size'?: number;
  'torch-output'?: string;
  'torch-rec'?: string;
  'num-image'?: number;
  backend?: string;
}

const command: CommandModule<object, Args> = {
  command: 'export',
  describe: 'Write a backbone as a tfjs layers model, an ONNX graph or an insightface-compatible .pth, or a run for arcface_torch on N GPUs',
  builder: (y) =>
    y
      .option('format', { choices: ['tfjs', 'onnx', 'pth', 'torchrun'] as const, demandOption: true, describe: 'output format' })
      .option('model', { type: 'string', demandOption: true, describe: 'tfjs model dir, .pth, or training run dir (torchrun: a run, checkpoint or arcface_torch folder)' })
      .option('out', { type: 'string', demandOption: true, describe: 'output directory (tfjs, torchrun) or file (.onnx, .pth)' })
      .option('world-size', { type: 'number', describe: 'torchrun: number of ranks (GPUs) to continue on' })
      .option('torch-output', { type: 'string', describe: 'torchrun: config.output as seen by train_v2.py (default: the absolute --out)' })
      .option('torch-rec', { type: 'string', describe: "torchrun: config.rec on the torchrun machine (default: the run's rec)" })
      .option('num-image', { type: 'number', describe: 'torchrun: images per epoch, when the checkpoint does not record it and the data is not here' })
      .option('opset', { type: 'number', default: 11, describe: 'ONNX opset (9-17)' })
      .option('fold-bn', { type: 'boolean', default: false, describe: 'ONNX: fold BatchNorm into the preceding conv' })
      .option('embed-normalization', { type: 'boolean', default: false, describe: "ONNX: take raw 0..255 pixels (the model's normalisation in front; automatic for models converted from such graphs)" })
      .option('ort-cpu', { type: 'boolean', default: false, describe: "ONNX: rewrite PReLU for onnxruntime's CPU engine (same outputs, up to 2x faster there)" })
      .example('$0 export --format onnx --model runs/tiny --out tiny.onnx', 'serve a trained model with onnxruntime')
      .example('$0 export --format onnx --model models/r50 --opset 13 --fold-bn --ort-cpu --out r50.onnx', 'fastest on onnxruntime CPU')
      .example('$0 export --format pth --model runs/r50 --out backbone.pth', 'continue in insightface')
      .example('$0 export --format torchrun --world-size 8 --model runs/r50 --out r50_8gpu', 'continue the whole run on 8 GPUs with torchrun') as never,
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
  if (argv.format === 'torchrun') {
    const n = argv['world-size'];
    if (n === undefined || !Number.isInteger(n) || n < 1) throw new ArcfaceError('--format torchrun needs --world-size N (a positive integer)');
    const { exportTorchrun } = await import('../../convert/torchrun/export.ts');
    const r = await exportTorchrun(argv.model, argv.out, {
      worldSize: n,
      torchOutput: argv['torch-output'],
      rec: argv['torch-rec'],
      numImage: argv['num-image'],
      warn: (m) => process.stderr.write(`arcface: warning: ${m}\n`),
    });
    process.stdout.write(`${JSON.stringify({ format: 'torchrun', model: argv.model, ...r })}\n`);
    return;
  }
  const { model, spec, input } = await loadBackbone(argv.model);
  // The model's own input convention is kept: a normalisation that was inside the original graph (or
  // asked for with --embed-normalization) goes in front of an exported ONNX graph.
  const convention = argv.format === 'onnx' && argv['embed-normalization'] && !isRawInput(input) ? { ...input, normalisationInGraph: true } : input;
  // The model card travels with the model: its thresholds and provenance, the input the output takes.
  const outputSize = Number(model.outputs[0]?.shape[1]);
  const inputSize = Number(model.inputs[0]?.shape[1]);
  const base: ModelCard = readCard(argv.model) ?? defaultCard(outputSize, inputSize, { ...(spec ? { network: spec.network } : {}) });
  const rawOnnx = argv.format === 'onnx' && convention.normalisationInGraph === true;
  const card: ModelCard = {
    ...base,
    input: {
      channels: convention.order,
      mean: rawOnnx ? [0, 0, 0] : convention.mean,
      std: rawOnnx ? [1, 1, 1] : convention.std,
      layout: argv.format === 'onnx' ? 'NCHW' : 'NHWC',
    },
    provenance: { ...base.provenance, source: base.provenance.source ?? argv.model, created: new Date().toISOString(), notes: [...(base.provenance.notes ?? []), `exported as ${argv.format} from ${argv.model}`] },
  };
  try {
    if (argv.format === 'tfjs') {
      await saveModel(model, argv.out, spec); // the input convention travels in the model's metadata
      writeCard(argv.out, card);
    } else if (argv.format === 'pth') {
      writeTorchStateDict(argv.out, toStateDict(model));
      writeCard(argv.out, card);
    } else {
      const { exportOnnx } = await import('../../onnx/export.ts');
      const { applyInputConvention } = await import('../../convert/onnx-input.ts');
      if (argv.opset! < 9 || argv.opset! > 17) throw new ArcfaceError(`--opset ${argv.opset} is outside 9-17`);
      const bytes = exportOnnx(model, {
        label: argv.out,
        opset: argv.opset,
        foldBatchNorm: argv['fold-bn'],
        ortCpu: argv['ort-cpu'],
        spec,
        extraMetadata: { [ONNX_CARD_KEY]: JSON.stringify(card) },
      });
      try {
        writeFileAtomic(argv.out, applyInputConvention(bytes, convention));
      } catch (e) {
        throw e instanceof ArcfaceError ? e : new ArcfaceError(`cannot write ONNX file: ${(e as Error).message}`, argv.out);
      }
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
