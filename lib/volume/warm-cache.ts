// Warming the cache for a hook while it waits for the slot lock.
//
// A hook's metadata calls are synchronous (see durable-fs.ts). On a cold
// cache (a slot left alone for a while, as a Released volume usually is)
// each of them would wait for the device in turn, on the event loop. Looking
// up the same paths first, all at once through the thread pool, turns that
// chain of device reads into one round, overlapped with taking the lock; on
// a warm cache it costs one parallel round of lstat calls.
// Only the claim's own, checked names are used; nothing is changed, and
// nothing here can fail the hook.
import { lstat } from 'node:fs/promises';
import { SlotKeys } from '../keys/index.js';
import type { Volume } from './hook-options.js';
import { slotPaths, volumePath } from './slot-layout.js';

/** Looks up what a hook on `volume` will touch: its slot's state and lock, its directory, the trash, its policy's metadata. */
export async function warmCache(volume: Volume): Promise<void> {
  try {
    const { slot } = volume;
    const { stateFile, lockFile, trashDir } = slotPaths(slot);
    const lookups = [stateFile, lockFile, trashDir, volumePath(slot, volume.generation)].map((path) => lstat(path).catch(() => undefined));
    await Promise.all([...lookups, new SlotKeys(slot).prefetchPolicies([volume.identifier])]);
  } catch {
    // A malformed claim: the hook itself says what is wrong with it.
  }
}
