// Warming the cache for a hook while it waits for the slot lock.
//
// A hook's metadata calls are synchronous (see durable-fs.ts). On a cold
// cache (a slot left alone for a while, as a Released volume usually is)
// each of them would wait for the device in turn, on the event loop. Reading
// the same things first, all at once through the thread pool, turns that
// chain of device reads into one round, overlapped with taking the lock.
// Only the claim's own, checked names are used; nothing is changed, and
// nothing here can fail the hook.
import { lstat, readFile } from 'node:fs/promises';
import { SlotKeys } from '../keys/index.js';
import type { Volume } from './hook-options.js';
import { slotPaths, volumePath } from './slot-layout.js';

/** Reads what a hook on `volume` will read: its slot's state and lock, its directory, the trash, its policy's metadata. */
export async function warmCache(volume: Volume): Promise<void> {
  try {
    const { slot } = volume;
    const { stateFile, lockFile, trashDir } = slotPaths(slot);
    const reads: Promise<unknown>[] = [readFile(stateFile), lstat(lockFile), lstat(trashDir), lstat(volumePath(slot, volume.generation))];
    await Promise.all([...reads.map((read) => read.catch(() => undefined)), new SlotKeys(slot).prefetchPolicies([volume.identifier])]);
  } catch {
    // A malformed claim: the hook itself says what is wrong with it.
  }
}
