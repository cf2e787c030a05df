// The numbers the metrics report about slots, counted from the slots' own
// state and the kernel (slotStatus), not from what the agent believes: the
// "keys without a target" gauge is invariant 2 read off the running node,
// and must be 0 (a key left by a lock still retrying busy files counts).
//
// A census read must never hold a volume open while a hook runs on its slot:
// the status opens the volume directory, and a lock's REMOVE_KEY meeting that
// fd leaves the key in the kernel until the background retrier gets it out
// (the soak saw it once in ~480 cycles). So each slot is read only if its
// lock is free (slotStatusIfIdle), and a slot a hook holds is counted as
// `busy`: not a problem, and not an orphan key (a hook may hold the key in
// the kernel while it runs); the next census reads it.
import { slotStatusIfIdle, type IdleStatusOptions } from '../volume/index.js';
import type { SlotRecord } from './slots.js';

export interface Census {
  /** Slots by condition and, for ready slots, by volume state (published, locked), or busy (a hook held the slot). */
  states: Record<string, number>;
  orphanKeys: number;
  problems: number;
}

export type CensusOptions = IdleStatusOptions;

export async function census(records: readonly SlotRecord[], options: CensusOptions = {}): Promise<Census> {
  const states: Record<string, number> = { published: 0, locked: 0, busy: 0, refused: 0, gone: 0, pending: 0 };
  let orphanKeys = 0;
  let problems = 0;
  // Eight slots at a time, not all at once: a 1000-way fan-out held hundreds of MiB of native memory at its peak.
  const queue = [...records];
  const worker = async () => {
    for (let record = queue.shift(); record !== undefined; record = queue.shift()) await count(record);
  };
  const count = async (record: SlotRecord) => {
    if (record.condition !== 'ready') {
      states[record.condition] = (states[record.condition] ?? 0) + 1;
      problems++;
      return;
    }
    const status = await slotStatusIfIdle(record.root, options).then(
      (s) => s ?? ('busy' as const),
      () => undefined,
    );
    if (status === 'busy') {
      states.busy!++;
      return;
    }
    const v = status?.volume;
    if (!v) {
      problems++;
      return;
    }
    const published = v.targets.some((t) => t.mounted);
    states[published ? 'published' : 'locked']!++;
    if (v.key !== 'absent' && !published && !v.adminUnlocked) orphanKeys++;
    if (v.problem) problems++;
  };
  await Promise.all(Array.from({ length: 8 }, worker));
  return { states, orphanKeys, problems };
}
