// recycle: the lifecycle's "PV Released, reclaim Delete" row as one hook:
// crypto-erase the volume and prepare the next generation under a fresh key.
//
// One intent record covers both ("vol-N retiring, vol-N+1 preparing"), so
// the two run concurrently and their flushes share journal commits: the old
// wrapped key is destroyed and the old directory moved to the trash while
// the new generation is built. A crash anywhere is recovered by reconcile in
// both directions at once (retiring rolled forward, preparing rolled back).
// The old ciphertext is queued for deletion only once the new generation is
// ready, so its disk traffic does not slow the prepare.
//
// Idempotent: a controller that crashed between recycle and creating the new
// PV calls it again with the old volume, and gets the same answer (the slot
// records the generation it last erased), preparing the next generation
// first if the crash came before it was ready.
import { asFscryptError, FscryptError } from '../../kernel/index.js';
import { wipe, type OpenProtector } from '../../keys/index.js';
import { decideErase } from './erase.js';
import { buildGeneration, checkMode, startGeneration, type GenerationOptions } from './generation.js';
import { step, type Volume } from './hook-options.js';
import { checkProtector, prepareLocked } from './prepare.js';
import { recoverInterrupted, requeueErased, retire } from './recovery.js';
import { withVolumeLock } from './hook-lock.js';
import { readSlotState, writeSlotState, type SlotState } from '../slot/slot-state.js';
import { volumeOf } from '../slot/slot.js';
import { defaultTrash } from '../trash/trash.js';
import { verifyVolumeDirectory } from '../slot/verify.js';

export interface RecycleResult {
  /** The generation erased. */
  erased: string;
  /** The fresh generation, ready and locked. */
  next: Volume;
}

export async function recycle(volume: Volume, protector: OpenProtector, options: GenerationOptions = {}): Promise<RecycleResult> {
  checkMode(options);
  const trash = options.trash ?? defaultTrash();
  const withTrash = { ...options, trash };
  return withVolumeLock('recycle', volume, options, async () => {
    const slot = volume.slot;
    const state = await recoverInterrupted(slot, await readSlotState(slot), withTrash);
    const current = state.volume;
    if (alreadyRecycled(state, volume)) {
      // A retry: the erase is done (its ciphertext perhaps not yet queued for deletion); the next generation may not be.
      await requeueErased(slot, state, volume, withTrash);
      if (current?.phase === 'ready') {
        const next = volumeOf(slot, state)!;
        await verifyVolumeDirectory(next, 'hand out');
        return { erased: volume.name, next };
      }
      return { erased: volume.name, next: await prepareFailed(volume, prepareLocked(slot, state, protector, withTrash)) };
    }
    if (current?.phase !== 'ready' || current.generation !== volume.generation || current.identifier !== volume.identifier) {
      throw new FscryptError(`cannot recycle ${volume.path}: it is not the current volume of slot '${slot}' (erased or replaced); prepare the slot instead`, {
        code: 'ERR_NOT_CURRENT',
        path: volume.path,
      });
    }
    checkProtector(slot, state, protector);
    const retiring = await decideErase(volume, state, options);
    const { record, key } = startGeneration(state);
    try {
      await writeSlotState(slot, state);
      await step('recycle:intent-recorded', options);

      const [retired, built] = await Promise.allSettled([retire(slot, retiring, options), buildGeneration(slot, record, key, protector, options)]);
      if (retired.status === 'rejected') throw retired.reason;
      if (built.status === 'rejected') {
        // Finish the erase (it was decided) and undo the half-made
        // generation; if even that fails, reconcile does it.
        await recoverInterrupted(slot, state, withTrash).catch(() => undefined);
        throw afterErase(volume, built.reason);
      }

      delete state.retiring;
      state.lastErased = { generation: retiring.generation, identifier: retiring.identifier };
      record.phase = 'ready';
      await writeSlotState(slot, state);
      await step('recycle:ready', options);
      trash.add(retired.value);
      return { erased: retiring.name, next: volumeOf(slot, state)! };
    } catch (error) {
      await recoverInterrupted(slot, state, withTrash).catch(() => undefined);
      throw error;
    } finally {
      wipe(key);
    }
  });
}

/** The slot erased `volume` last, and has not been given a generation by anyone else since. */
function alreadyRecycled(state: SlotState, volume: Volume): boolean {
  const erased = state.lastErased;
  if (erased?.generation !== volume.generation || erased.identifier !== volume.identifier) return false;
  return state.volume === null || state.volume.generation > volume.generation;
}

async function prepareFailed(volume: Volume, preparing: Promise<Volume>): Promise<Volume> {
  try {
    return await preparing;
  } catch (error) {
    throw afterErase(volume, error);
  }
}

/**
 * The erase is done (the old key can never come back), but the next
 * generation could not be prepared: say both, and what to do, keeping the
 * failure's own code (ENOSPC, EROFS, ...) for the caller to branch on.
 */
function afterErase(volume: Volume, cause: unknown): unknown {
  const error = asFscryptError(cause);
  if (!(error instanceof FscryptError)) return error;
  return new FscryptError(
    `${volume.name} of slot '${volume.slot}' was crypto-erased, but preparing the next generation failed: ${error.message}. ` +
      `Once that is fixed, run \`fscrypt-local prepare ${volume.slot} --key-source ...\` (or recycle again)`,
    { code: error.code, path: volume.slot, cause: error },
  );
}
