// claim: records that a volume's generation was handed to a tenant, so that
// it is never offered to another (DESIGN invariant 8). The agent records a
// claim when it sees the generation's PV Bound; unlock records one with the
// first target, because data can only reach a volume through a publish (or
// an admin unlock, which an admin answers for). The agent creates a PV only
// for a generation no record calls claimed: when a claimed generation's PV
// disappears (an admin deleted a Retained PV), the generation is erased or
// waits for an admin, and the upstream provisioner's failure, a new PV over
// the previous tenant's data, cannot happen.
//
// One atomic state write: a crash before it leaves the claim unrecorded
// until the next observation of the Bound PV records it again.
import type { HookOptions, Volume } from './hook-options.js';
import { currentRecord } from './current-volume.js';
import { withVolumeLock } from './hook-lock.js';
import { readSlotState, writeSlotState } from '../slot/slot-state.js';

export interface ClaimResult {
  /** True if this call recorded the claim; false if it was recorded before. */
  recorded: boolean;
}

/** Marks the slot's current volume as claimed by a tenant. Idempotent. */
export async function claim(volume: Volume, options: Pick<HookOptions, 'signal' | 'lockTimeoutMs'> = {}): Promise<ClaimResult> {
  return withVolumeLock('claim', volume, options, async () => {
    const state = await readSlotState(volume.slot);
    const record = await currentRecord(state, volume, 'claim');
    if (record.claimed === true) return { recorded: false };
    record.claimed = true;
    await writeSlotState(volume.slot, state);
    return { recorded: true };
  });
}
