// `arcface compare a b --model M`: cosine similarity of two faces and a same/different verdict.
// Either side may also be a saved embedding (`.json`/`.jsonl` from `arcface embed`).
import type { CommandModule } from 'yargs';
import { initInferBackend } from '../../infer/backend.ts';
import { embedFile } from '../../infer/embed.ts';
import type { Embedder } from '../../infer/embedder.ts';
import { isEmbeddingFile, readEmbeddingFile } from '../../infer/embedding-file.ts';
import { loadEmbedder } from '../../infer/load-embedder.ts';
import { cosineSimilarity, DEFAULT_THRESHOLD, verdict } from '../../infer/similarity.ts';
import { cardPath, decisionThreshold, readCard } from '../../infer/card.ts';
import { ArcfaceError } from '../../errors.ts';

interface Args {
  a: string;
  b: string;
  model?: string;
  threshold?: number;
  far?: number;
  align: boolean;
  'min-confidence': number;
  backend?: string;
}

const command: CommandModule<object, Args> = {
  command: 'compare <a> <b>',
  describe: 'Compare two faces: cosine similarity and same/different at a threshold (JSON on stdout)',
  builder: (y) =>
    y
      .positional('a', { type: 'string', demandOption: true, describe: 'image, or embedding JSON from `arcface embed`' })
      .positional('b', { type: 'string', demandOption: true, describe: 'image, or embedding JSON from `arcface embed`' })
      .option('model', { type: 'string', describe: 'tfjs model directory, .onnx or .pth (needed unless both are embeddings)' })
      .option('threshold', { type: 'number', describe: `cosine above which the faces count as the same person (default: the model card's calibrated one, else ${DEFAULT_THRESHOLD})` })
      .option('far', { type: 'number', describe: "use the model card's threshold calibrated at this FAR" })
      .option('align', { type: 'boolean', default: true, describe: 'detect and align; --no-align resizes whole images (pre-aligned crops)' })
      .option('min-confidence', { type: 'number', default: 0.5, describe: 'detector score threshold' })
      .example('$0 compare me.jpg passport.jpg --model r50.onnx', 'same person?') as never,
  handler: async (argv) => {
    if (argv.threshold !== undefined && (!Number.isFinite(argv.threshold) || argv.threshold < -1 || argv.threshold > 1)) {
      throw new ArcfaceError(`--threshold must be a cosine in [-1, 1], got ${argv.threshold}`);
    }
    const images = [argv.a, argv.b].filter((f) => !isEmbeddingFile(f));
    if (images.length > 0 && !argv.model) throw new ArcfaceError(`--model is needed to embed ${images.join(' and ')}`);
    let embedder: Embedder | undefined;
    try {
      if (images.length > 0) {
        await initInferBackend(argv.backend, argv.align);
        embedder = await loadEmbedder(argv.model!);
      }
      const side = async (f: string): Promise<{ embedding: Float32Array; score?: number }> =>
        isEmbeddingFile(f) ? readEmbeddingFile(f) : embedFile(embedder!, f, { noAlign: !argv.align, minConfidence: argv['min-confidence'] });
      const ea = await side(argv.a);
      const eb = await side(argv.b);
      const cosine = cosineSimilarity(ea.embedding, eb.embedding, [argv.a, argv.b]);
      const card = argv.model ? readCard(argv.model) : undefined;
      const thr = decisionThreshold({ threshold: argv.threshold, far: argv.far, card, cardFile: argv.model && cardPath(argv.model), fallback: DEFAULT_THRESHOLD });
      const v = verdict(cosine, thr.value);
      const result = {
        a: argv.a,
        b: argv.b,
        cosine: Number(cosine.toFixed(6)),
        threshold: thr.value,
        thresholdSource: thr.source,
        verdict: v,
        ...(argv.model && images.length > 0 ? { model: argv.model } : {}),
      };
      process.stdout.write(`${JSON.stringify(result)}\n`);
      process.stderr.write(`${argv.a} vs ${argv.b}: cosine ${cosine.toFixed(4)} -> ${v === 'same' ? 'same person' : 'different people'} (threshold ${thr.value}, ${thr.source})\n`);
    } finally {
      await embedder?.dispose();
    }
  },
};

export default command;
