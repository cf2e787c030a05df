// The fscrypt-local command line: commands, top-level help, and how
// commander's own errors (unknown option, missing argument) become usage
// errors with exit code 2, in JSON too when --json was given.
import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { withHelp, type RunState } from './command-kit.js';
import { registerErase } from './commands/erase.js';
import { registerInitSlot } from './commands/init-slot.js';
import { registerLock } from './commands/lock.js';
import { registerPrepare } from './commands/prepare.js';
import { registerReconcile } from './commands/reconcile.js';
import { registerRotate } from './commands/rotate.js';
import { registerRun } from './commands/run.js';
import { registerSmoke } from './commands/smoke.js';
import { registerStatus } from './commands/status.js';
import { registerUnlock } from './commands/unlock.js';
import { EXIT, UsageError, type ExitCode } from './exit-codes.js';
import { Output } from './output.js';

function packageVersion(): string {
  // lib/cli/program.ts and dist/cli/program.js are both two levels below the package root.
  const text = readFileSync(new URL('../../package.json', import.meta.url), 'utf8');
  return (JSON.parse(text) as { version: string }).version;
}

export function buildProgram(state: RunState): Command {
  const program = new Command('fscrypt-local')
    .description(
      'fscrypt (Linux per-directory encryption) for Kubernetes node-local volumes: node smoke test, inspection and break-glass recovery. ' +
        'Every command takes --json (one JSON document on stdout) and reports progress on stderr when it is a terminal (or with --progress).',
    )
    .version(packageVersion(), '-V, --version')
    .exitOverride()
    .showHelpAfterError('(run with --help for usage and examples)')
    .configureOutput({ outputError: (text, write) => write(text) });
  withHelp(program, {
    details:
      'Key sources (--key-source): file:PATH (a 32-byte KEK, e.g. a mounted Secret), passphrase:PATH (a passphrase file, stretched with Argon2id), ' +
      'kms:SOCKET (a Kubernetes KMS v2 plugin, /path.sock or unix:///path.sock). Secrets are only ever read from files, and never printed.\n' +
      'A slot is a mount point under a storage class hostDir; its volume is <slot>/vol-<generation>. Details: docs/cli.md.',
    examples: [
      'sudo fscrypt-local smoke                                   # prove fscrypt works on this node',
      'fscrypt-local status /mnt/disks                            # every slot under a hostDir',
      'fscrypt-local init-slot /mnt/disks/ssd0 --key-source file:/etc/fscrypt-local/kek',
      'fscrypt-local prepare /mnt/disks/ssd0 --key-source file:/etc/fscrypt-local/kek --json',
      'fscrypt-local erase /mnt/disks/ssd0 --key-source file:/etc/fscrypt-local/kek',
    ],
  });
  registerSmoke(program, state);
  registerStatus(program, state);
  registerInitSlot(program, state);
  registerPrepare(program, state);
  registerUnlock(program, state);
  registerLock(program, state);
  registerErase(program, state);
  registerRotate(program, state);
  registerReconcile(program, state);
  registerRun(program, state);
  return program;
}

const CLEAN_EXITS = new Set(['commander.helpDisplayed', 'commander.help', 'commander.version']);

/** Runs the command line; resolves to the exit code. */
export async function runCli(argv: string[]): Promise<ExitCode> {
  const state: RunState = { exitCode: EXIT.OK };
  const program = buildProgram(state);
  if (argv.length <= 2) {
    program.outputHelp();
    return EXIT.USAGE;
  }
  try {
    await program.parseAsync(argv);
    return state.exitCode;
  } catch (error) {
    if (error instanceof CommanderError) {
      if (CLEAN_EXITS.has(error.code)) return EXIT.OK;
      // commander has already printed its message on stderr; --json callers also get it on stdout.
      if (argv.includes('--json')) new Output(true).failure(new UsageError(error.message.replace(/^error: /, '')));
      return EXIT.USAGE;
    }
    return new Output(argv.includes('--json')).failure(error);
  }
}
