// erase PATH --key-source SOURCE: crypto-erase a volume and prepare the next
// generation (the lifecycle's "PV Released, reclaim Delete"), then wait for
// the old ciphertext to be deleted.
import type { Command } from 'commander';
import type { OpenProtector } from '../../keys/index.js';
import { erase, openSlotProtector, recycle, resolveVolume, type Volume } from '../../volume/index.js';
import { absolutePath, action, secondsOption, withCommonOptions, withHelp, type CommonOptions, type RunState } from '../command-kit.js';
import { UsageError } from '../exit-codes.js';
import { KEY_SOURCE_HELP, keySourceArg } from '../key-source-arg.js';
import { commandTrash, finishTrash } from '../trash-wait.js';

interface EraseOptions extends CommonOptions {
  keySource?: string;
  prepare: boolean;
  wait: boolean;
  busyTimeout?: string;
}

export function registerErase(program: Command, state: RunState): void {
  const command = program
    .command('erase')
    .summary('crypto-erase a volume, then prepare a fresh generation')
    .description(
      "Crypto-erase the volume PATH names: its key leaves the kernel for all users and its only wrapped copy is destroyed, so the data " +
        'left on disk is ciphertext under a key that no longer exists. Then (unless --no-prepare) a fresh generation is prepared under a new key, ' +
        'and the old ciphertext is deleted in the background; erase waits for that with progress (unless --no-wait). ' +
        'The key source is checked before anything is erased. Refused while the volume is published at a target (exit 4).',
    )
    .argument('<PATH>', 'a slot root or its vol-<generation> directory')
    .option('--key-source <SOURCE>', `${KEY_SOURCE_HELP}; required unless --no-prepare`)
    .option('--no-prepare', 'do not prepare a new generation (the slot is left without a volume)')
    .option('--no-wait', 'do not wait for the old ciphertext to be deleted (the agent, or `reconcile`, finishes it)')
    .option('--busy-timeout <SECONDS>', 'how long to wait for busy files when removing the key', '30');
  withCommonOptions(command);
  withHelp(command, {
    details:
      'JSON result: { ok, erased: { name, path, identifier }, prepared: { name, path, generation, identifier } | null, ' +
      'trash: { deleted, files, dirs, left } }.',
    examples: [
      'fscrypt-local erase /mnt/disks/ssd0 --key-source file:/etc/fscrypt-local/kek',
      'fscrypt-local erase /mnt/disks/ssd0/vol-3 --key-source file:/etc/fscrypt-local/kek --no-wait --json',
      'fscrypt-local erase /mnt/disks/ssd0 --no-prepare',
    ],
  });
  command.action(
    action(state, 'erase', async ({ output, progress }, options: EraseOptions, path: string) => {
      if (options.prepare && options.keySource === undefined) {
        throw new UsageError('--key-source SOURCE is required to prepare the next generation (or pass --no-prepare)');
      }
      const source = options.keySource === undefined ? undefined : keySourceArg(options.keySource);
      const busyTimeoutMs = secondsOption(options.busyTimeout, '--busy-timeout');
      const volume = await resolveVolume(absolutePath(path));
      // Opened first: a wrong key source fails before anything is destroyed.
      const protector: OpenProtector | undefined = source === undefined ? undefined : await openSlotProtector(volume.slot, source);
      const trash = commandTrash(progress);
      try {
        const hookOptions = { onProgress: progress.hook, trash, ...(busyTimeoutMs === undefined ? {} : { busyTimeoutMs }) };
        // recycle = erase, prepare the next generation, then start deleting the old one.
        let prepared: Volume | null = null;
        if (options.prepare && protector) prepared = (await recycle(volume, protector, hookOptions)).next;
        else await erase(volume, hookOptions);
        const deletion = await finishTrash(trash, progress, options.wait);
        output.result(
          {
            erased: { name: volume.name, path: volume.path, identifier: volume.identifier },
            prepared: prepared && { name: prepared.name, path: prepared.path, generation: prepared.generation, identifier: prepared.identifier },
            trash: deletion,
          },
          [
            `erased ${volume.path}: key ${volume.identifier} is gone from the kernel and from the slot's metadata`,
            prepared ? `prepared ${prepared.path} (generation ${prepared.generation}, new key ${prepared.identifier}, locked)` : 'no new generation prepared (--no-prepare)',
            deletion.deleted
              ? `old ciphertext deleted (${deletion.files} files, ${deletion.dirs} directories)`
              : `old ciphertext left for background deletion: ${deletion.left.join(', ')}`,
          ].join('\n'),
        );
      } finally {
        protector?.close();
        await trash.close();
      }
    }),
  );
}
