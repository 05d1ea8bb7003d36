// `arcface import`: a PyTorch checkpoint (or ONNX graph) -> a tfjs layers model directory.
import type { CommandModule } from 'yargs';
import path from 'node:path';
import fs from 'node:fs';
import { initBackend } from '../../backend/select.ts';
import { importTorch } from '../../convert/import-torch.ts';
import { saveModel } from '../../models/io.ts';
import { countParameters } from '../../models/params.ts';
import { NETWORKS } from '../../models/factory.ts';
import { ArcfaceError } from '../../errors.ts';
import { acquireOutputLock, commandLine } from '../../util/lock.ts';

interface Args {
  from: string;
  out: string;
  network?: string;
  'embedding-size'?: number;
  'input-size'?: number;
  backend?: string;
}

const command: CommandModule<object, Args> = {
  command: 'import',
  describe: 'Convert an insightface backbone.pth / model.pt or an ONNX model into a tfjs layers model directory',
  builder: (y) =>
    y
      .option('from', { type: 'string', demandOption: true, describe: 'torch.save file (state dict or checkpoint) or .onnx' })
      .option('out', { type: 'string', demandOption: true, describe: 'output directory (model.json + weights.bin)' })
      .option('network', { type: 'string', choices: [...NETWORKS], describe: 'network name; inferred from the keys when omitted' })
      .option('embedding-size', { type: 'number', describe: 'embedding size (default: from the checkpoint)' })
      .option('input-size', { type: 'number', describe: 'input side in pixels (default: from the checkpoint, else 112)' })
      .example('$0 import --from backbone.pth --out models/r50', 'detect the network from the checkpoint')
      .example('$0 import --from model.pt --network r100 --out models/r100', 'say which network it is') as never,
  handler: async (argv) => {
    if (!fs.existsSync(argv.from)) throw new ArcfaceError('no such file', argv.from);
    const lock = acquireOutputLock(argv.out, commandLine('arcface'));
    try {
      await importModel(argv);
    } finally {
      lock.release();
    }
  },
};

async function importModel(argv: Args): Promise<void> {
  await initBackend(argv.backend);
  const ext = path.extname(argv.from).toLowerCase();
  if (ext === '.onnx') {
    const { importOnnx } = await import('../../convert/onnx/index.ts');
    const imported = await importOnnx(argv.from);
    await saveModel(imported.model, argv.out);
    const o = imported.model.outputs[0]!.shape;
    const summary = { from: argv.from, out: argv.out, inputNCHW: imported.inputShapeNCHW, embeddingSize: o[o.length - 1], normalisationBuiltIn: imported.normalisationBuiltIn, parameters: countParameters(imported.model), customLayers: imported.customLayerCount };
    process.stdout.write(`${JSON.stringify(summary)}\n`);
    imported.model.dispose();
    return;
  }
  const { model, spec } = importTorch(argv.from, {
    network: argv.network,
    embeddingSize: argv['embedding-size'],
    inputSize: argv['input-size'],
  });
  await saveModel(model, argv.out, spec);
  const summary = { from: argv.from, out: argv.out, ...spec, parameters: countParameters(model) };
  process.stdout.write(`${JSON.stringify(summary)}\n`);
  model.dispose();
}

export default command;
