// How a hook holds its slot: the slot lock (slot-lock.ts) with the hook's own
// lock timeout and abort signal and, for a hook on one volume, the cache
// warmed while the lock is taken (warm-cache.ts). Every error leaving a hook
// passes through here, so a raw Node system error (EROFS from an open, EBUSY
// from an rmdir) reaches the caller as a FscryptError with its errno code,
// path and remedy, never as something a caller cannot map.
import { asFscryptError } from '../kernel/index.js';
import type { HookOptions, Volume } from './hook-options.js';
import { withSlotLock } from './slot-lock.js';
import { warmCache } from './warm-cache.js';

/** Runs a hook's body holding the slot's lock. */
export async function withHookLock<T>(slot: string, options: HookOptions, fn: () => Promise<T>): Promise<T> {
  return asHookError(() =>
    withSlotLock(slot, fn, {
      ...(options.lockTimeoutMs === undefined ? {} : { timeoutMs: options.lockTimeoutMs }),
      ...(options.signal === undefined ? {} : { signal: options.signal }),
    }),
  );
}

/** withHookLock for a hook on `volume`, its metadata looked up while the lock is taken. */
export function withVolumeLock<T>(volume: Volume, options: HookOptions, fn: () => Promise<T>): Promise<T> {
  const warmed = warmCache(volume);
  return withHookLock(volume.slot, options, async () => {
    await warmed;
    return fn();
  });
}

/** Runs `fn`, turning any system error it throws into a FscryptError. */
export async function asHookError<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (error) {
    throw asFscryptError(error);
  }
}
