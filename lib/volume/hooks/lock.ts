// lock: unpublish a target (kubelet's NodeUnpublishVolume) and, when no
// target is left, remove the volume's key for all users until the kernel
// reports it absent (DESIGN invariant 2); adminLock: the explicit lock of an
// admin, every target included with `force`.
//
// The key goes out before the state forgets the target, so that a crash in
// between leaves a record (a target no longer mounted) that tells reconcile
// the key is ours to remove. Taking a key out must work on a slot that is
// failing: on a read-only slot (ext4 remounts read-only after an I/O error)
// the target is unmounted and the key removed, and only recording that is
// left undone (a warning); on a slot whose filesystem was unmounted under a
// published volume, the target still reaches the filesystem (lock-orphan.ts).
import { rmdir } from 'node:fs/promises';
import { asFscryptError, FscryptError, isFscryptError } from '../../kernel/index.js';
import { step, type HookOptions, type StepName, type Volume } from './hook-options.js';
import { removalOptions, removeVolumeKey } from './key-residency.js';
import { isBindOf, mountAt, unmount } from '../mounts/mounts.js';
import { asHookError, withVolumeLock } from './hook-lock.js';
import { currentRecord, isCurrent, stillPublished } from './current-volume.js';
import { lockOrphanedTarget } from './lock-orphan.js';
import { readSlotState, writeSlotState, type SlotState } from '../slot/slot-state.js';
import { slotRoot } from '../slot/slot.js';

export interface LockOptions extends HookOptions {
  /** adminLock: also unmount every target the volume is published at. */
  force?: boolean;
}

export interface LockResult {
  /** The key is absent from the kernel. */
  locked: boolean;
  /** Targets still published (the key stays while any is left). */
  targets: string[];
  /** Why the key stays, when it does. */
  reason?: 'targets-remain' | 'admin-unlocked';
  /** Done, but something needs an admin: the state could not be recorded (read-only slot), or the slot is gone. */
  warning?: string;
}

/**
 * Unmounts `target` and removes it (idempotent: an unknown or already
 * unmounted target is fine, and so is a volume erased or replaced since),
 * then locks if it was the last one and no admin unlocked the volume.
 */
export async function lock(volume: Volume, target: string, options: HookOptions = {}): Promise<LockResult> {
  if (typeof target !== 'string' || !target.startsWith('/') || target.includes('\0')) {
    throw FscryptError.invalidArgument(`lock needs the target to unpublish (an absolute path), got ${JSON.stringify(target)}; to lock a volume as an admin, call adminLock`);
  }
  const gone = await slotGone(volume.slot);
  if (gone) return asHookError(() => lockOrphanedTarget(volume, target, gone, options));
  return withVolumeLock('lock', volume, options, async () => {
    const state = await readSlotState(volume.slot);
    if (!isCurrent(state, volume)) return lockStale(volume, state, target, options);
    const record = await currentRecord(state, volume, 'lock');
    await unpublish(volume, target, record.targets.some((t) => t.path === target));
    await step('lock:unmounted', options);

    const remaining = await stillPublished(
      volume,
      record.targets.filter((t) => t.path !== target),
    );
    if (remaining.length > 0 || record.adminUnlocked) {
      record.targets = remaining;
      const warning = await persist(volume, state, 'lock:recorded', options);
      const reason = remaining.length > 0 ? 'targets-remain' : 'admin-unlocked';
      return { locked: false, targets: remaining.map((t) => t.path), reason, ...(warning ? { warning } : {}) };
    }
    await removeVolumeKey(volume.slot, volume.identifier, removalOptions(volume.path, 'lock', options));
    await step('lock:key-removed', options);
    record.targets = [];
    const warning = await persist(volume, state, 'lock:recorded', options);
    return { locked: true, targets: [], ...(warning ? { warning } : {}) };
  });
}

/**
 * The explicit lock: refused (ERR_PUBLISHED) while targets are published,
 * unless `force`, which unmounts them first. Clears an admin unlock.
 */
