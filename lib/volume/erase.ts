// erase: crypto-erase a volume so the next tenant starts from nothing, in
// O(1) whatever the data size. The key leaves the kernel, its only wrapped
// copy is destroyed (DESIGN invariant 3), and the ciphertext left behind is
// moved to the slot's trash and deleted in the background.
import { join } from 'node:path';
import { FscryptError } from '../kernel/index.js';
import { step, type HookOptions, type Volume } from './hook-options.js';
import { checkVolumeClaim, stillPublished } from './current-volume.js';
import { removalOptions, removeVolumeKey } from './key-residency.js';
import { finishErase, recoverInterrupted } from './recovery.js';
import { slotPaths } from './slot-layout.js';
import { withSlotLock } from './slot-lock.js';
import { readSlotState, writeSlotState } from './slot-state.js';

export interface EraseResult {
  /** The volume erased by this call; undefined if it was already gone. */
  erased?: string;
  /** Where its ciphertext waits for background deletion. */
  trash?: string;
}

/**
 * Erases the slot's current volume. Refused while the volume is published
 * (DESIGN invariant 4: data in use is never deleted). Idempotent: a volume
 * already erased is success; an interrupted erase is finished.
 */
export async function erase(volume: Volume, options: HookOptions = {}): Promise<EraseResult> {
  return withSlotLock(
    volume.slot,
    async () => {
      const state = await readSlotState(volume.slot);
      const record = state.volume;
      if (!record || record.generation !== volume.generation) return {}; // already erased
      if (record.phase === 'preparing') {
        await recoverInterrupted(volume.slot, state, options);
        return {};
      }
      await checkVolumeClaim(volume, record);
      if (record.phase === 'ready') {
        const published = await stillPublished(volume, record.targets);
        if (published.length > 0) {
          throw new FscryptError(
            `refusing to erase ${volume.path}: it is published at ${published.map((t) => t.path).join(', ')}`,
            { code: 'ERR_BUSY', path: volume.path },
          );
        }
        if (record.adminUnlocked) {
          throw new FscryptError(`refusing to erase ${volume.path}: an admin unlocked it (someone may be using it); lock it first`, {
            code: 'ERR_BUSY',
            path: volume.path,
          });
        }
        // The key goes out before the decision is recorded: files still in
        // use (an unrecorded mount, a process inside) fail the erase here,
        // rather than being rolled forward over by reconcile later.
        await removeVolumeKey(volume.slot, volume.identifier, removalOptions(volume.path, 'erase', options));
        record.phase = 'erasing';
        record.targets = [];
        await writeSlotState(volume.slot, state);
        await step('erase', 'intent-recorded', options);
      }
      await finishErase(volume.slot, state, options);
      return { erased: volume.name, trash: join(slotPaths(volume.slot).trashDir, volume.name) };
    },
    options.lockTimeoutMs === undefined ? {} : { timeoutMs: options.lockTimeoutMs },
  );
}
