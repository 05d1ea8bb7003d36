// Every `arcface` sub-command, in the order `--help` lists them. Each module exports a yargs CommandModule.
import type { CommandModule } from 'yargs';
import importCommand from './commands/import.ts';

export const commands: CommandModule<any, any>[] = [
  importCommand,
];
