// Finishing or undoing a hook that stopped half-way (a crash, kill -9, a
// failed step). Both directions are idempotent: each action checks what is
// already done, so recovery itself may be interrupted and run again.
//
// - A generation still `preparing` is rolled back: it was never handed out
//   (no PV is created before `ready`), so nothing of value is lost.
// - A generation `retiring` is rolled forward: its tenant is gone, its key
//   is out of the kernel, and the decision to destroy the key was recorded
//   before anything was touched.
import { lstatSync, renameSync } from 'node:fs';
import { readdir, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fsyncDirectory } from '../durable-fs.js';
import { getPolicy } from '../kernel/index.js';
import { SlotKeys } from '../keys/index.js';
import { step, type HookOptions } from './hook-options.js';
import { removalOptions, removeVolumeKey } from './key-residency.js';
import { slotPaths, volumePath } from './slot-layout.js';
import { writeSlotState, type RetiringRecord, type SlotState } from './slot-state.js';
import { defaultTrash } from './trash.js';
import { removeTree } from './tree-remover.js';

/** Recovers a slot with a generation `retiring` or `preparing`; returns the new state. */
export async function recoverInterrupted(slot: string, state: SlotState, options: HookOptions): Promise<SlotState> {
  if (state.retiring !== undefined) await finishRetiring(slot, state, options);
  if (state.volume?.phase === 'preparing') await rollBackPrepare(slot, state, options);
  return state;
}

export async function rollBackPrepare(slot: string, state: SlotState, options: HookOptions): Promise<SlotState> {
  const volume = state.volume!;
  const dir = volumePath(slot, volume.generation);
  await removeVolumeKey(slot, volume.identifier, removalOptions(dir, 'prepare', options));
  await removeUnfinishedGeneration(dir, volume.identifier, options);
  await new SlotKeys(slot).destroyPolicy(volume.identifier);
  state.volume = null;
  await writeSlotState(slot, state);
  return state;
}

/**
 * Removes the directory an interrupted prepare made, and only that: one
 * with this generation's policy (it holds at most the probe file: it was
 * never published), or an empty plain one (made, policy not yet set).
 * Anything else under that name is not ours, and is left for an admin.
 */
async function removeUnfinishedGeneration(dir: string, identifier: string, options: HookOptions): Promise<void> {
  if (!exists(dir)) return;
  const policy = await getPolicy(dir);
  if (policy?.version === 2 && policy.identifier === identifier) {
    await removeTree(dir);
  } else if (policy === null && (await readdir(dir)).length === 0) {
    await rmdir(dir);
  } else {
    options.onProgress?.({ hook: 'prepare', kind: 'note', message: `left ${dir} in place: it is not the generation this prepare made` });
  }
}

/**
 * The steps of an erase after its decision is recorded, without recording
 * the result: the key out of the kernel (until ABSENT), the wrapped key
 * destroyed (crypto-erase) while the ciphertext is moved to the trash.
 * Returns the trash path.
 */
export async function retire(slot: string, retiring: RetiringRecord, options: HookOptions): Promise<string> {
  const dir = volumePath(slot, retiring.generation);
  await removeVolumeKey(slot, retiring.identifier, removalOptions(dir, 'erase', options));
  await step('erase', 'key-removed', options);
  const { trashDir } = slotPaths(slot);
  const trashed = join(trashDir, retiring.name);
  // Independent steps: the rename's fsyncs and the crypto-erase's share journal commits.
  const moved = moveToTrash(dir, trashed) ? [fsyncDirectory(slot), fsyncDirectory(trashDir)] : [];
  await Promise.all([new SlotKeys(slot).destroyPolicy(retiring.identifier), ...moved]);
  await step('erase', 'policy-destroyed', options);
  await step('erase', 'moved-to-trash', options);
  return trashed;
}

/** retire(), then the slot state records it done, and the trash is queued for deletion. */
export async function finishRetiring(slot: string, state: SlotState, options: HookOptions): Promise<string> {
  const trashed = await retire(slot, state.retiring!, options);
  delete state.retiring;
  await writeSlotState(slot, state);
  await step('erase', 'done', options);
  (options.trash ?? defaultTrash()).add(trashed);
  return trashed;
}

// Metadata calls on the hook's path are synchronous (see durable-fs.ts).
function moveToTrash(dir: string, trashed: string): boolean {
  if (!exists(dir)) return false;
  renameSync(dir, trashed);
  return true;
}

function exists(path: string): boolean {
  return lstatSync(path, { throwIfNoEntry: false }) !== undefined;
}
