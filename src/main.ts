#!/usr/bin/env -S node --max-semi-space-size=64 --no-allocation-site-pretenuring
import { Command } from 'commander';
import { inferSchemaCommand } from './cli/infer-schema.js';
import { reportFatal, type GlobalOptions } from './cli/common.js';
import { resyncCommand } from './cli/resync.js';
import { runCommand } from './cli/run.js';
import { statusCommand } from './cli/status.js';
import { validateCommand } from './cli/validate.js';

const program = new Command('mongo-bigquery-archiver')
  .description(
    'Continuously archives MongoDB collections into BigQuery: a history table per collection and views of the current state.',
  )
  .option(
    '--config <path>',
    'bootstrap configuration file (default /config-local/config.json); every key can also come from the environment',
  )
  .showHelpAfterError();

function action<A extends unknown[]>(fn: (...args: A) => Promise<number>) {
  return async (...args: A) => {
    try {
      process.exitCode = await fn(...args);
    } catch (error) {
      process.exitCode = reportFatal(error);
    }
  };
}

const globals = (): GlobalOptions => program.opts<GlobalOptions>();

/**
 * The demo brings the test peers' launcher (scripts/peers), which installs and starts local servers: it runs
 * from a clone (`npm run demo`), and neither the build nor the image carries it. The specifier is a variable
 * so that the compiler does not follow it into the build (tsconfig.build.json leaves the demo out).
 */
const DEMO_MODULE = './cli/demo.js';

interface DemoModule {
  demoCommand(options: { readonly keep?: boolean }): Promise<number>;
}

async function loadDemo(): Promise<DemoModule> {
  try {
    return (await import(DEMO_MODULE)) as DemoModule;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ERR_MODULE_NOT_FOUND') throw error;
    throw new Error(
      'demo runs from a clone of the repository (npm run demo): this installation does not carry it',
      {
        cause: error,
      },
    );
  }
}

program
  .command('run')
  .description('run the archiver daemon: every mapping in the settings collection, until SIGTERM or SIGINT')
  .action(action(() => runCommand(globals())));

program
  .command('validate')
  .description('check the configuration, every settings document, and that MongoDB and BigQuery answer')
  .action(action(() => validateCommand(globals())));

program
  .command('infer-schema')
  .description('print the column specs inferred from a bounded sample of a collection (settings format)')
  .argument('<db.collection>', 'the collection to sample')
  .option('--samples <n>', 'documents to sample at most', '1000')
  .action(
    action((target: string, options: { samples?: string }) =>
      inferSchemaCommand(target, { ...globals(), ...options }),
    ),
  );

program
  .command('resync')
  .description(
    "copy a mapping's collection again: the running archiver restarts that mapping with a fresh backfill",
  )
  .argument('<mapping>', 'the mapping: its settings document _id (as `status` shows it)')
  .action(action((mapping: string) => resyncCommand(mapping, globals())));

program
  .command('status')
  .description('one line per mapping: state, lag, last checkpoint, instance holding its lease, last failure')
  .action(action(() => statusCommand(globals())));

program
  .command('demo')
  .description(
    'start local stand-ins for MongoDB and BigQuery, archive a sample collection shaped like the original README example while changing it, print the views, stop everything',
  )
  .option('--keep', 'leave the stand-ins running afterwards, and print how to connect to them and stop them')
  .action(action(async (options: { keep?: boolean }) => (await loadDemo()).demoCommand(options)));

await program.parseAsync(process.argv);
