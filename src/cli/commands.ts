// Every `arcface` sub-command, in the order `--help` lists them. Each module exports a yargs CommandModule.
import type { CommandModule } from 'yargs';

export const commands: CommandModule<any, any>[] = [
];
