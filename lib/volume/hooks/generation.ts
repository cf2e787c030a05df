// Building a new generation, once its intent is recorded: add the fresh key,
// create the directory, set the policy, create and delete a probe file
// (catches algorithms the kernel accepts at set time but cannot run),
// verify with GET_POLICY_EX, commit the wrapped key to .fscrypt/policies,
// remove the key. Shared by prepare and recycle, which differ only in what
// they record around it. The directory and probe-file calls go through the
// thread pool, like every call on a slot's filesystem (see durable-fs.ts).
import { chmod, mkdir, open, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { defaultPolicy, FscryptError, getPolicy, samePolicy, setPolicy } from '../../kernel/index.js';
import { newPolicyKey, type OpenProtector } from '../../keys/index.js';
// Not lib/kernel's keyIdentifier: crypto.hkdfSync keeps a copy of the key in a
// KeyObject until GC; this HMAC-based HKDF leaves none (lib/keys/hkdf.ts).
import { policyKeyIdentifier } from '../../keys/hkdf.js';
import { step, type HookOptions } from './hook-options.js';
import { addVolumeKey, removalOptions, removeVolumeKey } from './key-residency.js';
import { volumeName, volumePath } from '../slot/slot-layout.js';
import type { SlotState, VolumeRecord } from '../slot/slot-state.js';

const PROBE_FILE = '.fscrypt-local-probe';
const PROBE_CONTENT = 'fscrypt-local probe';
/** The size of the probe file when written: what a rollback may find in an unfinished generation. */
export const PROBE_FILE_SIZE = PROBE_CONTENT.length;

export interface GenerationOptions extends HookOptions {
  /** Mode of the new volume directory (default 0o755; kubelet applies fsGroup on publish). */
  mode?: number;
}

/** Refuses a mode that is not permission bits (before anything changes). */
export function checkMode(options: GenerationOptions): void {
  const { mode } = options;
  if (mode !== undefined && (!Number.isInteger(mode) || mode < 0 || mode > 0o7777)) {
    throw FscryptError.invalidArgument(`the volume directory mode must be an integer from 0 to 0o7777, got ${String(mode)}`);
  }
}

/**
 * The next generation's record (phase `preparing`) and its fresh policy key,
 * which the caller wipes. Advances the state's generation counter; the
 * caller records the state before building.
 */
export function startGeneration(state: SlotState): { record: VolumeRecord; key: Buffer } {
  const generation = state.nextGeneration;
  const key = newPolicyKey();
  const record: VolumeRecord = {
    generation,
    name: volumeName(generation),
    identifier: policyKeyIdentifier(key),
    phase: 'preparing',
    targets: [],
    adminUnlocked: false,
    createdAt: new Date().toISOString(),
  };
  state.volume = record;
  state.nextGeneration = generation + 1;
  return { record, key };
}

/** Builds the recorded generation's encrypted, verified, locked directory and commits its wrapped key. */
export async function buildGeneration(slot: string, record: VolumeRecord, key: Uint8Array, protector: OpenProtector, options: GenerationOptions): Promise<void> {
  const dir = volumePath(slot, record.generation);
  await addVolumeKey(slot, key, record.identifier);
  await step('prepare:key-added', options);

  try {
    await mkdir(dir, { mode: 0o700 });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    throw new FscryptError(`${dir} already exists, but the slot state does not know it; refusing to touch it. Move it out of the slot, then prepare again`, {
      code: 'ERR_FOREIGN_ENTRY',
      path: dir,
    });
  }
  // Exactly the mode asked for: mkdir's mode is narrowed by the umask.
  await chmod(dir, options.mode ?? 0o755);
  await step('prepare:dir-created', options);

  const policy = defaultPolicy(record.identifier);
  await setPolicy(dir, policy, { noFollow: true });
  await step('prepare:policy-set', options);

  await checkProbeFile(dir);
  await step('prepare:probe-file-checked', options);

  const actual = await getPolicy(dir, { noFollow: true });
  if (actual === null || !samePolicy(actual, policy)) {
    throw new FscryptError(`the policy read back from ${dir} is not the one set; refusing to use it`, { code: 'ERR_UNSAFE_PATH', path: dir });
  }
  await step('prepare:policy-verified', options);

  // Independent (a crash between them leaves either order, which recovery
  // handles), and each waits for a journal commit (the metadata's fsyncs;
  // REMOVE_KEY syncs the filesystem): together they can share one. Less
  // often than when the metadata calls were synchronous: the temp file now
  // exists only a few pool round trips in, when REMOVE_KEY's commit may
  // already be under way.
  await Promise.all([protector.addPolicy(key), removeVolumeKey(slot, record.identifier, removalOptions(dir, 'prepare', options))]);
  await step('prepare:metadata-committed', options);
  await step('prepare:key-removed', options);
}

/**
 * The kernel accepts policies whose algorithms it has not built; the first
 * create then fails (ENOPKG). Find out now, not in a tenant's pod.
 */
async function checkProbeFile(dir: string): Promise<void> {
  const probe = join(dir, PROBE_FILE);
  try {
    const handle = await open(probe, 'wx', 0o600);
    try {
      await handle.write(PROBE_CONTENT);
    } finally {
      await handle.close();
    }
    await unlink(probe);
  } catch (error) {
    const errno = (error as NodeJS.ErrnoException).errno;
    if (errno === -65) {
      throw new FscryptError(`the kernel cannot run this volume's encryption algorithms (ENOPKG creating a file in ${dir}; dmesg says "Missing crypto API support")`, {
        code: 'ERR_NOT_SUPPORTED',
        path: dir,
        cause: error,
      });
    }
    throw error;
  }
}
