// Every `arcface` sub-command, in the order `--help` lists them. Each module exports a yargs CommandModule;
// it is imported only when its command runs, so `--help` and a command never load the others' dependencies
// (tfjs, onnxruntime, sharp). `command` and `describe` repeat the module's own (a test keeps them equal).
import type { CommandModule } from 'yargs';

export interface LazyCommand {
  command: string;
  describe: string;
  load: () => Promise<CommandModule<any, any>>;
}

const lazy = (command: string, describe: string, load: () => Promise<{ default: CommandModule<any, any> }>): LazyCommand => ({
  command,
  describe,
  load: async () => (await load()).default,
});

export const commands: LazyCommand[] = [
  lazy('demo', 'Synthetic identities -> RecordIO -> train the tiny IResNet -> verify on unseen identities -> export', () => import('./commands/demo.ts')),
  lazy('train', 'Train a backbone with an ArcFace/CosFace margin and Partial FC (configs/*.json)', () => import('./commands/train.ts')),
  lazy('import', 'Convert an insightface backbone.pth / model.pt or an ONNX model (any exporter) into a tfjs layers model directory', () => import('./commands/import.ts')),
  lazy('export', 'Write a backbone as a tfjs layers model, an ONNX graph or an insightface-compatible .pth, or a run for arcface_torch on N GPUs', () => import('./commands/export.ts')),
  lazy('align <inputs..>', 'Detect and align the faces of raw photos into square crops (folders per identity kept), with a report', () => import('./commands/align.ts')),
  lazy('pack <folder>', 'Pack an image folder (one sub-folder per identity) into insightface RecordIO (train.rec/.idx/property)', () => import('./commands/pack.ts')),
  lazy('pack-bin', 'Make a verification .bin (pickled image pairs + issame, like lfw.bin) from a pairs list or a labelled folder', () => import('./commands/pack-bin.ts')),
  lazy('inspect <file>', 'Show counts, classes and a sample of a training pack (train.rec or its folder) or a .bin verification set', () => import('./commands/inspect.ts')),
  lazy('eval', 'Verification accuracy of a backbone on .bin pair sets (LFW / CFP-FP / AgeDB-30 protocol) and their ROC curves', () => import('./commands/eval.ts')),
  lazy('embed <images..>', 'Detect, align and embed faces: one JSON line {file, embedding, landmarks, score} per image', () => import('./commands/embed.ts')),
  lazy('compare <a> <b>', 'Compare two faces: cosine similarity and same/different at a threshold (JSON on stdout)', () => import('./commands/compare.ts')),
  lazy('search <probe>', 'Find a face among known people: the top-k identities of a gallery with scores and the match decision (JSON)', () => import('./commands/search.ts')),
  lazy('serve', 'Serve the web page that detects, aligns, fine-tunes, calibrates and verifies faces in the browser (nothing is uploaded)', () => import('./commands/serve.ts')),
];

/** The sub-command `argv` names (the first word that is not an option or the value of `--backend`). */
export function requestedCommand(argv: readonly string[]): LazyCommand | undefined {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') return undefined;
    if (a === '--backend') i++;
    else if (!a.startsWith('-')) return commands.find((c) => c.command.split(' ')[0] === a);
  }
  return undefined;
}
