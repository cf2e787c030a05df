// run: reserved for the Kubernetes node agent (lib/agent), which the
// DaemonSet starts. Kept as a name so scripts never come to depend on it
// meaning something else.
import type { Command } from 'commander';
import { action, type RunState } from '../command-kit.js';
import { UsageError } from '../exit-codes.js';

export function registerRun(program: Command, state: RunState): void {
  const command = program
    .command('run')
    .summary('reserved for the Kubernetes node agent')
    .description('Reserved: `fscrypt-local run` starts the node agent inside the DaemonSet (deploy/). It is not a command for admins.')
    .argument('[ARGS...]')
    .allowUnknownOption(true)
    .option('--json', 'print the result as one JSON document on stdout');
  command.addHelpText('after', '\nExamples:\n  fscrypt-local run    # only the DaemonSet in deploy/ runs it; anywhere else it exits 2\n\nExit codes:\n  2    always here: the command is reserved for the agent\n');
  command.action(
    action(state, 'run', async () => {
      throw new UsageError('`run` is reserved for the Kubernetes node agent (started by the DaemonSet in deploy/); see `fscrypt-local --help` for the admin commands');
    }),
  );
}
