// reconcile: after an agent restart or a node reboot, rebuild the truth of a
// slot from its state file, the kernel's key status and /proc/self/mountinfo
// (never from memory), and bring it back to where DESIGN's invariants hold:
// interrupted hooks finished or rolled back, a key in the kernel exactly when
// a target is published (or an admin unlocked it), trash deletion resumed.
//
// A key is removed only when the state says a hook of ours put it there (a
// recorded target that is no longer mounted, an interrupted prepare). A key
// no record accounts for was added by someone else, typically an admin's
// break-glass `fscrypt unlock`: it is reported and left alone.
import { getKeyStatus, isFscryptError } from '../../kernel/index.js';
import { SlotKeys, wipe, type OpenProtector } from '../../keys/index.js';
import { step, type HookOptions } from './hook-options.js';
import { addVolumeKey, removalOptions, removeVolumeKey } from './key-residency.js';
import { stillPublished } from './current-volume.js';
import { recoverInterrupted } from './recovery.js';
import { slotPaths, volumePath } from '../slot/slot-layout.js';
import { asHookError, withHookLock } from './hook-lock.js';
import { readSlotState, removeStaleStateTemp, writeSlotState, type SlotState } from '../slot/slot-state.js';
import { slotRoot, strayVolumes, volumeOf } from '../slot/slot.js';
import { defaultTrash } from '../trash/trash.js';
import { volumeDirectoryProblem } from '../slot/verify.js';

export interface ReconcileReport {
  slot: string;
  /** What reconcile changed, in order. */
  actions: string[];
  /** What it found wrong and could not (or must not) fix by itself. */
  warnings: string[];
}

export interface ReconcileOptions extends HookOptions {
  /**
   * When the newest copy of the slot state is damaged (a power loss in the
   * middle of a write), continue from the previous copy and repair the file.
   * Without it such a slot is refused with ERR_BAD_METADATA.
   */
  usePreviousState?: boolean;
}

/**
 * Reconciles one slot. With the slot's open protector it can also re-add the
 * key of a volume that is still published (e.g. the agent restarted while
 * pods kept their mounts); without one that case is reported.
 */
export async function reconcile(root: string, protector?: OpenProtector, options: ReconcileOptions = {}): Promise<ReconcileReport> {
  const slot = await asHookError(() => slotRoot(root));
  const report: ReconcileReport = { slot, actions: [], warnings: [] };
  const note = (message: string): void => {
    report.actions.push(message);
    try {
      options.onProgress?.({ hook: 'reconcile', kind: 'note', message });
    } catch {
      // an observer never breaks a hook
    }
  };
  /** Writes the state; on a read-only or failing slot, says so and goes on. */
  const persist = async (state: SlotState): Promise<boolean> => {
    try {
      await writeSlotState(slot, state);
      return true;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code !== 'EROFS' && code !== 'EIO') throw error;
      report.warnings.push(`the slot state could not be written (${code}); check \`dmesg\`, repair the disk, then reconcile again`);
      return false;
    }
  };

  await withHookLock('reconcile', slot, options, async () => {
    if (await removeStaleStateTemp(slot).catch(() => false)) note('removed a stale temporary state file');
    let state = await readSlotState(slot, options.usePreviousState ? { usePreviousState: true } : {});
    if (options.usePreviousState) {
      // Overwrites a damaged newest copy, if there was one.
      if (await persist(state)) note('rewrote the slot state from its intact copy');
    }
    const retiring = state.retiring?.name;
    const preparing = state.volume?.phase === 'preparing' ? state.volume.name : undefined;
    try {
      state = await recoverInterrupted(slot, state, options);
    } catch (error) {
      if (!isFscryptError(error, 'ERR_BAD_METADATA')) throw error;
      report.warnings.push(error.message);
      return;
    }
    if (retiring !== undefined) note(`finished the interrupted erase of ${retiring}`);
    if (preparing !== undefined) note(`rolled back the interrupted prepare of ${preparing}`);
    if (retiring !== undefined || preparing !== undefined) await step('reconcile:recovered', options);

    const keys = new SlotKeys(slot);
    const swept = await keys.sweepLeftovers();
    if (swept > 0) note(`crypto-erased ${swept} leftover key metadata file(s) of interrupted writes`);
    // Metadata that would not unlock: said now, not at the next publish.
    for (const problem of await keys.check(state.protector, state.volume ? [state.volume.identifier] : [])) report.warnings.push(problem.message);

    const record = state.volume;
    if (record) {
      const volume = volumeOf(slot, state)!;
      const problem = await volumeDirectoryProblem(volume);
      if (problem !== undefined) report.warnings.push(`${record.name} cannot be used: ${problem} (it is never unlocked or handed out like this; is the slot's disk the right one?)`);

      const published = await stillPublished(volume, record.targets);
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
          await step('reconcile:key-added', options);
        } else {
          report.warnings.push(`${record.name} is published at ${published.map((t) => t.path).join(', ')} but its key is ${key}: run unlock with the slot's key source`);
        }
      } else if (published.length === 0 && key !== 'absent') {
        if (record.targets.length > 0) {
          // Ours: a target was recorded, and nothing is mounted any more.
          await removeVolumeKey(slot, record.identifier, removalOptions(volumePath(slot, record.generation), 'reconcile', options));
          note(`locked ${record.name}: its key was in the kernel with no target published`);
          await step('reconcile:key-removed', options);
        } else if (!record.adminUnlocked) {
          report.warnings.push(
            `the key of ${record.name} is in the kernel, but no unlock of fscrypt-local put it there (a break-glass \`fscrypt unlock\`?); left alone. ` +
              `When done, lock it with \`fscrypt lock ${volume.path}\` or \`fscrypt-local lock ${volume.path}\``,
          );
        }
      } else if (published.length === 0 && key === 'absent' && record.adminUnlocked) {
        record.adminUnlocked = false;
        if (await persist(state)) note(`${record.name} is no longer admin-unlocked: its key left the kernel (a reboot?)`);
      }
      if (published.length !== record.targets.length) {
        const gone = record.targets.filter((t) => !published.includes(t)).map((t) => t.path);
        record.targets = published;
        if (await persist(state)) {
          note(`forgot ${gone.length} target(s) no longer mounted: ${gone.join(', ')}`);
          await step('reconcile:targets-forgotten', options);
        }
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
