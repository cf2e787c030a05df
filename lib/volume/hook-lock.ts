// How a hook holds its slot: the slot lock (slot-lock.ts) with the hook's own
// lock timeout and, for a hook on one volume, the cache warmed while the lock
// is taken (warm-cache.ts).
import type { HookOptions, Volume } from './hook-options.js';
import { withSlotLock } from './slot-lock.js';
import { warmCache } from './warm-cache.js';

/** Runs a hook's body holding the slot's lock. */
export function withHookLock<T>(slot: string, options: HookOptions, fn: () => Promise<T>): Promise<T> {
  return withSlotLock(slot, fn, options.lockTimeoutMs === undefined ? {} : { timeoutMs: options.lockTimeoutMs });
}

/** withHookLock for a hook on `volume`, its metadata looked up while the lock is taken. */
export function withVolumeLock<T>(volume: Volume, options: HookOptions, fn: () => Promise<T>): Promise<T> {
  const warmed = warmCache(volume);
  return withHookLock(volume.slot, options, async () => {
    await warmed;
    return fn();
  });
}
