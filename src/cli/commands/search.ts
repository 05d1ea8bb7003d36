// `arcface search probe.jpg --gallery people/ --model M`: who is this? The gallery's identities ranked by
// their best cosine similarity to the probe, with the threshold decision; one JSON object on stdout.
import type { CommandModule } from 'yargs';
import fs from 'node:fs';
import { initInferBackend } from '../../infer/backend.ts';
import { cardPath, decisionThreshold, readCard } from '../../infer/card.ts';
import { embedFile, embedFiles } from '../../infer/embed.ts';
import type { Embedder } from '../../infer/embedder.ts';
import { isEmbeddingFile, readEmbeddingFile } from '../../infer/embedding-file.ts';
import { loadEmbedder } from '../../infer/load-embedder.ts';
import { formatGalleryLine, listGallery, readGallery, searchGallery, type GalleryEntry } from '../../infer/search.ts';
import { DEFAULT_THRESHOLD } from '../../infer/similarity.ts';
import { ArcfaceError } from '../../errors.ts';

interface Args {
  probe: string;
  gallery: string;
  model?: string;
  'top-k': number;
  threshold?: number;
  far?: number;
  'save-gallery'?: string;
  align: boolean;
  'min-confidence': number;
  backend?: string;
}

const command: CommandModule<object, Args> = {
  command: 'search <probe>',
  describe: 'Find a face among known people: the top-k identities of a gallery with scores and the match decision (JSON)',
  builder: (y) =>
    y
      .positional('probe', { type: 'string', demandOption: true, describe: 'photo, or embedding JSON from `arcface embed`' })
      .option('gallery', { type: 'string', demandOption: true, describe: 'folder with a subfolder of photos per person, or a .jsonl gallery from --save-gallery' })
      .option('model', { type: 'string', describe: 'tfjs model directory, .onnx or .pth (needed for photos)' })
      .option('top-k', { type: 'number', default: 5, describe: 'identities to list' })
      .option('threshold', { type: 'number', describe: `cosine above which a gallery identity matches (default: the model card's, else ${DEFAULT_THRESHOLD})` })
      .option('far', { type: 'number', describe: "use the model card's threshold calibrated at this FAR" })
      .option('save-gallery', { type: 'string', describe: "write the gallery's embeddings as JSON lines, to search again without re-embedding" })
      .option('align', { type: 'boolean', default: true, describe: 'detect and align; --no-align for pre-aligned crops' })
      .option('min-confidence', { type: 'number', default: 0.5, describe: 'detector score threshold' })
      .example('$0 search who.jpg --gallery people/ --model models/mine', 'top 5 people')
      .example('$0 search who.jpg --gallery people.jsonl --model models/mine --far 1e-4', 'a saved gallery, the strict threshold') as never,
  handler: async (argv) => {
    const needsModel = !isEmbeddingFile(argv.probe) || !isEmbeddingFile(argv.gallery);
    if (needsModel && !argv.model) throw new ArcfaceError('--model is needed to embed photos');
    const card = argv.model ? readCard(argv.model) : undefined;
    const thr = decisionThreshold({ threshold: argv.threshold, far: argv.far, card, cardFile: argv.model && cardPath(argv.model), fallback: DEFAULT_THRESHOLD });
    let embedder: Embedder | undefined;
    try {
      if (needsModel) {
        await initInferBackend(argv.backend, argv.align);
        embedder = await loadEmbedder(argv.model!);
      }
      const opts = { noAlign: !argv.align, minConfidence: argv['min-confidence'] };
      let gallery: GalleryEntry[];
      if (isEmbeddingFile(argv.gallery)) {
        gallery = readGallery(argv.gallery);
      } else {
        const photos = listGallery(argv.gallery);
        gallery = [];
        let i = 0;
        for await (const r of embedFiles(embedder!, photos.map((p) => p.file), { ...opts, skipMissing: true })) {
          const { identity } = photos[i++]!;
          if ('skipped' in r) process.stderr.write(`arcface: gallery: skipped ${r.file}: ${r.skipped}\n`);
          else gallery.push({ identity, file: r.file, embedding: r.embedding });
        }
        if (!gallery.length) throw new ArcfaceError('gallery: no face found in any photo', argv.gallery);
        if (argv['save-gallery']) fs.writeFileSync(argv['save-gallery'], gallery.map((g) => `${formatGalleryLine(g)}\n`).join(''));
      }
      const probe = isEmbeddingFile(argv.probe) ? readEmbeddingFile(argv.probe).embedding : (await embedFile(embedder!, argv.probe, opts)).embedding;
      const matches = searchGallery(probe, gallery, argv['top-k'], thr.value);
      const best = matches[0];
      const result = {
        probe: argv.probe,
        identity: best?.match ? best.identity : null,
        threshold: thr.value,
        thresholdSource: thr.source,
        identities: new Set(gallery.map((g) => g.identity)).size,
        matches: matches.map((m) => ({ ...m, score: Number(m.score.toFixed(6)) })),
      };
      process.stdout.write(`${JSON.stringify(result)}\n`);
      process.stderr.write(
        `${argv.probe}: ${best?.match ? `${best.identity} (cosine ${best.score.toFixed(4)})` : `no one in the gallery (best ${best?.identity} at ${best?.score.toFixed(4)})`}; threshold ${thr.value} (${thr.source})\n`,
      );
    } finally {
      await embedder?.dispose();
    }
  },
};

export default command;
