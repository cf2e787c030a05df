// prepare: a new generation for a slot, encrypted under a fresh key, and
// verified before anyone may use it (DESIGN invariant 1: no PV for a
// directory whose policy was not verified after it was set).
//
// Steps, each durable before the next: record the intent (so a crash is
// rolled back by reconcile), add the new key, create the directory, set the
// policy, create and delete a probe file (catches algorithms the kernel
// accepts at set time but cannot run), verify with GET_POLICY_EX, commit the
// wrapped key to .fscrypt/policies, remove the key, mark the volume ready.
import { mkdir, open, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { defaultPolicy, FscryptError, getPolicy, keyIdentifier, samePolicy, setPolicy } from '../kernel/index.js';
import { newPolicyKey, wipe, type OpenProtector } from '../keys/index.js';
import { step, type HookOptions, type Volume } from './hook-options.js';
import { addVolumeKey, removalOptions, removeVolumeKey } from './key-residency.js';
import { recoverInterrupted, rollBackPrepare } from './recovery.js';
import { volumeName, volumePath } from './slot-layout.js';
import { withSlotLock } from './slot-lock.js';
import { readSlotState, writeSlotState } from './slot-state.js';
import { slotRoot, volumeOf } from './slot.js';

const PROBE_FILE = '.fscrypt-local-probe';

export interface PrepareOptions extends HookOptions {
  /** Mode of the new volume directory (default 0o755; kubelet applies fsGroup on publish). */
  mode?: number;
}

/**
 * Gives the slot a ready, verified, locked volume. Idempotent: a slot whose
 * volume is already ready returns that volume; an interrupted prepare or
 * erase is first finished or rolled back.
 */
export async function prepare(root: string, protector: OpenProtector, options: PrepareOptions = {}): Promise<Volume> {
  const slot = await slotRoot(root);
  return withSlotLock(
    slot,
    async () => {
      let state = await readSlotState(slot);
      if (state.volume?.phase === 'ready') return volumeOf(slot, state)!;
      if (state.volume) state = await recoverInterrupted(slot, state, options);
      if (protector.descriptor !== state.protector) {
        throw new FscryptError(`the open protector ${protector.descriptor} is not the slot's protector ${state.protector}`, { code: 'ERR_STATE', path: slot });
      }

      const generation = state.nextGeneration;
      const dir = volumePath(slot, generation);
      const key = newPolicyKey();
      let intentRecorded = false;
      try {
        const identifier = keyIdentifier(key);
        state.volume = {
          generation,
          name: volumeName(generation),
          identifier,
          phase: 'preparing',
          targets: [],
          adminUnlocked: false,
          createdAt: new Date().toISOString(),
        };
        state.nextGeneration = generation + 1;
        await writeSlotState(slot, state);
        intentRecorded = true;
        await step('prepare', 'intent-recorded', options);

        await addVolumeKey(slot, key, identifier);
        await step('prepare', 'key-added', options);

        await mkdir(dir, { mode: options.mode ?? 0o755 }).catch((error: NodeJS.ErrnoException) => {
          if (error.code !== 'EEXIST') throw error;
          throw new FscryptError(
            `${dir} already exists, but the slot state does not know it; refusing to touch it. Move it out of the slot, then prepare again`,
            { code: 'ERR_STATE', path: dir },
          );
        });
        await step('prepare', 'dir-created', options);

        const policy = defaultPolicy(identifier);
        await setPolicy(dir, policy);
        await step('prepare', 'policy-set', options);

        await checkProbeFile(dir);
        await step('prepare', 'probe-file-checked', options);

        const actual = await getPolicy(dir);
        if (actual === null || !samePolicy(actual, policy)) {
          throw new FscryptError(`the policy read back from ${dir} is not the one set; refusing to use it`, { code: 'ERR_STATE', path: dir });
        }
        await step('prepare', 'policy-verified', options);

        // Independent, and each waits for a journal commit (the metadata's
        // fsyncs; REMOVE_KEY syncs the filesystem): together they share one.
        await Promise.all([protector.addPolicy(key), removeVolumeKey(slot, identifier, removalOptions(dir, 'prepare', options))]);
        await step('prepare', 'metadata-committed', options);
        await step('prepare', 'key-removed', options);

        state.volume.phase = 'ready';
        await writeSlotState(slot, state);
        await step('prepare', 'ready', options);
        return volumeOf(slot, state)!;
      } catch (error) {
        // Leave no key in the kernel and no half-made generation behind; if
        // even that fails, reconcile (or the next prepare) rolls it back.
        if (intentRecorded) await rollBackPrepare(slot, state, options).catch(() => undefined);
        throw error;
      } finally {
        wipe(key);
      }
    },
    options.lockTimeoutMs === undefined ? {} : { timeoutMs: options.lockTimeoutMs },
  );
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
      await handle.write('fscrypt-local probe');
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
