// init-slot SLOT --key-source SOURCE: make a mounted directory a slot.
import type { Command } from 'commander';
import { initSlot } from '../../volume/index.js';
import { absolutePath, action, withCommonOptions, withHelp, type CommonOptions, type RunState } from '../command-kit.js';
import { KEY_SOURCE_HELP, keySourceArg } from '../key-source-arg.js';

interface InitSlotOptions extends CommonOptions {
  keySource?: string;
  name?: string;
}

export function registerInitSlot(program: Command, state: RunState): void {
  const command = program
    .command('init-slot')
    .summary('make a directory on an encrypt-capable filesystem a slot')
    .description(
      "Make SLOT (normally a mount point under a storage class's hostDir) a slot: create its protector, " +
        'wrapped under the key source, and its lifecycle state. Idempotent: a slot already initialized with the same key source is left as it is.',
    )
    .argument('<SLOT>', 'the slot root directory')
    .option('--key-source <SOURCE>', KEY_SOURCE_HELP)
    .option('--name <NAME>', 'protector name shown by `fscrypt status`', 'fscrypt-local');
  withCommonOptions(command);
  withHelp(command, {
    examples: [
      'fscrypt-local init-slot /mnt/disks/ssd0 --key-source file:/etc/fscrypt-local/kek',
      'fscrypt-local init-slot /mnt/disks/ssd1 --key-source passphrase:/root/ssd1.pass --json',
      'fscrypt-local init-slot /mnt/disks/ssd2 --key-source kms:unix:///run/kms/plugin.sock',
    ],
  });
  command.action(
    action(state, 'init-slot', async ({ output }, options: InitSlotOptions, slot: string) => {
      const source = keySourceArg(options.keySource);
      const info = await initSlot(absolutePath(slot), source, options.name === undefined ? {} : { name: options.name });
      output.result(
        { slot: info.root, protector: info.protector, created: info.created },
        info.created
          ? `initialized slot ${info.root} (protector ${info.protector})\nnext: fscrypt-local prepare ${info.root} --key-source ${options.keySource}`
          : `slot ${info.root} was already initialized with this key source (protector ${info.protector}); nothing changed`,
      );
    }),
  );
}
