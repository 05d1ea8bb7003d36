// `arcface demo` (what `npm start` runs): the whole pipeline on synthetic data in a few minutes.
import type { CommandModule } from 'yargs';
import { initBackend } from '../../backend/select.ts';
import { formatDemoSummary, runDemo } from '../../demo/run-demo.ts';

interface Args {
  output: string;
  config: string;
  identities?: number;
  epochs?: number;
  quiet: boolean;
  json: boolean;
  backend?: string;
}

const command: CommandModule<object, Args> = {
  command: 'demo',
  describe: 'Synthetic identities -> RecordIO -> train the tiny IResNet -> verify on unseen identities -> export',
  builder: (y) =>
    y
      .option('output', { type: 'string', default: 'work_dirs/demo', describe: 'where data, run and models go' })
      .option('config', { type: 'string', default: 'tiny', describe: 'training config' })
      .option('identities', { type: 'number', describe: 'training identities (default 200)' })
      .option('epochs', { type: 'number', describe: 'override num_epoch' })
      .option('quiet', { type: 'boolean', default: false })
      .option('json', { type: 'boolean', default: false, describe: 'print the result as JSON instead of a table' }) as never,
  handler: async (argv) => {
    await initBackend(argv.backend, { workload: 'train' });
    const r = await runDemo({
      output: argv.output,
      config: argv.config,
      identities: argv.identities,
      overrides: argv.epochs ? { num_epoch: argv.epochs } : {},
      quiet: argv.quiet,
    });
    process.stdout.write(argv.json ? `${JSON.stringify({ ...r, untrained: { ...r.untrained, result: undefined }, trained: { ...r.trained, result: undefined } })}\n` : formatDemoSummary(r));
  },
};

export default command;
