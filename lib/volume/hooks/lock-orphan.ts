// Locking a target whose slot is gone: the slot's filesystem was unmounted
// (or its disk pulled out of the mount table) while the volume was
// published. The bind mount at the target still holds the filesystem, and
// with it the key in its keyring, so the target is the way in. No slot
// state can be read or written: the claim (the volume the caller published)
// and the kernel's mount table are all there is.
//
// Unmounting the target drops the filesystem's last mount when nothing else
// mounts it, and the kernel wipes a filesystem's keys when it goes (the
// keyring belongs to the superblock). If the filesystem is still mounted
// somewhere else, the key is removed through that mount.
import { rmdir } from 'node:fs/promises';
import { FscryptError, readMountInfo } from '../../kernel/index.js';
import type { HookOptions, Volume } from './hook-options.js';
import { removalOptions, removeVolumeKey } from './key-residency.js';
import { mountAt, unmount } from '../mounts/mounts.js';
import type { LockResult } from './lock.js';

export async function lockOrphanedTarget(volume: Volume, target: string, why: FscryptError, options: HookOptions): Promise<LockResult> {
  const mount = await mountAt(target);
  const slotProblem = `slot '${volume.slot}' cannot be reached (${why.message.split('. ')[0]})`;
  if (mount === undefined) {
    return { locked: true, targets: [], warning: `${slotProblem}, and nothing is mounted at '${target}': there was nothing to unpublish` };
  }
  // A volume directory sits at the root of its slot's filesystem.
  if (mount.root !== `/${volume.name}`) {
    throw new FscryptError(`'${target}' has a mount (${mount.source} ${mount.root}) that is not ${volume.name} of slot '${volume.slot}'; leaving it alone`, {
      code: 'ERR_FOREIGN_MOUNT',
      path: target,
    });
  }
  await unmount(target);
  await rmdir(target).catch((error: NodeJS.ErrnoException) => {
    if (error.code !== 'ENOENT' && error.code !== 'ENOTEMPTY') throw error;
  });
  const elsewhere = (await readMountInfo()).find((m) => m.device === mount.device);
  let keyNote: string;
  if (elsewhere === undefined) {
    keyNote = 'its filesystem is no longer mounted anywhere, so the kernel dropped the key with it';
  } else {
    await removeVolumeKey(elsewhere.mountPoint, volume.identifier, removalOptions(elsewhere.mountPoint, 'lock', options));
    keyNote = `the key was removed through ${elsewhere.mountPoint}, where the filesystem is still mounted`;
  }
  return {
    locked: true,
    targets: [],
    warning: `${slotProblem}: unmounted '${target}'; ${keyNote}. To fix: mount the slot's disk at ${volume.slot} again, then run \`fscrypt-local reconcile ${volume.slot}\``,
  };
}
