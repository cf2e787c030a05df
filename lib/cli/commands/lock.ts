// lock PATH: remove a volume's key from the kernel for all users (after
// unmounting a target, with --target), waiting for busy files.
import type { Command } from 'commander';
import { adminLock, lock, resolveVolume } from '../../volume/index.js';
import { UsageError } from '../exit-codes.js';
import { absolutePath, action, secondsOption, withCommonOptions, withHelp, type CommonOptions, type RunState } from '../command-kit.js';

interface LockOptions extends CommonOptions {
  target?: string;
  force?: boolean;
  busyTimeout?: string;
}

export function registerLock(program: Command, state: RunState): void {
  const command = program
    .command('lock')
    .summary("remove a volume's key from the kernel (for all users)")
    .description(
      "Remove the key of the volume PATH names from the kernel for all users, and wait until the kernel reports it absent. " +
        'Files still open inside keep it incompletely removed: lock retries with backoff, names the processes and mounts holding them, ' +
        'and gives up after --busy-timeout (exit 4). Refused while the volume is published at a target, unless --force unmounts them.',
    )
    .argument('<PATH>', 'a slot root or its vol-<generation> directory')
    .option('--target <DIR>', 'unmount the volume from this target first; lock only if it was the last one')
    .option('--force', 'unmount every target the volume is published at, then lock')
    .option('--busy-timeout <SECONDS>', 'how long to wait for busy files', '30');
  withCommonOptions(command);
  withHelp(command, {
    details:
      "JSON result: { ok, path, locked, targets, reason?, warning? } (locked: the key is absent; reason, when it is not: 'targets-remain' or 'admin-unlocked'; warning: done, but the slot needs an admin, e.g. its state could not be recorded on a read-only filesystem).",
    examples: [
      'fscrypt-local lock /mnt/disks/ssd0',
      'fscrypt-local lock /mnt/disks/ssd0/vol-3 --target /mnt/inspect',
      'fscrypt-local lock /mnt/disks/ssd0 --force --busy-timeout 120 --progress',
    ],
  });
  command.action(
    action(state, 'lock', async ({ output, progress }, options: LockOptions, path: string) => {
      const busyTimeoutMs = secondsOption(options.busyTimeout, '--busy-timeout');
      const volume = await resolveVolume(absolutePath(path));
      if (options.force === true && options.target !== undefined) throw new UsageError('--force unmounts every target; with --target only that one is unmounted: give one of them');
      const hookOptions = { onProgress: progress.hook, ...(busyTimeoutMs === undefined ? {} : { busyTimeoutMs }) };
      const result =
        options.target === undefined ? await adminLock(volume, { ...hookOptions, force: options.force === true }) : await lock(volume, absolutePath(options.target), hookOptions);
      if (result.warning !== undefined) output.warn(result.warning);
      const human = result.locked
        ? `locked ${volume.path}: its key is absent from the kernel`
        : result.reason === 'admin-unlocked'
          ? `unmounted; ${volume.path} stays unlocked because an admin unlocked it (run \`fscrypt-local lock ${volume.path}\` to lock it)`
          : `unmounted; ${volume.path} stays unlocked: still published at ${result.targets.join(', ')}`;
      output.result({ path: volume.path, ...result }, human);
    }),
  );
}
