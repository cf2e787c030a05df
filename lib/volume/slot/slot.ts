// Slots: initialising one, opening its protector, finding the volume a path
// names, and describing a slot's state for `status`.
import { lstat, mkdir, readdir, realpath } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import { FscryptError, getKeyStatus, isFscryptError, probe, type KeyStatus } from '../../kernel/index.js';
import { setRotationStepHook, SlotKeys, type KeySourceSpec, type OpenProtector, type ProtectorInfo } from '../../keys/index.js';
import { asHookError } from '../hooks/hook-lock.js';
import { step, type HookOptions, type Volume } from '../hooks/hook-options.js';
import { isMountPoint } from '../mounts/mounts-location.js';
import { findBlockers, type Blocker } from '../mounts/blockers.js';
import { isBindOf } from '../mounts/mounts.js';
import { volumeDirectoryProblem } from './verify.js';
import { parseVolumeName, slotPaths, volumePath, VOLUME_NAME_PATTERN } from './slot-layout.js';
import { readSlotState, writeSlotState, type ReadStateOptions, type SlotState, type VolumePhase } from './slot-state.js';
import { withSlotLock, withSlotLockIfFree } from './slot-lock.js';

// The protector kind each key source makes.
const PROTECTOR_KIND = { file: 'raw_key', passphrase: 'custom_passphrase', kms: 'kms' } as const satisfies Record<KeySourceSpec['kind'], ProtectorInfo['source']>;

export interface InitSlotOptions extends Pick<HookOptions, 'onStep' | 'onProgress' | 'signal' | 'lockTimeoutMs'> {
  /** Protector name shown by `fscrypt status` (default "fscrypt-local"). */
  name?: string;
}

export interface SlotInfo {
  root: string;
  protector: string;
  created: boolean;
}

/**
 * Makes a directory on an encrypt-capable filesystem a slot: creates its
 * protector under the key source and its state. Idempotent: an initialised
 * slot whose protector opens with the same source is left as it is.
 */
export async function initSlot(root: string, source: KeySourceSpec, options: InitSlotOptions = {}): Promise<SlotInfo> {
  return asHookError(async () => {
    const slot = await slotRoot(root, { mounted: false });
    const support = await probe(slot);
    if (!support.supported) {
      throw new FscryptError(`cannot use '${slot}' as a slot: ${support.reason}. To fix: ${support.remedy}`, { code: 'ERR_NOT_SUPPORTED', path: slot });
    }
    await checkMountPoint(slot);
    const paths = slotPaths(slot);
    await mkdir(paths.stateDir, { mode: 0o700, recursive: true });
    await mkdir(paths.trashDir, { mode: 0o700, recursive: true });
    await step('init-slot:dirs-created', options);
    return withSlotLock(slot, () => initLocked(slot, source, options), lockOptions(options));
  });
}

async function initLocked(slot: string, source: KeySourceSpec, options: InitSlotOptions): Promise<SlotInfo> {
  const keys = new SlotKeys(slot);
  const existing = await readSlotState(slot).catch((error: unknown) => {
    if (isFscryptError(error, 'ERR_NOT_INITIALIZED')) return undefined;
    throw error;
  });
  if (existing) {
    (await keys.openProtector(source, existing.protector)).close(); // proves the source fits
    return { root: slot, protector: existing.protector, created: false };
  }
  // A crash between creating the protector and writing the state leaves a
  // protector of this kind: adopt it (opening it proves the source fits)
  // rather than making a second one. Two or more is for an admin to sort out.
  const kind = PROTECTOR_KIND[source.kind];
  const candidates = (await keys.listProtectors()).filter((p) => p.source === kind);
  if (candidates.length > 1) {
    throw new FscryptError(
      `slot '${slot}' has no state but ${candidates.length} ${kind} protectors (${candidates.map((p) => p.descriptor).join(', ')}); remove the unused ones, then run init-slot again`,
      { code: 'ERR_BAD_METADATA', path: slot },
    );
  }
  let descriptor: string;
  if (candidates.length === 1) {
    const open = await keys.openProtector(source, candidates[0]!.descriptor);
    descriptor = open.descriptor;
    open.close();
  } else {
    descriptor = (await keys.createProtector(source, { name: options.name ?? 'fscrypt-local' })).descriptor;
  }
  await step('init-slot:protector-created', options);
  await writeSlotState(slot, { version: 1, protector: descriptor, nextGeneration: (await highestGeneration(slot)) + 1, volume: null });
  await step('init-slot:state-written', options);
  return { root: slot, protector: descriptor, created: true };
}

