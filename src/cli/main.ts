// The `arcface` command: one yargs program over every sub-command.
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { commands, requestedCommand } from './commands.ts';
import { ArcfaceError } from '../errors.ts';

export async function main(argv: string[]): Promise<void> {
  let cli = yargs(argv)
    .scriptName('arcface')
    .usage('$0 <command> [options]')
    .option('backend', {
      type: 'string',
      describe: 'TensorFlow.js backend: auto | tensorflow | wasm | cpu (env ARCFACE_BACKEND)',
      global: true,
    })
    .strict()
    .demandCommand(1, 'name a command (see --help)')
    .recommendCommands()
    .help()
    .alias('h', 'help')
    .wrap(Math.min(110, process.stdout.columns ?? 100))
    .fail((msg, err, y) => {
      if (err) throw err;
      process.stderr.write(`${y.help()}\n\n${msg}\n`);
      process.exit(1);
    });
  // Only the command that runs is loaded; the others are listed by name and description.
  const wanted = requestedCommand(argv);
  for (const c of commands) {
    cli = cli.command(c === wanted ? await c.load() : { command: c.command, describe: c.describe, handler: () => {} });
  }
  await cli.parseAsync();
}

try {
  await main(hideBin(process.argv));
} catch (err) {
  const e = err as Error;
  if (e instanceof ArcfaceError || process.env.ARCFACE_DEBUG !== '1') {
    process.stderr.write(`arcface: error: ${e.message}\n`);
  } else {
    process.stderr.write(`${e.stack ?? e}\n`);
  }
  process.exitCode = 1;
}
