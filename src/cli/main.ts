// The `arcface` command: one yargs program over every sub-command.
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { commands, requestedCommand } from './commands.ts';
import { ArcfaceError } from '../errors.ts';
import { inCliTerms } from './flags.ts';

/** A yargs usage error (unknown command or option, missing argument): printed with the help text. */
class UsageError extends Error {}

export async function main(argv: string[]): Promise<void> {
  let cli = yargs(argv)
    .scriptName('arcface')
    .usage('$0 <command> [options]')
    .option('backend', {
      type: 'string',
      describe: 'TensorFlow.js backend: auto | tensorflow | webgpu | ort | wasm | cpu | ort-cpu (env ARCFACE_BACKEND)',
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
      throw new UsageError(`${y.help()}\n\n${msg}`);
    });
  // Only the command that runs is loaded; the others are listed by name and description.
  const wanted = requestedCommand(argv);
  for (const c of commands) {
    cli = cli.command(c === wanted ? await c.load() : { command: c.command, describe: c.describe, handler: () => {} });
  }
  await cli.parseAsync();
}

function report(err: unknown): void {
  const e = err instanceof Error ? err : new Error(String(err));
  if (e instanceof UsageError) process.stderr.write(`${e.message}\n`);
  else if (e instanceof ArcfaceError || process.env.ARCFACE_DEBUG !== '1') process.stderr.write(`arcface: error: ${inCliTerms(e.message)}\n`);
  else process.stderr.write(`${e.stack ?? e}\n`);
  process.exitCode = 1;
}

// An error nobody caught (a stray rejection, a throw in a callback) is reported like any other, once, with
// exit code 1. Capturing it here also keeps the process listeners that tfjs-backend-wasm's emscripten glue
// installs (they rethrow, which Node turns into exit code 7 and a line of minified code) from running.
process.setUncaughtExceptionCaptureCallback((err) => {
  report(err);
  // The program's state is unknown after an uncaught error: stop here, as Node itself would.
  process.exit();
});

try {
  await main(hideBin(process.argv));
} catch (err) {
  report(err);
}
