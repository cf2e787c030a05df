// prepare: a new generation for a slot, encrypted under a fresh key, and
// verified before anyone may use it (DESIGN invariant 1: no PV for a
// directory whose policy was not verified after it was set).
//
// The intent is recorded first (so a crash is rolled back by reconcile),
// then the generation is built (generation.ts), then marked ready.
import { FscryptError } from '../kernel/index.js';
import { wipe, type OpenProtector } from '../keys/index.js';
import { buildGeneration, startGeneration, type GenerationOptions } from './generation.js';
import { step, type Volume } from './hook-options.js';
import { recoverInterrupted, rollBackPrepare } from './recovery.js';
import { withHookLock } from './hook-lock.js';
import { readSlotState, writeSlotState, type SlotState } from './slot-state.js';
import { slotRoot, volumeOf } from './slot.js';

export type PrepareOptions = GenerationOptions;

/**
 * Gives the slot a ready, verified, locked volume. Idempotent: a slot whose
 * volume is already ready returns that volume; an interrupted prepare or
 * erase is first finished or rolled back.
 */
export async function prepare(root: string, protector: OpenProtector, options: PrepareOptions = {}): Promise<Volume> {
  const slot = await slotRoot(root);
  return withHookLock(slot, options, async () => {
    let state = await readSlotState(slot);
    if (state.volume?.phase === 'ready' && state.retiring === undefined) return volumeOf(slot, state)!;
    state = await recoverInterrupted(slot, state, options);
    if (state.volume?.phase === 'ready') return volumeOf(slot, state)!;
    checkProtector(slot, state, protector);

    const { record, key } = startGeneration(state);
    let intentRecorded = false;
    try {
      await writeSlotState(slot, state);
      intentRecorded = true;
      await step('prepare', 'intent-recorded', options);

      await buildGeneration(slot, record, key, protector, options);

      record.phase = 'ready';
      await writeSlotState(slot, state);
      await step('prepare', 'ready', options);
      return volumeOf(slot, state)!;
    } catch (error) {
      // Leave no key in the kernel and no half-made generation behind; if
      // even that fails, reconcile (or the next prepare) rolls it back.
      if (intentRecorded) await rollBackPrepare(slot, state, options).catch(() => undefined);
      throw error;
    } finally {
      wipe(key);
    }
  });
}

export function checkProtector(slot: string, state: SlotState, protector: OpenProtector): void {
  if (protector.descriptor !== state.protector) {
    throw new FscryptError(`the open protector ${protector.descriptor} is not the slot's protector ${state.protector}`, { code: 'ERR_STATE', path: slot });
  }
}
