// Finishing or undoing a hook that stopped half-way (a crash, kill -9, a
// failed step). Both directions are idempotent: each action checks what is
// already done, so recovery itself may be interrupted and run again.
//
// - A generation still `preparing` is rolled back: it was never handed out
//   (no PV is created before `ready`), so nothing of value is lost.
// - A generation `retiring` is rolled forward: its tenant is gone, its key
//   is out of the kernel, and the decision to destroy the key was recorded
//   before anything was touched.
import { lstat, readdir, rename, rmdir } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import { join } from 'node:path';
import { fsyncDirectory } from '../../durable-fs.js';
import { FscryptError, getPolicy } from '../../kernel/index.js';
import { SlotKeys } from '../../keys/index.js';
import { PROBE_FILE_SIZE } from './generation.js';
import { emit, step, type HookOptions } from './hook-options.js';
import { removalOptions, removeVolumeKey } from './key-residency.js';
import { slotPaths, volumeName, volumePath } from '../slot/slot-layout.js';
import { writeSlotState, type RetiringRecord, type SlotState } from '../slot/slot-state.js';
import { defaultTrash } from '../trash/trash.js';
import { removeTree } from '../trash/tree-remover.js';

/** Recovers a slot with a generation `retiring` or `preparing`; returns the new state. */
export async function recoverInterrupted(slot: string, state: SlotState, options: HookOptions): Promise<SlotState> {
  let unfinished: { error: unknown } | undefined;
  if (state.retiring !== undefined) {
    try {
      await finishRetiring(slot, state, options);
    } catch (error) {
      unfinished = { error };
    }
  }
  // The two are different generations: the prepare is rolled back even when
  // the erase could not be finished. A recycle on a slot that turned
  // read-only fails its erase half (EROFS on the rename), and its recovery
  // used to stop there, leaving the new generation's key in the kernel with
  // no target (DESIGN invariant 2); the rollback takes the key out first,
  // whatever fails after it.
  if (state.volume?.phase === 'preparing') {
    try {
      await rollBackPrepare(slot, state, options);
    } catch (error) {
      unfinished ??= { error };
    }
  }
  if (unfinished !== undefined) throw unfinished.error;
  return state;
}

export async function rollBackPrepare(slot: string, state: SlotState, options: HookOptions): Promise<SlotState> {
  const volume = state.volume!;
  const dir = volumePath(slot, volume.generation);
  await removeVolumeKey(slot, volume.identifier, removalOptions(dir, 'prepare', options));
  // Checked before anything is destroyed: a generation holding data is never
  // rolled back, whatever the state says (it may be an older copy).
  const keys = new SlotKeys(slot);
  const unfinished = await unfinishedGeneration(dir, volume.identifier, await keys.hasPolicy(volume.identifier));
  if (unfinished === 'holds-data') {
    throw new FscryptError(
      `refusing to roll back the prepare of ${volume.name} in slot '${slot}': the state says it was never finished, but ${dir} holds data. ` +
        'Its wrapped key and directory are kept. To fix: inspect the slot (the state may be an older copy after a damaged write); ' +
        'repair the slot state by hand, or move the directory out of the slot after saving its data',
      { code: 'ERR_BAD_METADATA', path: dir },
    );
  }
  if (unfinished === 'ours') await removeTree(dir);
  else if (unfinished === 'empty-plain') await rmdir(dir);
  else if (unfinished === 'foreign') emit(options, { hook: 'prepare', kind: 'note', message: `left ${dir} in place: it is not the generation this prepare made` });
  await keys.destroyPolicy(volume.identifier);
  state.volume = null;
  await writeSlotState(slot, state);
  return state;
}

/**
 * What sits where an interrupted prepare made its directory: nothing; one
 * with this generation's policy holding at most the probe file (it was never
 * published: rolled back); an empty plain one (made, policy not yet set);
 * one with this policy holding anything more (never rolled back); anything
 * else is not ours, and is left for an admin. The probe file is created and
 * deleted before the wrapped key is committed, so once the key is committed
 * (`committed`) any entry at all is data: a volume holding one small file
 * must not pass for a prepare interrupted at its probe.
 */
async function unfinishedGeneration(dir: string, identifier: string, committed: boolean): Promise<'absent' | 'ours' | 'empty-plain' | 'holds-data' | 'foreign'> {
  const stat = await lstatOrUndefined(dir);
  if (stat === undefined) return 'absent';
  if (!stat.isDirectory()) return 'foreign';
  const policy = await getPolicy(dir, { noFollow: true });
  const entries = await readdir(dir);
  if (policy === null) return entries.length === 0 ? 'empty-plain' : 'foreign';
  if (policy.version !== 2 || policy.identifier !== identifier) return 'foreign';
  if (entries.length === 0) return 'ours';
  if (entries.length > 1 || committed) return 'holds-data';
  // One entry, its name encrypted: the probe file is a regular file of at most its content's size.
  const probe = await lstat(join(dir, entries[0]!));
  return probe.isFile() && probe.size <= PROBE_FILE_SIZE ? 'ours' : 'holds-data';
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
  await step('erase:key-removed', options);
  const { trashDir } = slotPaths(slot);
  const trashed = join(trashDir, retiring.name);
  // Independent steps: the rename's fsyncs and the crypto-erase's share journal commits.
  const moved = (await moveToTrash(dir, trashed)) ? [fsyncDirectory(slot), fsyncDirectory(trashDir)] : [];
  await Promise.all([new SlotKeys(slot).destroyPolicy(retiring.identifier), ...moved]);
  await step('erase:policy-destroyed', options);
  await step('erase:moved-to-trash', options);
  return trashed;
}

/** retire(), then the slot state records it done, and the trash is queued for deletion. */
export async function finishRetiring(slot: string, state: SlotState, options: HookOptions): Promise<string> {
  const retiring = state.retiring!;
  const trashed = await retire(slot, retiring, options);
  delete state.retiring;
  state.lastErased = { generation: retiring.generation, identifier: retiring.identifier };
  await writeSlotState(slot, state);
  await step('erase:done', options);
  (options.trash ?? defaultTrash()).add(trashed);
  return trashed;
}

/**
 * A retried erase or recycle of `volume` that finds the erase already
 * recorded: queues the ciphertext for deletion if it is still in the trash.
 * The first call, killed between recording the erase (erase:done,
 * recycle:ready) and queueing the deletion, left it there, and nothing but a
 * reconcile would queue it. The path comes from the state, not the claim.
 */
export async function requeueErased(slot: string, state: SlotState, volume: { generation: number; identifier: string }, options: HookOptions): Promise<void> {
  const erased = state.lastErased;
  if (erased?.generation !== volume.generation || erased.identifier !== volume.identifier) return;
  const trashed = join(slotPaths(slot).trashDir, volumeName(erased.generation));
  if (await exists(trashed)) (options.trash ?? defaultTrash()).add(trashed);
}

// Every call goes through the thread pool (see durable-fs.ts).
async function moveToTrash(dir: string, trashed: string): Promise<boolean> {
  if (!(await exists(dir))) return false;
  await rename(dir, trashed);
  return true;
}

/** lstat, with a missing path as undefined (as lstatSync's throwIfNoEntry: false). */
async function lstatOrUndefined(path: string): Promise<Stats | undefined> {
  try {
    return await lstat(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

async function exists(path: string): Promise<boolean> {
  return (await lstatOrUndefined(path)) !== undefined;
}
