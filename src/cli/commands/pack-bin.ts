// `arcface pack-bin`: a pairs list + images, or a labelled folder, -> an insightface verification .bin (like lfw.bin).
import type { CommandModule } from 'yargs';
import { writeBin } from '../../data/bin-set.ts';
import { buildVerificationSet, pairsFromFolder, parsePairs, type Pair, type PairsFormat } from '../../data/pairs.ts';
import { ArcfaceError } from '../../errors.ts';
import { withOutputLock, commandLine } from '../../util/lock.ts';

interface Args {
  pairs?: string;
  'from-folder'?: string;
  genuine: string;
  seed: number;
  out: string;
  root?: string;
  ext: string;
  format?: PairsFormat;
  size: number;
  quality: number;
}

const command: CommandModule<object, Args> = {
  command: 'pack-bin',
  describe: 'Make a verification .bin (pickled image pairs + issame, like lfw.bin) from a pairs list or a labelled folder',
  builder: (y) =>
    y
      .option('pairs', { type: 'string', describe: 'LFW pairs.txt, or lines "pathA pathB 1|0"' })
      .option('from-folder', { type: 'string', describe: 'make the pairs from a labelled folder (a sub-folder of photos per person)' })
      .option('genuine', { type: 'string', default: 'all', describe: 'with --from-folder: "all" genuine pairs, or at most N; as many impostor pairs' })
      .option('seed', { type: 'number', default: 0, describe: 'with --from-folder: seed of the pair draw' })
      .conflicts('pairs', 'from-folder')
      .check((a) => {
        if (!a.pairs && !a['from-folder']) throw new Error('give --pairs or --from-folder');
        return true;
      })
      .option('out', { type: 'string', demandOption: true, describe: 'output .bin file' })
      .option('root', { type: 'string', describe: 'folder the image paths are relative to (default: the pairs file\'s folder)' })
      .option('ext', { type: 'string', default: 'jpg', describe: 'image extension in LFW format (<root>/<name>/<name>_0001.<ext>)' })
      .option('format', { type: 'string', choices: ['lfw', 'simple'], describe: 'pairs format (default: detected from the first line)' })
      .option('size', { type: 'number', default: 112, describe: 'side of the stored square images; others are resized' })
      .option('quality', { type: 'number', default: 95, describe: 'JPEG quality for re-encoded images' })
      .example('$0 pack-bin --pairs lfw/pairs.txt --root lfw/aligned --out lfw.bin', 'LFW layout')
      .example('$0 pack-bin --pairs my_pairs.txt --out my.bin', 'lines "alice/1.jpg bob/3.jpg 0"')
      .example('$0 pack-bin --from-folder aligned/holdout --genuine 300 --out holdout.bin', 'pairs drawn from a folder per person') as never,
  handler: async (argv) => {
    if (!Number.isInteger(argv.size) || argv.size < 8) throw new ArcfaceError(`--size must be an integer >= 8, got ${argv.size}`);
    if (!argv.out.endsWith('.bin')) process.stderr.write(`arcface: warning: ${argv.out} does not end in .bin\n`);
    const { pairs, format, set, reencoded } = await withOutputLock(argv.out, commandLine('arcface'), async () => {
      let pairs: Pair[];
      let format: PairsFormat | 'folder';
      if (argv['from-folder']) {
        const genuine = argv.genuine === 'all' ? 'all' : Number(argv.genuine);
        if (genuine !== 'all' && !(Number.isInteger(genuine) && genuine > 0)) throw new ArcfaceError(`--genuine must be "all" or a positive integer, got ${argv.genuine}`);
        pairs = pairsFromFolder(argv['from-folder'], { genuine, seed: argv.seed });
        format = 'folder';
      } else {
        ({ pairs, format } = parsePairs(argv.pairs!, { root: argv.root, ext: argv.ext, format: argv.format }));
      }
      const built = await buildVerificationSet(pairs, argv.pairs ?? argv['from-folder']!, { size: argv.size, quality: argv.quality });
      writeBin(argv.out, built.set);
      return { pairs, format, ...built };
    });
    const same = set.issame.filter(Boolean).length;
    process.stderr.write(`arcface: wrote ${argv.out}: ${pairs.length} pairs (${same} same, ${pairs.length - same} different), ${reencoded} images re-encoded\n`);
    process.stdout.write(`${JSON.stringify({ out: argv.out, format, pairs: pairs.length, same, different: pairs.length - same, images: set.images.length, reencoded })}\n`);
  },
};

export default command;