function lockOptions(options: Pick<HookOptions, 'signal' | 'lockTimeoutMs'>): { timeoutMs?: number; signal?: AbortSignal } {
  return {
    ...(options.lockTimeoutMs === undefined ? {} : { timeoutMs: options.lockTimeoutMs }),
    ...(options.signal === undefined ? {} : { signal: options.signal }),
  };
}

/**
 * The highest generation on disk, in the slot or its trash. A slot whose
 * state was lost and initialised again must never reuse a name: prepare
 * would meet a directory it does not know.
 */
async function highestGeneration(slot: string): Promise<number> {
  const [entries, trash] = await Promise.all([readdir(slot), readdir(slotPaths(slot).trashDir).catch(() => [])]);
  let highest = 0;
  for (const name of [...entries, ...trash]) {
    const match = VOLUME_NAME_PATTERN.exec(name);
    if (match) highest = Math.max(highest, Number(match[1]));
  }
  return highest;
}

/**
 * Opens the slot's protector with a key source: the handle prepare and unlock
 * need. `usePreviousState` takes the descriptor from the previous copy of a
 * damaged slot state, for `reconcile --use-previous-state` (the protector
 * never changes, and the source must open it either way).
 */
export async function openSlotProtector(root: string, source: KeySourceSpec, options: ReadStateOptions = {}): Promise<OpenProtector> {
  return asHookError(async () => {
    const slot = await slotRoot(root);
    const state = await readSlotState(slot, options.usePreviousState ? { usePreviousState: true } : {});
    return new SlotKeys(slot).openProtector(source, state.protector);
  });
}

export interface RotateOptions extends Pick<HookOptions, 'signal' | 'lockTimeoutMs'> {
  /** Called after each durable step of the rotation ('rotate:<step>'), as HookOptions.onStep. */
  onStep?(step: string): void | Promise<void>;
}

/**
 * Moves the slot's protector to a new key source: P is rewrapped, no volume
 * key or data is touched. Holds the slot lock, so no hook opens the
 * protector half-way through; lib/keys makes the rotation itself crash-safe.
 * Idempotent: when the old source no longer opens the protector but the new
 * one does, the rotation is already done and its result is returned.
 */
export async function rotateKeySource(root: string, oldSource: KeySourceSpec, newSource: KeySourceSpec, options: RotateOptions = {}): Promise<ProtectorInfo> {
  return asHookError(async () => {
    const slot = await slotRoot(root);
    return withSlotLock(
      slot,
      async () => {
        const state = await readSlotState(slot);
        const keys = new SlotKeys(slot);
        let info: ProtectorInfo;
        setRotationStepHook(options.onStep === undefined ? undefined : async (name) => {
          try {
            await options.onStep!(`rotate:${name}`);
          } catch {
            // An observer never breaks the rotation.
          }
        });
        try {
          info = await keys.rotate(oldSource, newSource, state.protector);
        } catch (error) {
          if (!isFscryptError(error, 'ERR_WRONG_KEY', 'ERR_KEY_SOURCE')) throw error;
          // Already rotated (a retry after a crash or a lost reply)?
          const done = await keys.openProtector(newSource, state.protector).catch(() => undefined);
          if (done === undefined) throw error;
          done.close();
          return (await keys.listProtectors()).find((p) => p.descriptor === state.protector)!;
        } finally {
          setRotationStepHook(undefined);
        }
        if (info.descriptor !== state.protector) {
          throw new FscryptError(`rotation gave protector ${info.descriptor}, but the slot's state names ${state.protector}; the slot cannot be opened until this is repaired`, {
            code: 'ERR_BAD_METADATA',
            path: slot,
          });
        }
        return info;
      },
      lockOptions(options),
    );
  });
}

/**
 * The real path of a slot root: a directory (never a symlink) that is a
 * mount point (DESIGN: a slot is the root of its own filesystem; the stock
 * tool's break-glass looks for .fscrypt only there). `mounted: false` skips
 * the mount-point check, for initSlot to probe first.
 */
