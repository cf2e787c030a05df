// prepare: a new generation for a slot, encrypted under a fresh key, and
// verified before anyone may use it (DESIGN invariant 1: no PV for a
// directory whose policy was not verified after it was set).
//
// The intent is recorded first (so a crash is rolled back by reconcile),
// then the generation is built (generation.ts), then marked ready.
import { FscryptError } from '../../kernel/index.js';
import { wipe, type OpenProtector } from '../../keys/index.js';
import { buildGeneration, checkMode, startGeneration, type GenerationOptions } from './generation.js';
import { step, type Volume } from './hook-options.js';
import { recoverInterrupted, rollBackPrepare } from './recovery.js';
import { asHookError, withHookLock } from './hook-lock.js';
import { verifyVolumeDirectory } from '../slot/verify.js';
import { readSlotState, writeSlotState, type SlotState } from '../slot/slot-state.js';
import { slotRoot, volumeOf } from '../slot/slot.js';

export type PrepareOptions = GenerationOptions;

/**
 * Gives the slot a ready, verified, locked volume. Idempotent: a slot whose
 * volume is already ready returns that volume; an interrupted prepare or
 * erase is first finished or rolled back.
 */
export async function prepare(root: string, protector: OpenProtector, options: PrepareOptions = {}): Promise<Volume> {
  checkMode(options);
  const slot = await asHookError(() => slotRoot(root));
  return withHookLock('prepare', slot, options, async () => {
    const state = await readSlotState(slot);
    if (state.volume?.phase === 'ready' && state.retiring === undefined) return verified(volumeOf(slot, state)!);
    return prepareLocked(slot, await recoverInterrupted(slot, state, options), protector, options);
  });
}

/** prepare's work once it holds the slot and the slot has nothing interrupted. */
export async function prepareLocked(slot: string, state: SlotState, protector: OpenProtector, options: PrepareOptions): Promise<Volume> {
  if (state.volume?.phase === 'ready') return verified(volumeOf(slot, state)!);
  checkProtector(slot, state, protector);

  const { record, key } = startGeneration(state);
  let intentRecorded = false;
  try {
    await writeSlotState(slot, state);
    intentRecorded = true;
    await step('prepare:intent-recorded', options);

    await buildGeneration(slot, record, key, protector, options);

    record.phase = 'ready';
    await writeSlotState(slot, state);
    await step('prepare:ready', options);
    return volumeOf(slot, state)!;
  } catch (error) {
    // Leave no key in the kernel and no half-made generation behind; if
    // even that fails, reconcile (or the next prepare) rolls it back.
    if (intentRecorded) await rollBackPrepare(slot, state, options).catch(() => undefined);
    throw error;
  } finally {
    wipe(key);
  }
}

/** A ready volume is handed out only after its directory is checked again (invariant 1): it may have been deleted or replaced. */
async function verified(volume: Volume): Promise<Volume> {
  await verifyVolumeDirectory(volume, 'hand out');
  return volume;
}

export function checkProtector(slot: string, state: SlotState, protector: OpenProtector): void {
  if (protector.descriptor !== state.protector) {
    throw FscryptError.invalidArgument(`the open protector ${protector.descriptor} is not the protector ${state.protector} of slot '${slot}'; open this slot's own`, slot);
  }
}
