import { Command, type CommanderError } from 'commander';
import { inferSchemaCommand } from './infer-schema.js';
import { EXIT, reportFatal, type GlobalOptions } from './common.js';
import { configurationHelp, environmentHelp, exampleHelp, exitCodesHelp } from './help.js';
import { PACKAGE_NAME, packageInfo } from './package-info.js';
import { planCommand } from './plan.js';
import { resyncCommand } from './resync.js';
import { runCommand } from './run.js';
import { statusCommand } from './status.js';
import { validateCommand } from './validate.js';
import { verifyCommand, type VerifyOptions } from './verify.js';

/**
 * The demo brings the test peers' launcher (scripts/peers), which installs and starts local servers: it runs
 * from a clone (`npm run demo`), and neither the build, the package nor the image carries it. The specifier
 * is a variable so that the compiler does not follow it into the build (tsconfig.build.json leaves the demo
 * out).
 */
const DEMO_MODULE = './demo.js';

/** What an installed package answers to `demo`: how to get one that can run it. */
export const DEMO_FROM_CLONE_MESSAGE =
  'demo runs from a clone of the repository only: it installs and starts local stand-ins for MongoDB and BigQuery ' +
  'with scripts this package does not carry. In a clone (Node.js 20.19+, Java 17+ with Maven, Python 3.11+): ' +
  'npm ci && npm run demo';

interface DemoModule {
  demoCommand(options: { readonly keep?: boolean }): Promise<number>;
}

/**
 * Whether a failed import is the demo (or the peers' launcher it imports) missing from this installation.
 * Only the module that was not found counts (Node names it first, then the importer): a dependency missing
 * from under the demo is another failure and is reported as it is.
 */
function isDemoMissing(error: unknown): boolean {
  if ((error as NodeJS.ErrnoException).code !== 'ERR_MODULE_NOT_FOUND') return false;
  const missing = /Cannot find (?:module|package) '([^']+)'/.exec(
    error instanceof Error ? error.message : '',
  )?.[1];
  return missing !== undefined && /cli[\\/]demo\.js$|scripts[\\/]peers[\\/]/.test(missing);
}

/** Loads the demo; `importer` is the dynamic import, replaceable so that a test can play an installed package. */
export async function loadDemo(
  importer: (specifier: string) => Promise<unknown> = (specifier) => import(specifier),
): Promise<DemoModule> {
  try {
    return (await importer(DEMO_MODULE)) as DemoModule;
  } catch (error) {
    if (!isDemoMissing(error)) throw error;
    throw new Error(DEMO_FROM_CLONE_MESSAGE, { cause: error });
  }
}

/**
 * The exit code for commander's own ending: help and --version end with 0; a command line it cannot parse
 * (unknown option or command, missing argument) is a usage error, told apart from a failure as a
 * configuration error is.
 */
export function exitCodeOf(error: CommanderError): number {
  return error.exitCode === 0 ? EXIT.ok : EXIT.config;
}

function action<A extends unknown[]>(fn: (...args: A) => Promise<number>) {
  return async (...args: A) => {
    try {
      process.exitCode = await fn(...args);
    } catch (error) {
      process.exitCode = reportFatal(error);
    }
  };
}

/**
 * The command line: every command, its help (with the configuration keys, the environment, the exit codes
 * and an example, generated from the schema and the exit-code table), and `--version` from package.json.
 * A command line commander cannot parse exits with 2, as a configuration error does.
 */
