// Every `arcface` sub-command, in the order `--help` lists them. Each module exports a yargs CommandModule.
import type { CommandModule } from 'yargs';
import importCommand from './commands/import.ts';
import exportCommand from './commands/export.ts';
import demoCommand from './commands/demo.ts';
import trainCommand from './commands/train.ts';
import packCommand from './commands/pack.ts';
import alignCommand from './commands/align.ts';
import packBinCommand from './commands/pack-bin.ts';
import inspectCommand from './commands/inspect.ts';
import evalCommand from './commands/eval.ts';
import embedCommand from './commands/embed.ts';
import compareCommand from './commands/compare.ts';
import searchCommand from './commands/search.ts';

export const commands: CommandModule<any, any>[] = [
  demoCommand,
  trainCommand,
  importCommand,
  exportCommand,
  alignCommand,
  packCommand,
  packBinCommand,
  inspectCommand,
  evalCommand,
  embedCommand,
  compareCommand,
  searchCommand,
];