export async function slotRoot(root: string, check: { mounted?: boolean } = {}): Promise<string> {
  if (typeof root !== 'string' || !root.startsWith('/') || root.includes('\0')) {
    throw FscryptError.invalidArgument(`a slot must be an absolute path, got ${JSON.stringify(root)}`);
  }
  // Through the pool, as every call on a slot (see durable-fs.ts). lstat and
  // realpath are lookups and go together; the lstat is judged first, and the
  // realpath (which follows a symlink) is only used once the root is known
  // to be a directory, as when it was only called then.
  const [stat, real] = await Promise.allSettled([lstat(root), realpath(root)]);
  if (stat!.status === 'rejected') {
    if ((stat!.reason as NodeJS.ErrnoException).code === 'ENOENT') throw new FscryptError(`slot '${root}' does not exist`, { code: 'ENOENT', path: root });
    throw stat!.reason;
  }
  if (!stat!.value.isDirectory()) {
    throw new FscryptError(`'${root}' is not a directory (a slot root is never a symlink)`, { code: 'ERR_UNSAFE_PATH', path: root });
  }
  if (real!.status === 'rejected') throw real!.reason;
  if (check.mounted !== false) await checkMountPoint(real!.value);
  return real!.value;
}

async function checkMountPoint(slot: string): Promise<void> {
  if (await isMountPoint(slot)) return;
  throw new FscryptError(
    `'${slot}' is not a mount point: a slot is the root of a filesystem of its own (an unmounted disk must never become a volume). ` +
      `To fix: mount the slot's disk at ${slot}. If its disk was unmounted while a volume was published, lock that volume's targets: the key goes with the filesystem`,
    { code: 'ERR_NOT_MOUNTPOINT', path: slot },
  );
}

/** True if `dir` holds a slot's state file (a regular file; never followed through a symlink). */
export async function isSlot(dir: string): Promise<boolean> {
  return lstat(slotPaths(dir).stateFile).then(
    (stat) => stat.isFile(),
    () => false,
  );
}

export function volumeOf(slot: string, state: SlotState): Volume | undefined {
  const v = state.volume;
  if (!v) return undefined;
  return { slot, name: v.name, path: volumePath(slot, v.generation), generation: v.generation, identifier: v.identifier };
}

/**
 * The volume a path names: a slot root (its current volume) or a volume
 * directory vol-<n> directly inside a slot.
 */
export async function resolveVolume(path: string): Promise<Volume> {
  return asHookError(async () => {
    if (typeof path !== 'string' || path.length === 0 || path.includes('\0')) throw FscryptError.invalidArgument(`a volume path must be a path, got ${JSON.stringify(path)}`);
    const absolute = path.startsWith('/') ? path : `${process.cwd()}/${path}`;
    const candidate = await realpath(absolute);
    // A slot is a mount point; a volume directory never is (it is a directory of the slot's filesystem).
    let candidateIsSlot = (await isMountPoint(candidate)) || (await isSlot(candidate));
    if (!candidateIsSlot && !VOLUME_NAME_PATTERN.test(basename(candidate))) {
      // Not named like a volume: inside a slot, a bad volume name; anywhere else it is meant as a
      // slot, and slotRoot says what is wrong with it (a slot whose disk is not mounted, say).
      if (await isSlot(dirname(candidate))) parseVolumeName(basename(candidate));
      candidateIsSlot = true;
    }
    const slot = await slotRoot(candidateIsSlot ? candidate : dirname(candidate));
    const state = await readSlotState(slot);
    const volume = volumeOf(slot, state);
    if (!candidateIsSlot && volume?.name !== basename(candidate)) {
      throw new FscryptError(`'${candidate}' is not the current volume of slot '${slot}' (that is ${volume?.name ?? 'none'})`, { code: 'ERR_NOT_CURRENT', path: candidate });
    }
    if (!volume) {
      throw new FscryptError(`slot '${slot}' has no volume. To fix: run \`fscrypt-local prepare ${slot} --key-source ...\``, { code: 'ERR_NO_VOLUME', path: slot });
    }
    return volume;
  });
}

export interface SlotStatus {
  root: string;
  protector: string;
  volume: null | {
    name: string;
    path: string;
    generation: number;
    identifier: string;
    phase: VolumePhase;
    key: KeyStatus['status'];
    adminUnlocked: boolean;
    /** Handed to a tenant: never offered again (claim.ts). */
    claimed: boolean;
    targets: { path: string; readonly: boolean; mounted: boolean }[];
    /** What is wrong with the volume directory (missing, replaced, unencrypted); absent when it is verified. */
    problem?: string;
    /**
     * The key is still in the kernel with no target mounted and no admin
     * unlock: a lock waiting for busy files (e.g. an unpublish the CSI
     * service keeps retrying), with whoever holds them.
     */
    pendingLock?: { blockers: Blocker[] };
  };
  /** A generation whose erase was decided but not finished (reconcile finishes it). */
  retiring: string | null;
  /** Retired generations still being deleted. */
  trash: string[];
  /** Directories in the slot that look like volumes but are not the current one. */
  strayVolumes: string[];
  /** Why the slot's key metadata would not unlock (a missing, damaged or foreign file), checked without the key source. */
  metadataProblems: string[];
}

