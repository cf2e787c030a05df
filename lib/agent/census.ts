// The numbers the metrics report about slots, counted from the slots' own
// state and the kernel (slotStatus), not from what the agent believes: the
// "keys without a target" gauge is invariant 2 read off the running node,
// and must be 0 (a key left by a lock still retrying busy files counts).
import { slotStatus } from '../volume/index.js';
import type { SlotRecord } from './slots.js';

export interface Census {
  /** Slots by condition and, for ready slots, by volume state (published, locked). */
  states: Record<string, number>;
  orphanKeys: number;
  problems: number;
}

export async function census(records: readonly SlotRecord[]): Promise<Census> {
  const states: Record<string, number> = { published: 0, locked: 0, refused: 0, gone: 0, pending: 0 };
  let orphanKeys = 0;
  let problems = 0;
  // Eight slots at a time, not all at once: a 1000-way fan-out held hundreds of MiB of native memory at its peak.
  const queue = [...records];
  const worker = async () => {
    for (let record = queue.shift(); record !== undefined; record = queue.shift()) await count(record);
  };
  const count = async (record: SlotRecord) => {
    {
      if (record.condition !== 'ready') {
        states[record.condition] = (states[record.condition] ?? 0) + 1;
        problems++;
        return;
      }
      const status = await slotStatus(record.root).catch(() => undefined);
      const v = status?.volume;
      if (!v) {
        problems++;
        return;
      }
      const published = v.targets.some((t) => t.mounted);
      states[published ? 'published' : 'locked']!++;
      if (v.key !== 'absent' && !published && !v.adminUnlocked) orphanKeys++;
      if (v.problem) problems++;
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
  return { states, orphanKeys, problems };
}
