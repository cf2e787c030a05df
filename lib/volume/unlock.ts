// unlock: put a volume's key in the kernel, and optionally bind-mount the
// volume at a target (kubelet's NodePublishVolume). Targets are counted in
// the slot state, so lock knows when the last one goes.
import { lstat, mkdir } from 'node:fs/promises';
import { defaultPolicy, FscryptError, getPolicy, samePolicy } from '../kernel/index.js';
import { wipe, type OpenProtector } from '../keys/index.js';
import { step, type HookOptions, type Volume } from './hook-options.js';
import { addVolumeKey, removalOptions, removeVolumeKey } from './key-residency.js';
import { bindMount, isBindOf, mountAt } from './mounts.js';
import { withSlotLock } from './slot-lock.js';
import { readSlotState, writeSlotState, type SlotState, type VolumeRecord } from './slot-state.js';

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
  return withSlotLock(
    volume.slot,
    async () => {
      const state = await readSlotState(volume.slot);
      const record = currentRecord(state, volume, 'unlock');
      await verifyVolumeDirectory(volume);

      const key = await protector.unwrapPolicyKey(volume.identifier);
      try {
        await addVolumeKey(volume.slot, key, volume.identifier);
      } finally {
        wipe(key);
      }
      await step('unlock', 'key-added', options);

      if (target === undefined) {
        record.adminUnlocked = true;
        await writeSlotState(volume.slot, state);
        return { targets: record.targets.length };
      }
      await publish(volume, state, record, { path: target.path, readonly: target.readonly === true }, options);
      return { targets: record.targets.length };
    },
    options.lockTimeoutMs === undefined ? {} : { timeoutMs: options.lockTimeoutMs },
  );
}

async function publish(volume: Volume, state: SlotState, record: VolumeRecord, target: { path: string; readonly: boolean }, options: HookOptions): Promise<void> {
  const known = record.targets.find((t) => t.path === target.path);
  if (await isBindOf(target.path, volume.path, { readonly: target.readonly })) {
    if (!known) {
      record.targets.push(target);
      await writeSlotState(volume.slot, state);
    }
    return; // already published here, as asked
  }
  const mounted = await mountAt(target.path);
  if (mounted) {
    throw new FscryptError(
      `'${target.path}' already has a different mount (${mounted.source} ${mounted.root}${known && known.readonly !== target.readonly ? `, readonly=${known.readonly}` : ''}); unmount it first`,
      { code: 'EEXIST', path: target.path },
    );
  }
  // Record the target before mounting, so a crash in between is seen by reconcile.
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
    if (record.targets.length === 0 && !record.adminUnlocked) {
      await removeVolumeKey(volume.slot, volume.identifier, removalOptions(volume.path, 'unlock', options)).catch(() => undefined);
    }
    throw error;
  }
  await step('unlock', 'mounted', options);
}

/** The state record of `volume`, which must be the slot's current, ready volume. */
export function currentRecord(state: SlotState, volume: Volume, hook: string): VolumeRecord {
  const record = state.volume;
  if (!record || record.generation !== volume.generation || record.identifier !== volume.identifier) {
    throw new FscryptError(`cannot ${hook} ${volume.path}: it is not the current volume of slot '${volume.slot}' (erased or replaced)`, {
      code: 'ENOENT',
      path: volume.path,
    });
  }
  if (record.phase !== 'ready') {
    throw new FscryptError(`cannot ${hook} ${volume.path}: the volume is ${record.phase}. To fix: run \`fscrypt-local reconcile ${volume.slot}\``, {
      code: 'ERR_STATE',
      path: volume.path,
    });
  }
  return record;
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