/** vol-<n> directories in the slot that are not its current volume (left for an admin, never touched). */
export async function strayVolumes(slot: string, state: SlotState): Promise<string[]> {
  const current = state.volume?.name;
  return (await readdir(slot)).filter((name) => VOLUME_NAME_PATTERN.test(name) && name !== current).sort();
}

export async function slotStatus(root: string): Promise<SlotStatus> {
  return asHookError(async () => statusOf(await slotRoot(root)));
}

export interface IdleStatusOptions {
  /** Told the status before the slot is let go, and awaited (a test holds the read open here). What it throws is ignored. */
  whileHeld?(status: SlotStatus): void | Promise<void>;
}

/**
 * slotStatus for a reader that must never overlap a hook (the agent's
 * census): read holding the slot's lock, taken only if free; undefined,
 * at once, when a hook holds the slot or waits for it. The status opens the
 * volume directory (GET_POLICY needs an fd), and an fd open on it during a
 * lock's REMOVE_KEY leaves the key incompletely removed (FILES_BUSY) until
 * a retry: invariant 2 broken by a read for metrics. Checking "no hook
 * running" and then reading would leave a window for a hook to start in;
 * holding the lock closes it, and a hook that comes meanwhile waits for
 * one status read (milliseconds) in the slot's queue, within its own lock
 * timeout even if the disk hangs under that read.
 */
export async function slotStatusIfIdle(root: string, options: IdleStatusOptions = {}): Promise<SlotStatus | undefined> {
  return asHookError(async () => {
    const slot = await slotRoot(root);
    const held = await withSlotLockIfFree(slot, async () => {
      const status = await statusOf(slot);
      try {
        await options.whileHeld?.(status);
      } catch {
        // An observer watches; it never decides.
      }
      return status;
    });
    return held?.value;
  });
}

/**
 * slotStatus for a reader that must never overlap a hook but should wait
 * for one (CSI NodeGetVolumeStats: kubelet's stats collector runs beside
 * its publishes and unpublishes): read holding the slot's lock as a reader
 * (nothing written), after the hook that holds it, up to `timeoutMs` (the
 * lock's own default, a hook's 60 s, when not given);
 * ERR_SLOT_LOCKED past that (a hook stuck on a hung disk), naming the holder.
 * Why it must not overlap: see slotStatusIfIdle.
 */
export async function slotStatusBetweenHooks(root: string, options: { timeoutMs?: number } = {}): Promise<SlotStatus> {
  return asHookError(async () => {
    const slot = await slotRoot(root);
    return withSlotLock(slot, () => statusOf(slot), { ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }), read: true });
  });
}

async function statusOf(slot: string): Promise<SlotStatus> {
  const state = await readSlotState(slot);
  const v = state.volume;
  const [trash, strays, problems] = await Promise.all([
    readdir(slotPaths(slot).trashDir).catch(() => []),
    strayVolumes(slot, state),
    new SlotKeys(slot).check(state.protector, v ? [v.identifier] : []),
  ]);
  const status: SlotStatus = {
    root: slot,
    protector: state.protector,
    volume: null,
    retiring: state.retiring?.name ?? null,
    trash: trash.sort(),
    strayVolumes: strays,
    metadataProblems: problems.map((p) => p.message),
  };
  if (v) {
    const path = volumePath(slot, v.generation);
    status.volume = {
      name: v.name,
      path,
      generation: v.generation,
      identifier: v.identifier,
      phase: v.phase,
      key: (await getKeyStatus(slot, v.identifier)).status,
      adminUnlocked: v.adminUnlocked,
      claimed: v.claimed === true,
      targets: await Promise.all(v.targets.map(async (t) => ({ ...t, mounted: await isBindOf(t.path, path, { readonly: t.readonly }) }))),
    };
    const problem = v.phase === 'ready' ? await volumeDirectoryProblem({ path, identifier: v.identifier }) : undefined;
    if (problem !== undefined) status.volume.problem = problem;
    if (status.volume.key !== 'absent' && !v.adminUnlocked && !status.volume.targets.some((t) => t.mounted)) {
      status.volume.pendingLock = { blockers: await findBlockers(path).catch(() => []) };
    }
  }
  return status;
}
