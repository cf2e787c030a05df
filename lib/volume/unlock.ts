// unlock: put a volume's key in the kernel, and optionally bind-mount the
// volume at a target (kubelet's NodePublishVolume). Targets are counted in
// the slot state, so lock knows when the last one goes.
import { lstat, mkdir } from 'node:fs/promises';
import { defaultPolicy, FscryptError, getPolicy, samePolicy } from '../kernel/index.js';
import { wipe, type OpenProtector } from '../keys/index.js';
import { step, type HookOptions, type Volume } from './hook-options.js';
import { currentRecord, stillPublished } from './current-volume.js';
import { addVolumeKey, removalOptions, removeVolumeKey } from './key-residency.js';
import { bindMount, isBindOf, mountAt } from './mounts.js';
import { withVolumeLock } from './hook-lock.js';
import { readSlotState, writeSlotState, type SlotState, type TargetRecord, type VolumeRecord } from './slot-state.js';

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
 * Adds the volume's key and, with a target, bind-mounts the volume there.
 * Idempotent per target. Without a target this is an explicit admin unlock,
 * which lock and reconcile leave alone until an explicit lock.
 */
export async function unlock(volume: Volume, protector: OpenProtector, target?: TargetOptions, options: HookOptions = {}): Promise<UnlockResult> {
  if (target !== undefined && (typeof target.path !== 'string' || !target.path.startsWith('/'))) {
    throw FscryptError.invalidArgument(`the target must be an absolute path, got ${JSON.stringify(target.path)}`);
  }
  const wanted = target === undefined ? undefined : { path: target.path, readonly: target.readonly === true };
  return withVolumeLock(volume, options, async () => {
    const state = await readSlotState(volume.slot);
    const record = await currentRecord(state, volume, 'unlock');
    await verifyVolumeDirectory(volume);
    // A target that holds something else fails before any key is added.
    const alreadyPublished = wanted !== undefined && (await isBindOf(wanted.path, volume.path, { readonly: wanted.readonly }));
    if (wanted !== undefined && !alreadyPublished) await refuseForeignMount(wanted.path, record);

    const key = await protector.unwrapPolicyKey(volume.identifier);
    try {
      await addVolumeKey(volume.slot, key, volume.identifier);
    } finally {
      wipe(key);
    }
    await step('unlock', 'key-added', options);

    try {
      if (wanted === undefined) {
        record.adminUnlocked = true;
        await writeSlotState(volume.slot, state);
      } else if (alreadyPublished) {
        if (!record.targets.some((t) => t.path === wanted.path)) {
          record.targets.push(wanted);
          await writeSlotState(volume.slot, state);
        }
      } else {
        await publish(volume, state, record, wanted, options);
      }
    } catch (error) {
      // The key goes back out unless something still uses it (invariant 2).
      if (!record.adminUnlocked && (await stillPublished(volume, record.targets).catch(() => [])).length === 0) {
        await removeVolumeKey(volume.slot, volume.identifier, removalOptions(volume.path, 'unlock', options)).catch(() => undefined);
      }
      throw error;
    }
    return { targets: record.targets.length };
  });
}

async function refuseForeignMount(target: string, record: VolumeRecord): Promise<void> {
  const mounted = await mountAt(target);
  if (!mounted) return;
  const known = record.targets.find((t) => t.path === target);
  throw new FscryptError(
    `'${target}' already has a different mount (${mounted.source} ${mounted.root}${known ? `, or this volume with readonly=${known.readonly}` : ''}); unmount it first`,
    { code: 'EEXIST', path: target },
  );
}

/** Records the target, then bind-mounts the volume there; a failed mount forgets the target again. */
async function publish(volume: Volume, state: SlotState, record: VolumeRecord, target: TargetRecord, options: HookOptions): Promise<void> {
  // Record the target before mounting, so a crash in between is seen by reconcile.
  const known = record.targets.find((t) => t.path === target.path);
  if (!known) record.targets.push(target);
  else known.readonly = target.readonly;
  await writeSlotState(volume.slot, state);
  await step('unlock', 'target-recorded', options);
  try {
    await mkdir(target.path, { mode: 0o750 }).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== 'EEXIST') throw error;
    });
    await bindMount(volume.path, target.path, { readonly: target.readonly });
  } catch (error) {
    record.targets = record.targets.filter((t) => t.path !== target.path);
    await writeSlotState(volume.slot, state);
    throw error;
  }
  await step('unlock', 'mounted', options);
}

/**
 * Refuses to hand out a directory that is not exactly the encrypted volume
 * the metadata describes (a missing mount or a replaced directory would
 * otherwise give a pod plaintext storage).
 */
async function verifyVolumeDirectory(volume: Volume): Promise<void> {
  const stat = await lstat(volume.path).catch(() => undefined);
  if (!stat?.isDirectory()) {
    throw new FscryptError(`refusing to unlock ${volume.path}: it is ${stat ? 'not a directory (a symlink?)' : 'missing'}. Is the slot's disk mounted?`, {
      code: 'ERR_UNSAFE_PATH',
      path: volume.path,
    });
  }
  const policy = await getPolicy(volume.path);
  if (policy === null || !samePolicy(policy, defaultPolicy(volume.identifier))) {
    throw new FscryptError(`refusing to unlock ${volume.path}: its encryption policy is ${policy === null ? 'missing' : 'not the one the metadata records'}`, {
      code: 'ERR_UNSAFE_PATH',
      path: volume.path,
    });
  }
}
