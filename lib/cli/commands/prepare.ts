// prepare SLOT --key-source SOURCE: a new, verified, locked volume generation.
import type { Command } from 'commander';
import { openSlotProtector, prepare } from '../../volume/index.js';
import { UsageError } from '../exit-codes.js';
import { absolutePath, action, withCommonOptions, withHelp, type CommonOptions, type RunState } from '../command-kit.js';
import { KEY_SOURCE_HELP, keySourceArg } from '../key-source-arg.js';

interface PrepareOptions extends CommonOptions {
  keySource?: string;
  mode?: string;
}

export function registerPrepare(program: Command, state: RunState): void {
  const command = program
    .command('prepare')
    .summary("give a slot a ready volume (a new generation under a fresh key)")
    .description(
      'Give SLOT a ready volume: a new vol-<generation> directory encrypted under a fresh 64-byte key, its policy verified ' +
        'after it was set, its key wrapped under the slot protector, and locked. Idempotent: a slot whose volume is ready keeps it; ' +
        'an interrupted prepare or erase is first rolled back or finished.',
    )
    .argument('<SLOT>', 'the slot root directory')
    .option('--key-source <SOURCE>', KEY_SOURCE_HELP)
    .option('--mode <OCTAL>', 'mode of the new volume directory', '0755');
  withCommonOptions(command);
  withHelp(command, {
    details: 'JSON result: { ok, slot, name, path, generation, identifier }. `path` is the PV path (never the slot root).',
    examples: [
      'fscrypt-local prepare /mnt/disks/ssd0 --key-source file:/etc/fscrypt-local/kek',
      'fscrypt-local prepare /mnt/disks/ssd0 --key-source file:/etc/fscrypt-local/kek --json | jq -r .path',
    ],
  });
  command.action(
    action(state, 'prepare', async ({ output, progress }, options: PrepareOptions, slot: string) => {
      const source = keySourceArg(options.keySource);
      const mode = parseMode(options.mode);
      const protector = await openSlotProtector(absolutePath(slot), source);
      try {
        const volume = await prepare(absolutePath(slot), protector, { mode, onProgress: progress.hook });
        output.result(
          { slot: volume.slot, name: volume.name, path: volume.path, generation: volume.generation, identifier: volume.identifier },
          `ready: ${volume.path} (generation ${volume.generation}, key identifier ${volume.identifier}, locked)`,
        );
      } finally {
        protector.close();
      }
    }),
  );
}

function parseMode(text: string | undefined): number {
  if (text === undefined) return 0o755;
  if (!/^0?[0-7]{3,4}$/.test(text)) throw new UsageError(`--mode takes an octal mode such as 0755, got ${JSON.stringify(text.slice(0, 8))}`);
  return parseInt(text, 8);
}
