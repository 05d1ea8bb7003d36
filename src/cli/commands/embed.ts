// `arcface embed`: image files -> JSON lines of L2-normalised face embeddings on stdout.
import type { CommandModule } from 'yargs';
import type { Landmarks5, Point } from '../../infer/align.ts';
import { initInferBackend } from '../../infer/backend.ts';
import { embedFiles } from '../../infer/embed.ts';
import { formatEmbedResult } from '../../infer/embedding-file.ts';
import { loadEmbedder } from '../../infer/load-embedder.ts';
import { ArcfaceError } from '../../errors.ts';
import { pickThreshold, readCard } from '../../infer/card.ts';

interface Args {
  images: string[];
  model: string;
  landmarks?: string;
  align: boolean;
  'skip-missing': boolean;
  batch: number;
  'min-confidence': number;
  backend?: string;
}

/** "x1,y1,...,x5,y5" (commas or spaces) -> five points. */
export function parseLandmarks(text: string): Landmarks5 {
  const v = text.split(/[\s,]+/).filter(Boolean).map(Number);
  if (v.length !== 10 || v.some((x) => !Number.isFinite(x))) {
    throw new ArcfaceError(`--landmarks needs 10 numbers x1,y1,...,x5,y5 (eyes, nose, mouth corners), got "${text}"`);
  }
  return [0, 1, 2, 3, 4].map((i) => [v[2 * i], v[2 * i + 1]] as Point) as unknown as Landmarks5;
}

const command: CommandModule<object, Args> = {
  command: 'embed <images..>',
  describe: 'Detect, align and embed faces: one JSON line {file, embedding, landmarks, score} per image',
  builder: (y) =>
    y
      .positional('images', { type: 'string', array: true, describe: 'image files (any format sharp reads)' })
      .option('model', { type: 'string', demandOption: true, describe: 'tfjs model directory, .onnx (onnxruntime-node) or .pth' })
      .option('landmarks', { type: 'string', describe: 'five points x1,y1,...,x5,y5 to align with instead of detecting (used for every image)' })
      .option('align', { type: 'boolean', default: true, describe: 'detect and align; --no-align resizes the whole image (for pre-aligned crops)' })
      .option('skip-missing', { type: 'boolean', default: false, describe: 'print {file, skipped} for an image without a face instead of failing' })
      .option('batch', { type: 'number', default: 32, describe: 'images per model call' })
      .option('min-confidence', { type: 'number', default: 0.5, describe: 'detector score threshold' })
      .example('$0 embed a.jpg b.jpg --model r50.onnx', 'embed the best face of each image')
      .example('$0 embed crops/*.png --model models/r50 --no-align', 'embed already-aligned 112x112 crops') as never,
  handler: async (argv) => {
    const landmarks = argv.landmarks !== undefined ? parseLandmarks(argv.landmarks) : undefined;
    if (landmarks && !argv.align) throw new ArcfaceError('--landmarks and --no-align contradict each other: give one');
    if (!Number.isInteger(argv.batch) || argv.batch < 1) throw new ArcfaceError(`--batch must be a positive integer, got ${argv.batch}`);
    await initInferBackend(argv.backend, argv.align && !landmarks);
    const embedder = await loadEmbedder(argv.model);
    const threshold = pickThreshold(readCard(argv.model));
    if (threshold) {
      process.stderr.write(`arcface: the model card's threshold: same person iff cosine > ${threshold.cosine} (FAR ${threshold.far} on ${threshold.dataset}; compare and search use it)\n`);
    }
    try {
      let skipped = 0;
      const opts = { landmarks, noAlign: !argv.align, skipMissing: argv['skip-missing'], batchSize: argv.batch, minConfidence: argv['min-confidence'] };
      for await (const r of embedFiles(embedder, argv.images, opts)) {
        if ('skipped' in r) {
          skipped++;
          process.stderr.write(`arcface: skipped ${r.file}: ${r.skipped}\n`);
        }
        process.stdout.write(`${formatEmbedResult(r)}\n`);
      }
      process.stderr.write(`arcface: embedded ${argv.images.length - skipped} of ${argv.images.length} images (${embedder.embeddingSize}-d, ${embedder.format})\n`);
    } finally {
      await embedder.dispose();
    }
  },
};

export default command;
