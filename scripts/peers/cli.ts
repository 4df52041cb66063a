import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { type Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { Command } from 'commander';
import { installPeers, peerContext, startPeers } from './lib.js';
import { OutputRecap } from './output-recap.js';
import { PeerSetupError, reapStalePeers } from './process.js';
import { PEERS, selectedPeers } from './registry.js';

const program = new Command('peers')
  .description(
    'Installs, starts and stops the local test peers (a MongoDB-compatible server and a BigQuery emulator).\n' +
      'Select them with MBA_MONGODB_PEER and MBA_BIGQUERY_PEER; caches live in MBA_PEERS_CACHE ' +
      '(default ~/.cache/mongo-bigquery-archiver/peers).',
  )
  .showHelpAfterError();

program
  .command('install')
  .description('install the selected peers (idempotent)')
  .option('--all', 'install every known peer, not only the selected ones')
  .action(async (options: { all?: boolean }) => {
    await installPeers(options.all ? PEERS : selectedPeers(), peerContext());
  });

program
  .command('start')
  .description('start the selected peers, print their environment, and keep them up until Ctrl-C')
  .action(async () => {
    const running = await startPeers(selectedPeers(), peerContext());
    for (const [key, value] of Object.entries(running.env)) console.log(`export ${key}='${value}'`);
    await new Promise<void>((resolveStop) => {
      for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const)
        process.once(signal, () => {
          resolveStop();
        });
    });
    await running.stop();
  });

program
  .command('stop')
  .description('stop peers left running by an earlier run that was killed')
  .action(async () => {
    await reapStalePeers(peerContext().runDir, (m) => {
      console.error(`[peers] ${m}`);
    });
  });

program
  .command('run')
  .description('start the selected peers, run COMMAND with their endpoints in the environment, stop them')
  .argument('<command...>', 'the command to run, after --')
  .action(async (command: string[]) => {
    process.exitCode = await runWithPeers(command);
  });

async function runWithPeers(command: string[]): Promise<number> {
  const [file, ...args] = command;
  if (file === undefined) throw new PeerSetupError('run: no command given');
  const ctx = peerContext();
  let interrupted: NodeJS.Signals | undefined;
  const onSignal = (signal: NodeJS.Signals) => {
    interrupted = signal;
  };
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, onSignal);
  const running = await startPeers(selectedPeers(), ctx);
  try {
    if (interrupted) return 130;
    // Its output passes through (kept in colour on a terminal) and is remembered, so a failure can be
    // repeated after the peer logs.
    const colour =
      process.stdout.isTTY && process.env.FORCE_COLOR === undefined && process.env.NO_COLOR === undefined
        ? { FORCE_COLOR: '1' }
        : {};
    const child = spawn(file, args, {
      stdio: ['inherit', 'pipe', 'pipe'],
      env: { ...process.env, ...running.env, ...colour },
      shell: false,
    });
    const drained = Promise.all([closed(child.stdout), closed(child.stderr)]);
    const recap = new OutputRecap();
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      process.stdout.write(chunk);
      recap.push(chunk);
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      process.stderr.write(chunk);
      recap.push(chunk);
    });
    // A terminal's Ctrl-C reaches the child directly (same process group); a SIGTERM sent to us alone is passed on.
    const forward = (signal: NodeJS.Signals) => {
      if (signal !== 'SIGINT') child.kill(signal);
    };
    for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, forward);
    const code = await new Promise<number>((resolveExit) => {
      child.once('error', (error) => {
        console.error(`[peers] could not run ${file}: ${error.message}`);
        resolveExit(127);
      });
      child.once('exit', (c, signal) => {
        resolveExit(c ?? (signal ? 128 + signalNumber(signal) : 1));
      });
    });
    // The last output may still be in the pipes; a grandchild that kept them open must not hold us up.
    await Promise.race([drained, sleep(2_000, undefined, { ref: false })]);
    if (code !== 0) {
      const { failures, tail } = recap.recap();
      console.error(
        [
          `\n[peers] ${file} exited with ${code}; the peer logs end with:`,
          running.logTails(20),
          `[peers] ${file} exited with ${code}; what it reported failing:`,
          ...(failures.length > 0 ? failures : ['(no failure line recognised)']),
          `[peers] its last lines:`,
          ...tail,
        ].join('\n'),
      );
    }
    return code;
  } finally {
    await running.stop();
    ctx.log('peers stopped');
  }
}

function closed(stream: Readable): Promise<unknown> {
  return stream.closed ? Promise.resolve() : once(stream, 'close');
}

function signalNumber(signal: NodeJS.Signals): number {
  const numbers: Partial<Record<NodeJS.Signals, number>> = { SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15 };
  return numbers[signal] ?? 0;
}

try {
  await program.parseAsync(process.argv);
} catch (error) {
  if (error instanceof PeerSetupError) {
    console.error(`[peers] ${error.message}`);
    process.exitCode = 2;
  } else {
    throw error;
  }
}
