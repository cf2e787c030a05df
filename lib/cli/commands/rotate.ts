// rotate SLOT --key-source OLD --new-key-source NEW: rewrap the slot's
// protector key under a new key source. O(1): no volume key and no data is
// touched, so it is safe while volumes are published.
import type { Command } from 'commander';
import { realpath } from 'node:fs/promises';
import { openSlotProtector, rotateKeySource } from '../../volume/index.js';
import { absolutePath, action, withCommonOptions, withHelp, type CommonOptions, type RunState } from '../command-kit.js';
import { KEY_SOURCE_HELP, keySourceArg } from '../key-source-arg.js';

interface RotateOptions extends CommonOptions {
  keySource?: string;
  newKeySource?: string;
}

export function registerRotate(program: Command, state: RunState): void {
  const command = program
    .command('rotate')
    .summary("move a slot's protector to a new key source")
    .description(
      "Rewrap SLOT's protector key under a new key source (a new KEK file, passphrase or KMS key). Volume keys and data are untouched, " +
        'so this takes constant time and is safe while volumes are in use. Afterwards only the new source opens the slot: ' +
        'update the agent configuration (the Secret or the KMS plugin) at the same time.',
    )
    .argument('<SLOT>', 'the slot root directory')
    .option('--key-source <OLD>', `the current key source: ${KEY_SOURCE_HELP}`)
    .option('--new-key-source <NEW>', 'the key source to move to (same forms)');
  withCommonOptions(command);
  withHelp(command, {
    details: 'JSON result: { ok, slot, protector: { descriptor, source, name, kmsKeyId? } }.',
    examples: [
      'fscrypt-local rotate /mnt/disks/ssd0 --key-source file:/etc/fscrypt-local/kek --new-key-source file:/etc/fscrypt-local/kek.new',
      'fscrypt-local rotate /mnt/disks/ssd0 --key-source passphrase:/root/old.pass --new-key-source kms:/run/kms/plugin.sock --json',
    ],
  });
  command.action(
    action(state, 'rotate', async ({ output }, options: RotateOptions, slot: string) => {
      const oldSource = keySourceArg(options.keySource, '--key-source');
      const newSource = keySourceArg(options.newKeySource, '--new-key-source');
      const root = absolutePath(slot);
      const realRoot = await realpath(root);
      const info = await rotateKeySource(realRoot, oldSource, newSource);
      // Prove the slot opens with the new source the way every hook opens it.
      (await openSlotProtector(realRoot, newSource)).close();
      output.result(
        { slot: realRoot, protector: { descriptor: info.descriptor, source: info.source, name: info.name, ...(info.kmsKeyId === undefined ? {} : { kmsKeyId: info.kmsKeyId }) } },
        `rotated slot ${realRoot}: protector ${info.descriptor} is now wrapped under the new key source (${info.source}); the old one no longer opens it`,
      );
    }),
  );
}