export async function adminLock(volume: Volume, options: LockOptions = {}): Promise<LockResult> {
  return withVolumeLock('admin-lock', volume, options, async () => {
    const state = await readSlotState(volume.slot);
    const record = await currentRecord(state, volume, 'lock');
    const published = await stillPublished(volume, record.targets);
    if (published.length > 0) {
      if (!options.force) {
        throw new FscryptError(
          `${volume.path} is published at ${published.map((t) => t.path).join(', ')}; stop the pods using it, or lock with force to unmount them`,
          { code: 'ERR_PUBLISHED', path: volume.path },
        );
      }
      for (const t of published) await unpublish(volume, t.path, true);
      await step('admin-lock:unmounted', options);
    }
    await removeVolumeKey(volume.slot, volume.identifier, removalOptions(volume.path, 'lock', options));
    await step('admin-lock:key-removed', options);
    if (record.targets.length === 0 && !record.adminUnlocked) return { locked: true, targets: [] };
    record.targets = [];
    record.adminUnlocked = false;
    const warning = await persist(volume, state, 'admin-lock:recorded', options);
    return { locked: true, targets: [], ...(warning ? { warning } : {}) };
  });
}

/**
 * Records the state after the key is out. On a read-only or failing slot the
 * lock itself has happened (unmounted, key removed): say what could not be
 * recorded and what to do, rather than fail a lock that worked.
 */
async function persist(volume: Volume, state: SlotState, name: StepName, options: HookOptions): Promise<string | undefined> {
  try {
    await writeSlotState(volume.slot, state);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== 'EROFS' && code !== 'EIO') throw error;
    return (
      `the slot's state could not be recorded (${code}: its filesystem is ${code === 'EROFS' ? 'read-only, after an I/O error?' : 'failing'}); ` +
      `the unmount and the key removal are done. Check \`dmesg\`, repair the disk, then run \`fscrypt-local reconcile ${volume.slot}\``
    );
  }
  await step(name, options);
  return undefined;
}

/**
 * A lock of a volume that is no longer the slot's current one (erased or
 * replaced since it was published): its target is still unmounted and
 * removed, and its key, if still in the kernel, taken out.
 */
async function lockStale(volume: Volume, state: SlotState, target: string, options: HookOptions): Promise<LockResult> {
  // The caller named it as its target: an empty directory there is removed.
  await unpublish(volume, target, true);
  // Never the current volume's key, whatever the claim says.
  if (state.volume?.identifier !== volume.identifier && state.retiring?.identifier !== volume.identifier) {
    await removeVolumeKey(volume.slot, volume.identifier, removalOptions(volume.path, 'lock', options));
  }
  return { locked: true, targets: [] };
}

/** Why the slot's filesystem cannot be reached at the slot, or undefined if it can. */
async function slotGone(slot: string): Promise<FscryptError | undefined> {
  try {
    await slotRoot(slot);
    await readSlotState(slot);
    return undefined;
  } catch (error) {
    const wrapped = asFscryptError(error);
    if (isFscryptError(wrapped, 'ERR_NOT_MOUNTPOINT', 'ERR_NOT_INITIALIZED', 'ENOENT')) return wrapped;
    return undefined; // anything else is for the hook itself to report
  }
}

/**
 * Unmounts the volume from a target and removes the target directory (CSI:
 * the plugin deletes what it created), but only a directory that was a
 * target of this volume: recorded, or found holding its mount.
 */
export async function unpublish(volume: Volume, target: string, recorded: boolean): Promise<void> {
  let ours = recorded;
  if (await isBindOf(target, volume.path)) {
    await unmount(target);
    ours = true;
  } else if (await mountAt(target)) {
    throw new FscryptError(`'${target}' has a mount that is not ${volume.path}; leaving it alone`, { code: 'ERR_FOREIGN_MOUNT', path: target });
  }
  if (!ours) return;
  await rmdir(target).catch((error: NodeJS.ErrnoException) => {
    // Absent is fine; a non-empty directory is not ours to empty.
    if (error.code !== 'ENOENT' && error.code !== 'ENOTEMPTY') throw error;
  });
}