export function buildProgram(): Command {
  const info = packageInfo();
  const program = new Command(PACKAGE_NAME)
    .description(
      'Continuously archives MongoDB collections into BigQuery: a history table per collection and views of the current state.',
    )
    .version(info.version, '-V, --version', 'print the version')
    .helpOption('-h, --help', 'print this help')
    .option(
      '--config <path>',
      'bootstrap configuration file (default /config-local/config.json); every key can also come from the environment',
    )
    .configureHelp({ showGlobalOptions: true })
    // The whole help (every key, the exit codes) would bury the one line that says what was wrong.
    .showHelpAfterError(`(${PACKAGE_NAME} --help lists the commands, configuration keys and exit codes)`)
    .exitOverride((error: CommanderError) => {
      process.exit(exitCodeOf(error));
    });

  const globals = (): GlobalOptions => program.opts<GlobalOptions>();
  const reference = [
    configurationHelp(undefined, info.homepage),
    environmentHelp(),
    exitCodesHelp(),
    exampleHelp(),
  ].join('\n\n');
  program.addHelpText('after', `\n${reference}`);

  program
    .command('run')
    .description('run the archiver daemon: every mapping in the settings collection, until SIGTERM or SIGINT')
    .addHelpText('after', `\n${reference}`)
    .action(action(() => runCommand(globals())));

  program
    .command('validate')
    .description(
      'check the configuration, the key file, MongoDB (settings, a change stream per mapping) and BigQuery (each dataset writable), side by side; exit 1 when any fails',
    )
    .option('--timeout <seconds>', 'how long each check may take', '10')
    .addHelpText('after', `\n${configurationHelp(undefined, info.homepage)}\n\n${exitCodesHelp()}`)
    .action(action((options: { timeout?: string }) => validateCommand({ ...globals(), ...options })));

  program
    .command('plan')
    .description(
      "print what run would do for each mapping, writing nothing: the DDL (dataset, history table, dead-letter table, views), the columns it would add to an existing table, columns whose type conflicts with the table, fields of a bounded sample that would land in _unmapped, rows over BigQuery's limits, the backfill's size and ingestion cost, and what the views scan",
    )
    .argument('[mapping]', 'only this mapping: its settings document _id (as `status` shows it)')
    .option(
      '--json',
      'print one JSON document ({settings, generatedAt, mappings: [...], invalid}) instead of the text',
    )
    .addHelpText('after', `\n${exitCodesHelp()}`)
    .action(
      action((mapping: string | undefined, options: { json?: boolean }) =>
        planCommand(mapping, { ...globals(), ...options }),
      ),
    );

  program
    .command('infer-schema')
    .description('print the column specs inferred from a bounded sample of a collection (settings format)')
    .argument('<db.collection>', 'the collection to sample')
    .option('--samples <n>', 'documents to sample at most', '1000')
    .addHelpText('after', `\n${exitCodesHelp()}`)
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
    .addHelpText('after', `\n${exitCodesHelp()}`)
    .action(action((mapping: string) => resyncCommand(mapping, globals())));

  program
    .command('status')
    .description(
      'one row per mapping: state, lag, backfill copied/estimated/percent/rate/ETA, lease holder, last status update, last failure',
    )
    .option(
      '--json',
      'print one JSON document ({settings, generatedAt, mappings: [...], oplogWindow}) instead of the table',
    )
    .option(
      '--watch [seconds]',
      'redraw every so many seconds (default 2) until Ctrl-C; the backfill rate then comes from the change between redraws',
    )
    .addHelpText('after', `\n${exitCodesHelp()}`)
    .action(
      action((options: { json?: boolean; watch?: boolean | string }) =>
        statusCommand({ ...globals(), ...options }),
      ),
    );

  program
    .command('verify')
    .description(
      "compare a mapping's collection with <table>_view: counts and digests of every mapped row per _id range, differing ranges checked again once the archiver has caught up; lists documents missing, extra and differing; exit 3 when any",
    )
    .argument('<mapping>', 'the mapping: its settings document _id (as `status` shows it)')
    .option('--ranges <n>', '_id ranges to compare (split points from a bounded sample)', '16')
    .option('--json', 'print the report as one JSON document')
    .option(
      '--settle-timeout <seconds>',
      "how long to wait for the mapping's checkpoint to pass the time of a read before comparing anyway; after the first timeout later reads do not wait",
      '120',
    )
    .option(
      '--repair',
      'ask the archiver that owns the mapping to copy the differing ranges again (current documents, and delete rows for ids MongoDB no longer has), wait for it, and verify again; exit 3 when differences remain or the repair is still queued',
    )
    .option('--repair-timeout <seconds>', 'how long to wait for the archiver to serve the repair', '600')
    .addHelpText('after', `\n${exitCodesHelp()}`)
    .action(
      action((mapping: string, options: VerifyOptions) =>
        verifyCommand(mapping, { ...globals(), ...options }),
      ),
    );

  program
    .command('demo')
    .description(
      'from a clone only: start local stand-ins for MongoDB and BigQuery, archive a sample collection shaped like the original README example while changing it, print the views, stop everything',
    )
    .option(
      '--keep',
      'leave the stand-ins running afterwards, and print how to connect to them and stop them',
    )
    .action(action(async (options: { keep?: boolean }) => (await loadDemo()).demoCommand(options)));

  return program;
}
