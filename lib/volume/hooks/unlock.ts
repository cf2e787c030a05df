// unlock: put a volume's key in the kernel and bind-mount the volume at a
// target (kubelet's NodePublishVolume); adminUnlock: put the key in without
// a target, for an admin. Targets are counted in the slot state, so lock
// knows when the last one goes.
//
// What is about to happen is recorded before the key goes in (a target, or
// the admin unlock), so a key in the kernel is always accounted for by the
// persisted state: a crash at any point leaves reconcile a record saying
// whether the key is ours to remove (DESIGN invariant 2), and a key no
// record accounts for (a break-glass `fscrypt unlock`) is left alone.
import { mkdir, realpath } from 'node:fs/promises';
import { dirname } from 'node:path';
import { FscryptError, isWithin } from '../../kernel/index.js';
import { wipe, type OpenProtector } from '../../keys/index.js';
import { step, type HookOptions, type Volume } from './hook-options.js';
import { currentRecord, stillPublished } from './current-volume.js';
import { addVolumeKey, removalOptions, removeVolumeKey } from './key-residency.js';
import { bindMount, isBindOf, mountAt } from '../mounts/mounts.js';
import { withVolumeLock } from './hook-lock.js';
import { readSlotState, writeSlotState, type SlotState, type TargetRecord, type VolumeRecord } from '../slot/slot-state.js';
import { verifyVolumeDirectory } from '../slot/verify.js';

export interface TargetOptions {
  /** Absolute path to bind-mount the volume at; created if missing (its parent must exist). */
  path: string;
  readonly?: boolean;
}

export interface UnlockResult {
  /** Targets the volume is published at after this call. */
  targets: number;
}

/**
 * Adds the volume's key and bind-mounts the volume at `target`. Idempotent
 * per target: the same target with the same readonly setting is success; with
 * the other setting, ERR_FOREIGN_MOUNT.
 */
export async function unlock(volume: Volume, protector: OpenProtector, target: TargetOptions, options: HookOptions = {}): Promise<UnlockResult> {
  if (typeof target !== 'object' || target === null || typeof target.path !== 'string' || !target.path.startsWith('/') || target.path.includes('\0')) {
    throw FscryptError.invalidArgument(
      `unlock needs a target { path: '/absolute/path' }, got ${JSON.stringify(target)}; to unlock without a target (an admin unlock), call adminUnlock`,
    );
  }
  if (target.readonly !== undefined && typeof target.readonly !== 'boolean') throw FscryptError.invalidArgument('target.readonly must be a boolean');
  const wanted: TargetRecord = { path: target.path, readonly: target.readonly === true };
  return withVolumeLock('unlock', volume, options, async () => {
    const state = await readSlotState(volume.slot);
    const record = await currentRecord(state, volume, 'unlock');
    await verifyVolumeDirectory(volume, 'unlock');
    await refuseTargetInSlot(volume, wanted.path);
    // A target that holds something else fails before anything changes.
    const alreadyPublished = await isBindOf(wanted.path, volume.path, { readonly: wanted.readonly });
    if (!alreadyPublished) await refuseForeignMount(wanted.path, record);

    const known = record.targets.find((t) => t.path === wanted.path);
    if (known?.readonly !== wanted.readonly || record.claimed !== true) {
      if (known) known.readonly = wanted.readonly;
      else record.targets.push(wanted);
      // A published generation may hold a tenant's data from now on (claim.ts).
      record.claimed = true;
      await writeSlotState(volume.slot, state);
      await step('unlock:target-recorded', options);
    }
    try {
      await addKey(volume, protector);
      await step('unlock:key-added', options);
      if (!alreadyPublished) {
        await mkdirTarget(wanted.path);
        await bindMount(volume.path, wanted.path, { readonly: wanted.readonly });
        await step('unlock:mounted', options);
      }
    } catch (error) {
      await rollBackTarget(volume, state, record, wanted.path, options).catch(() => undefined);
      throw error;
    }
    return { targets: record.targets.length };
  });
}

/**
 * Adds the volume's key with no target: an explicit admin unlock, which lock
 * and reconcile leave alone until an explicit adminLock.
 */
export async function adminUnlock(volume: Volume, protector: OpenProtector, options: HookOptions = {}): Promise<UnlockResult> {
  return withVolumeLock('admin-unlock', volume, options, async () => {
    const state = await readSlotState(volume.slot);
    const record = await currentRecord(state, volume, 'unlock');
    await verifyVolumeDirectory(volume, 'unlock');
    const recorded = !record.adminUnlocked;
    if (recorded) {
      record.adminUnlocked = true;
      await writeSlotState(volume.slot, state);
      await step('admin-unlock:recorded', options);
    }
    try {
      await addKey(volume, protector);
      await step('admin-unlock:key-added', options);
    } catch (error) {
      if (recorded) {
        record.adminUnlocked = false;
        await writeSlotState(volume.slot, state).catch(() => undefined);
      }
      throw error;
    }
    return { targets: record.targets.length };
  });
}

async function addKey(volume: Volume, protector: OpenProtector): Promise<void> {
  const key = await protector.unwrapPolicyKey(volume.identifier);
  try {
    await addVolumeKey(volume.slot, key, volume.identifier);
  } finally {
    wipe(key);
  }
}

/**
 * A publish that failed: forget the target unless it is mounted after all,
 * and take the key back out unless something still uses it, following what
 * the state says. If this fails too, reconcile does it from the same record.
 */
async function rollBackTarget(volume: Volume, state: SlotState, record: VolumeRecord, target: string, options: HookOptions): Promise<void> {
  const published = await stillPublished(volume, record.targets);
  if (!published.some((t) => t.path === target)) {
    if (published.length === 0 && !record.adminUnlocked) await removeVolumeKey(volume.slot, volume.identifier, removalOptions(volume.path, 'unlock', options));
    record.targets = record.targets.filter((t) => t.path !== target);
    await writeSlotState(volume.slot, state);
  }
}

/** A target inside the slot (the volume itself, the trash, the metadata) would expose or loop the slot. */
async function refuseTargetInSlot(volume: Volume, target: string): Promise<void> {
  let parent: string;
  try {
    parent = await realpath(dirname(target));
  } catch {
    return; // no parent: the mount fails with its own message
  }
  const resolved = `${parent}/${target.slice(target.lastIndexOf('/') + 1)}`;
  if (isWithin(resolved, volume.slot)) {
    throw FscryptError.invalidArgument(`the target '${target}' lies inside the slot '${volume.slot}'; publish the volume outside its slot`, target);
  }
}

async function refuseForeignMount(target: string, record: VolumeRecord): Promise<void> {
  const mounted = await mountAt(target);
  if (!mounted) return;
  const known = record.targets.find((t) => t.path === target);
  throw new FscryptError(
    `'${target}' already has a different mount (${mounted.source} ${mounted.root}${known ? `, or this volume with readonly=${known.readonly}` : ''}); unmount it first`,
    { code: 'ERR_FOREIGN_MOUNT', path: target },
  );
}

/**
 * Creates the target directory (CSI: the plugin creates it; its parent
 * exists). Not on a slot, but through the pool all the same: kubelet's
 * filesystem can stall too.
 */
async function mkdirTarget(target: string): Promise<void> {
  try {
    await mkdir(target, { mode: 0o750 });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
}
