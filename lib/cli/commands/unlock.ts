// unlock PATH --key-source SOURCE: add a volume's key to the kernel, and
// optionally bind-mount the volume at a target (break-glass access, or
// what kubelet's NodePublishVolume does through the agent).
import type { Command } from 'commander';
import { adminUnlock, openSlotProtector, resolveVolume, unlock } from '../../volume/index.js';
import { UsageError } from '../exit-codes.js';
import { absolutePath, action, withCommonOptions, withHelp, type CommonOptions, type RunState } from '../command-kit.js';
import { KEY_SOURCE_HELP, keySourceArg } from '../key-source-arg.js';

interface UnlockOptions extends CommonOptions {
  keySource?: string;
  target?: string;
  readonly?: boolean;
}

export function registerUnlock(program: Command, state: RunState): void {
  const command = program
    .command('unlock')
    .summary("put a volume's key in the kernel (optionally bind-mount it at a target)")
    .description(
      "Add the key of the volume PATH names (a slot root: its current volume; or a vol-<generation> directory) to the filesystem keyring. " +
        'Without --target this is an admin unlock: it stays unlocked until `fscrypt-local lock`, and the agent leaves it alone. ' +
        'With --target the volume is also bind-mounted there (counted like a published target).',
    )
    .argument('<PATH>', 'a slot root or its vol-<generation> directory')
    .option('--key-source <SOURCE>', KEY_SOURCE_HELP)
    .option('--target <DIR>', 'also bind-mount the volume at DIR (created if missing; its parent must exist)')
    .option('--readonly', 'with --target: mount read-only');
  withCommonOptions(command);
  withHelp(command, {
    details: 'JSON result: { ok, path, identifier, targets } (targets: how many targets the volume is published at).',
    examples: [
      'fscrypt-local unlock /mnt/disks/ssd0 --key-source file:/etc/fscrypt-local/kek',
      'fscrypt-local unlock /mnt/disks/ssd0/vol-3 --key-source file:/etc/fscrypt-local/kek --target /mnt/inspect --readonly',
    ],
  });
  command.action(
    action(state, 'unlock', async ({ output, progress }, options: UnlockOptions, path: string) => {
      if (options.readonly === true && options.target === undefined) throw new UsageError('--readonly applies to a --target mount; an admin unlock has no mount to make read-only');
      const source = keySourceArg(options.keySource);
      const volume = await resolveVolume(absolutePath(path));
      const protector = await openSlotProtector(volume.slot, source);
      try {
        const target = options.target === undefined ? undefined : { path: absolutePath(options.target), readonly: options.readonly === true };
        const hookOptions = { onProgress: progress.hook };
        const result = target === undefined ? await adminUnlock(volume, protector, hookOptions) : await unlock(volume, protector, target, hookOptions);
        output.result(
          { path: volume.path, identifier: volume.identifier, targets: result.targets },
          target === undefined
            ? `unlocked ${volume.path} (admin unlock: it stays unlocked until \`fscrypt-local lock ${volume.path}\`)`
            : `unlocked ${volume.path} and mounted it at ${target.path}${target.readonly ? ' (read-only)' : ''}; published at ${result.targets} target(s)`,
        );
      } finally {
        protector.close();
      }
    }),
  );
}
