// lock: unpublish a target (kubelet's NodeUnpublishVolume) and, when no
// target is left, remove the volume's key for all users until the kernel
// reports it absent (DESIGN invariant 2).
import { rmdir } from 'node:fs/promises';
import { FscryptError } from '../kernel/index.js';
import { step, type HookOptions, type Volume } from './hook-options.js';
import { removalOptions, removeVolumeKey } from './key-residency.js';
import { isBindOf, mountAt, unmount } from './mounts.js';
import { withHookLock } from './hook-lock.js';
import { currentRecord, stillPublished } from './current-volume.js';
import { readSlotState, writeSlotState } from './slot-state.js';

export interface LockOptions extends HookOptions {
  /** Without a target: also unmount every target the volume is published at. */
  force?: boolean;
}

export interface LockResult {
  /** The key is absent from the kernel. */
  locked: boolean;
  /** Targets still published (the key stays while any is left). */
  targets: string[];
  /** Why the key stays, when it does. */
  reason?: 'targets-remain' | 'admin-unlocked';
}

/**
 * With a target: unmounts it and removes it (idempotent: an unknown or
 * already unmounted target is fine), then locks if it was the last one.
 * Without: an explicit lock, refused while targets are published unless
 * `force`.
 */
export async function lock(volume: Volume, target?: string, options: LockOptions = {}): Promise<LockResult> {
  return withHookLock(volume.slot, options, async () => {
    const state = await readSlotState(volume.slot);
    const record = await currentRecord(state, volume, 'lock');

    if (target !== undefined) {
      await unpublish(volume, target, record.targets.some((t) => t.path === target));
      record.targets = record.targets.filter((t) => t.path !== target);
      await writeSlotState(volume.slot, state);
      await step('lock', 'unmounted', options);
    }

    const published = await stillPublished(volume, record.targets);
    if (published.length !== record.targets.length) {
      record.targets = published;
      await writeSlotState(volume.slot, state);
    }
    if (published.length > 0) {
      if (target !== undefined) return { locked: false, targets: published.map((t) => t.path), reason: 'targets-remain' };
      if (!options.force) {
        throw new FscryptError(
          `${volume.path} is published at ${published.map((t) => t.path).join(', ')}; stop the pods using it, or lock with force to unmount them`,
          { code: 'ERR_BUSY', path: volume.path },
        );
      }
      for (const t of published) await unpublish(volume, t.path, true);
      record.targets = [];
      await writeSlotState(volume.slot, state);
      await step('lock', 'unmounted', options);
    }
    if (target !== undefined && record.adminUnlocked) return { locked: false, targets: [], reason: 'admin-unlocked' };

    await removeVolumeKey(volume.slot, volume.identifier, removalOptions(volume.path, 'lock', options));
    if (record.adminUnlocked) {
      record.adminUnlocked = false;
      await writeSlotState(volume.slot, state);
    }
    await step('lock', 'key-removed', options);
    return { locked: true, targets: [] };
  });
}

/**
 * Unmounts the volume from a target and removes the target directory (CSI:
 * the plugin deletes what it created), but only a directory that was a
 * target of this volume: recorded, or found holding its mount.
 */
async function unpublish(volume: Volume, target: string, recorded: boolean): Promise<void> {
  let ours = recorded;
  if (await isBindOf(target, volume.path)) {
    await unmount(target);
    ours = true;
  } else if (await mountAt(target)) {
    throw new FscryptError(`'${target}' has a mount that is not ${volume.path}; leaving it alone`, { code: 'ERR_STATE', path: target });
  }
  if (!ours) return;
  await rmdir(target).catch((error: NodeJS.ErrnoException) => {
    // Absent is fine; a non-empty directory is not ours to empty.
    if (error.code !== 'ENOENT' && error.code !== 'ENOTEMPTY') throw error;
  });
}
