// erase: crypto-erase a volume so the next tenant starts from nothing, in
// O(1) whatever the data size. The key leaves the kernel, its only wrapped
// copy is destroyed (DESIGN invariant 3), and the ciphertext left behind is
// moved to the slot's trash and deleted in the background.
import { FscryptError, isFscryptError } from '../../kernel/index.js';
import { SlotKeys } from '../../keys/index.js';
import { checkVolumeClaim, stillPublished } from './current-volume.js';
import { step, type HookOptions, type Volume } from './hook-options.js';
import { removalOptions, removeVolumeKey } from './key-residency.js';
import { finishRetiring, recoverInterrupted, requeueErased } from './recovery.js';
import { withVolumeLock } from './hook-lock.js';
import { readSlotState, writeSlotState, type RetiringRecord, type SlotState } from '../slot/slot-state.js';

export interface EraseResult {
  /** The volume erased by this call; undefined if it was already gone. */
  erased?: string;
  /** Where its ciphertext waits for background deletion. */
  trash?: string;
}

/**
 * Erases the slot's current volume. Refused while the volume is published
 * or admin-unlocked (DESIGN invariant 4: data in use is never deleted).
 * Idempotent: a volume already erased is success; an interrupted erase is
 * finished.
 */
export async function erase(volume: Volume, options: HookOptions = {}): Promise<EraseResult> {
  return withVolumeLock('erase', volume, options, async () => {
    const state = await readSlotState(volume.slot);
    if (state.retiring?.generation === volume.generation) {
      return { erased: volume.name, trash: await finishRetiring(volume.slot, state, options) };
    }
    if (state.retiring !== undefined) await finishRetiring(volume.slot, state, options); // an older one, interrupted
    const record = state.volume;
    if (!record || record.generation !== volume.generation) {
      await requeueErased(volume.slot, state, volume, options); // already erased; its ciphertext may not have been queued
      return {};
    }
    if (record.phase === 'preparing') {
      await recoverInterrupted(volume.slot, state, options);
      return {};
    }
    await decideErase(volume, state, options);
    await writeSlotState(volume.slot, state);
    await step('erase:intent-recorded', options);
    return { erased: volume.name, trash: await finishRetiring(volume.slot, state, options) };
  });
}

/**
 * Checks that the slot's ready volume may be erased, takes its key out of
 * the kernel, and moves it from `volume` to `retiring` in `state` (not yet
 * written). The key goes out before the decision: files still in use (an
 * unrecorded mount, a process inside) fail the erase here, rather than being
 * rolled forward over by reconcile later.
 */
export async function decideErase(volume: Volume, state: SlotState, options: HookOptions): Promise<RetiringRecord> {
  const record = state.volume!;
  await checkVolumeClaim(volume, record);
  const published = await stillPublished(volume, record.targets);
  if (published.length > 0) {
    throw new FscryptError(`refusing to erase ${volume.path}: it is published at ${published.map((t) => t.path).join(', ')}`, {
      code: 'ERR_PUBLISHED',
      path: volume.path,
    });
  }
  if (record.adminUnlocked) {
    throw new FscryptError(`refusing to erase ${volume.path}: an admin unlocked it (someone may be using it); lock it first`, {
      code: 'ERR_PUBLISHED',
      path: volume.path,
    });
  }
  await checkPolicyFile(volume);
  await removeVolumeKey(volume.slot, volume.identifier, removalOptions(volume.path, 'erase', options));
  const retiring = { generation: record.generation, name: record.name, identifier: record.identifier };
  state.retiring = retiring;
  state.volume = null;
  return retiring;
}

/**
 * The wrapped key must be a policy file the erase can destroy, checked
 * before anything changes: a FIFO, socket or directory in its place would
 * otherwise stop the erase half-way and wedge every later hook. Missing is
 * fine (nothing left to destroy).
 */
async function checkPolicyFile(volume: Volume): Promise<void> {
  try {
    await new SlotKeys(volume.slot).readPolicy(volume.identifier);
  } catch (error) {
    if (isFscryptError(error, 'ENOENT')) return;
    const why = error instanceof Error ? error.message : String(error);
    throw new FscryptError(`refusing to erase ${volume.path}: its wrapped key cannot be destroyed safely (${why}); nothing was changed`, {
      code: 'ERR_BAD_METADATA',
      path: volume.path,
      cause: error,
    });
  }
}
