// reconcile: after an agent restart or a node reboot, rebuild the truth of a
// slot from its state file, the kernel's key status and /proc/self/mountinfo
// (never from memory), and bring it back to where DESIGN's invariants hold:
// interrupted hooks finished or rolled back, a key in the kernel exactly when
// a target is published (or an admin unlocked it), trash deletion resumed.
import { getKeyStatus } from '../kernel/index.js';
import { wipe, type OpenProtector } from '../keys/index.js';
import type { HookOptions } from './hook-options.js';
import { addVolumeKey, removalOptions, removeVolumeKey } from './key-residency.js';
import { stillPublished } from './current-volume.js';
import { recoverInterrupted } from './recovery.js';
import { slotPaths, volumePath } from './slot-layout.js';
import { withHookLock } from './hook-lock.js';
import { readSlotState, removeStaleStateTemp, writeSlotState } from './slot-state.js';
import { slotRoot, strayVolumes, volumeOf } from './slot.js';
import { defaultTrash } from './trash.js';

export interface ReconcileReport {
  slot: string;
  /** What reconcile changed, in order. */
  actions: string[];
  /** What it found wrong and could not (or must not) fix by itself. */
  warnings: string[];
}

/**
 * Reconciles one slot. With the slot's open protector it can also re-add the
 * key of a volume that is still published (e.g. the agent restarted while
 * pods kept their mounts); without one that case is reported.
 */
export async function reconcile(root: string, protector?: OpenProtector, options: HookOptions = {}): Promise<ReconcileReport> {
  const slot = await slotRoot(root);
  const report: ReconcileReport = { slot, actions: [], warnings: [] };
  const note = (message: string): void => {
    report.actions.push(message);
    options.onProgress?.({ hook: 'reconcile', kind: 'note', message });
  };

  await withHookLock(slot, options, async () => {
    if (await removeStaleStateTemp(slot)) note('removed a stale temporary state file');
    let state = await readSlotState(slot);
    const retiring = state.retiring?.name;
    const preparing = state.volume?.phase === 'preparing' ? state.volume.name : undefined;
    state = await recoverInterrupted(slot, state, options);
    if (retiring !== undefined) note(`finished the interrupted erase of ${retiring}`);
    if (preparing !== undefined) note(`rolled back the interrupted prepare of ${preparing}`);

    const record = state.volume;
    if (record) {
      const volume = volumeOf(slot, state)!;
      const published = await stillPublished(volume, record.targets);
      if (published.length !== record.targets.length) {
        const gone = record.targets.filter((t) => !published.includes(t)).map((t) => t.path);
        record.targets = published;
        await writeSlotState(slot, state);
        note(`forgot ${gone.length} target(s) no longer mounted: ${gone.join(', ')}`);
      }
      const key = (await getKeyStatus(slot, record.identifier)).status;
      if (published.length > 0 && key !== 'present') {
        if (protector) {
          const policyKey = await protector.unwrapPolicyKey(record.identifier);
          try {
            await addVolumeKey(slot, policyKey, record.identifier);
          } finally {
            wipe(policyKey);
          }
          note(`re-added the key of ${record.name}, published at ${published.length} target(s)`);
        } else {
          report.warnings.push(`${record.name} is published at ${published.map((t) => t.path).join(', ')} but its key is ${key}: run unlock with the slot's key source`);
        }
      } else if (published.length === 0 && key !== 'absent' && !record.adminUnlocked) {
        await removeVolumeKey(slot, record.identifier, removalOptions(volumePath(slot, record.generation), 'reconcile', options));
        note(`locked ${record.name}: its key was in the kernel with no target published`);
      }
    }

    const resumed = await (options.trash ?? defaultTrash()).resume(slotPaths(slot).trashDir);
    if (resumed.length > 0) note(`resumed background deletion of ${resumed.length} retired generation(s)`);

    for (const stray of await strayVolumes(slot, state)) {
      report.warnings.push(`${stray} in the slot is not its current volume; left untouched (inspect it, then remove it by hand)`);
    }
  });

  return report;
}
