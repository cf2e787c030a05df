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
import { FscryptError } from '../kernel/index.js';
import { wipe, type OpenProtector } from '../keys/index.js';
import { decideErase } from './erase.js';
import { buildGeneration, startGeneration, type GenerationOptions } from './generation.js';
import { step, type Volume } from './hook-options.js';
import { checkProtector } from './prepare.js';
import { recoverInterrupted, retire } from './recovery.js';
import { withVolumeLock } from './hook-lock.js';
import { readSlotState, writeSlotState } from './slot-state.js';
import { volumeOf } from './slot.js';
import { defaultTrash } from './trash.js';

export interface RecycleResult {
  /** The generation erased by this call; undefined if it was already gone. */
  erased?: string;
  /** The fresh generation, ready and locked. */
  next: Volume;
}

export async function recycle(volume: Volume, protector: OpenProtector, options: GenerationOptions = {}): Promise<RecycleResult> {
  const trash = options.trash ?? defaultTrash();
  return withVolumeLock(volume, options, async () => {
    const slot = volume.slot;
    const state = await recoverInterrupted(slot, await readSlotState(slot), { ...options, trash });
    const current = state.volume;
    if (current?.phase !== 'ready' || current.generation !== volume.generation || current.identifier !== volume.identifier) {
      throw new FscryptError(`cannot recycle ${volume.path}: it is not the current volume of slot '${slot}' (erased or replaced); prepare the slot instead`, {
        code: 'ENOENT',
        path: volume.path,
      });
    }
    checkProtector(slot, state, protector);
    const retiring = await decideErase(volume, state, options);
    const { record, key } = startGeneration(state);
    try {
      await writeSlotState(slot, state);
      await step('recycle', 'intent-recorded', options);

      const [retired, built] = await Promise.allSettled([retire(slot, retiring, options), buildGeneration(slot, record, key, protector, options)]);
      if (retired.status === 'rejected') throw retired.reason;
      if (built.status === 'rejected') throw built.reason;

      delete state.retiring;
      record.phase = 'ready';
      await writeSlotState(slot, state);
      await step('recycle', 'ready', options);
      trash.add(retired.value);
      return { erased: retiring.name, next: volumeOf(slot, state)! };
    } catch (error) {
      // Finish the erase (it was decided) and undo the half-made
      // generation; if even that fails, reconcile does it.
      await recoverInterrupted(slot, state, { ...options, trash }).catch(() => undefined);
      throw error;
    } finally {
      wipe(key);
    }
  });
}
