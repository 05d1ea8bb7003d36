// `arcface import`: a PyTorch checkpoint (or ONNX graph, or an arcface_torch output folder) -> a tfjs layers model directory.
import type { CommandModule } from 'yargs';
import path from 'node:path';
import fs from 'node:fs';
import { initBackend } from '../../backend/select.ts';
import { importTorch } from '../../convert/import-torch.ts';
import { saveModel } from '../../models/io.ts';
import { countParameters } from '../../models/params.ts';
import { NETWORKS } from '../../models/factory.ts';
import { ArcfaceError } from '../../errors.ts';
import { loadOnnxBackbone } from '../../convert/load-backbone.ts';
import { describeInput, setInputConvention, STANDARD_INPUT } from '../../models/input-convention.ts';
import { writeNpy } from '../../formats/npy.ts';
import { isTorchrunPath, listTorchrun, readTorchrun } from '../../convert/torchrun/read.ts';
import { gatherCentres } from '../../convert/torchrun/state.ts';
import { acquireOutputLock, commandLine } from '../../util/lock.ts';

interface Args {
  from: string;
  out: string;
  network?: string;
  'embedding-size'?: number;
  'input-size'?: number;
  'input-order'?: 'rgb' | 'bgr';
  generic?: boolean;
  head?: boolean;
  backend?: string;
}

const command: CommandModule<object, Args> = {
  command: 'import',
  describe: 'Convert an insightface backbone.pth / model.pt or an ONNX model (any exporter) into a tfjs layers model directory',
  builder: (y) =>
    y
      .option('from', { type: 'string', demandOption: true, describe: 'torch.save file (state dict or checkpoint), .onnx, or an arcface_torch output folder' })
      .option('out', { type: 'string', demandOption: true, describe: 'output directory (model.json + weights.bin)' })
      .option('network', { type: 'string', choices: [...NETWORKS], describe: 'network name; inferred from the keys when omitted' })
      .option('embedding-size', { type: 'number', describe: 'embedding size (default: from the checkpoint)' })
      .option('input-size', { type: 'number', describe: 'input side in pixels (default: from the checkpoint, else 112)' })
      .option('head', { type: 'boolean', default: false, describe: 'also write the class centres (all ranks gathered) as <out>/head.npy' })
      .example('$0 import --from backbone.pth --out models/r50', 'detect the network from the checkpoint')
      .example('$0 import --from model.pt --network r100 --out models/r100', 'say which network it is')
      .example('$0 import --from work_dirs/ms1mv3_r50 --head --out models/r50', 'an arcface_torch run: backbone and gathered centres')
      .option('input-order', { choices: ['rgb', 'bgr'] as const, describe: "channel order the model was trained on (default: detected from the graph's normalisation, else RGB)" })
      .option('generic', { type: 'boolean', default: false, describe: 'ONNX: keep the graph as a generic tfjs model even when it is an IResNet/MobileFaceNet' })
      .example('$0 import --from arcfaceresnet100-8.onnx --out models/r100', 'an ONNX IResNet/MobileFaceNet from any exporter becomes the native network') as never,
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
  const order = argv['input-order'] ? (argv['input-order'].toUpperCase() as 'RGB' | 'BGR') : undefined;
  if (ext === '.onnx') {
    // An IResNet/MobileFaceNet graph (any exporter) becomes the native network; anything else a generic model.
    const loaded = await loadOnnxBackbone(argv.from, { generic: argv.generic, order });
    try {
      await saveModel(loaded.model, argv.out, loaded.spec);
      const o = loaded.model.outputs[0]!.shape;
      const summary = {
        from: argv.from,
        out: argv.out,
        ...(loaded.spec ?? { network: 'generic', embeddingSize: o[o.length - 1], inputSize: loaded.model.inputs[0]!.shape[1] }),
        input: describeInput(loaded.input),
        ...(loaded.foldedBatchNorms ? { foldedBatchNorms: loaded.foldedBatchNorms } : {}),
        parameters: countParameters(loaded.model),
        how: loaded.note,
      };
      process.stdout.write(`${JSON.stringify(summary)}\n`);
    } finally {
      loaded.model.dispose();
    }
    return;
  }
  // An arcface_torch folder (or one of its rank files): the backbone is rank 0's; --head gathers every rank's centres.
  const torchrun = isTorchrunPath(argv.from) || (argv.head && fs.statSync(argv.from).isFile());
  if (!torchrun && fs.statSync(argv.from).isDirectory()) throw new ArcfaceError('a folder, but not an arcface_torch output (no checkpoint_gpu_0.pt)', argv.from);
  const files = torchrun ? listTorchrun(argv.from).files : [argv.from];
  const run = argv.head ? readTorchrun(argv.from) : undefined;
  const head = run ? gatherCentres(run) : undefined;
  const { model, spec } = importTorch(files[0]!, {
    network: argv.network,
    embeddingSize: argv['embedding-size'],
    inputSize: argv['input-size'],
  });
  if (order) setInputConvention(model, { ...STANDARD_INPUT, order });
  await saveModel(model, argv.out, spec);
  if (head) writeNpy(path.join(argv.out, 'head.npy'), { shape: head.shape, data: head.data });
  const summary = {
    from: argv.from,
    out: argv.out,
    ...spec,
    parameters: countParameters(model),
    ...(torchrun ? { worldSize: files.length } : {}),
    ...(run ? { epoch: run.ranks[0]!.epoch, globalStep: run.ranks[0]!.globalStep } : {}),
    ...(head ? { head: path.join(argv.out, 'head.npy'), numClasses: head.shape[0] } : {}),
  };
  process.stdout.write(`${JSON.stringify(summary)}\n`);
  model.dispose();
}

export default command;
