// How a hook holds its slot: the slot lock (slot-lock.ts) with the hook's own
// lock timeout and abort signal. Every error leaving a hook
// passes through here, so a raw Node system error (EROFS from an open, EBUSY
// from an rmdir) reaches the caller as a FscryptError with its errno code,
// path and remedy, never as something a caller cannot map.
import { constants } from 'node:os';
import { asFscryptError, FscryptError } from '../../kernel/index.js';
import { emit, type HookOptions, type Volume } from './hook-options.js';
import { withSlotLock } from '../slot/slot-lock.js';

/**
 * Runs a hook's body holding the slot's lock. A hook that has to wait says
 * so and for whom (a progress note): an admin's command behind the agent's
 * lock retrying busy files would otherwise sit silent for half a minute.
 */
export async function withHookLock<T>(hook: string, slot: string, options: HookOptions, fn: () => Promise<T>): Promise<T> {
  return asHookError(() =>
    withSlotLock(slot, fn, {
      ...(options.lockTimeoutMs === undefined ? {} : { timeoutMs: options.lockTimeoutMs }),
      ...(options.signal === undefined ? {} : { signal: options.signal }),
      onWait: (holder) => emit(options, { hook, kind: 'note', message: `waiting for slot ${slot}: ${holder} holds it` }),
    }),
  );
}

/**
 * withHookLock for a hook on `volume`. A caller waiting for the lock makes
 * no filesystem call (there was a cache warm-up here, when the hooks' calls
 * were synchronous: durable-fs.ts): behind a hook stuck on a hung disk,
 * each waiter's lookups would hang too, and hold pool threads that its own
 * timeout could not give back (thread-pool.ts).
 */
export function withVolumeLock<T>(hook: string, volume: Volume, options: HookOptions, fn: () => Promise<T>): Promise<T> {
  return withHookLock(hook, volume.slot, options, fn);
}

/** Runs `fn`, turning any system error it throws into a FscryptError. */
export async function asHookError<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (error) {
    throw withDiskRemedy(asFscryptError(error));
  }
}

// The disk's own faults: the operator has to act on the disk, whatever call met them.
const DISK_FAULTS: ReadonlySet<string> = new Set(['ENOSPC', 'EROFS', 'EIO']);

/**
 * A disk fault described by the layer that met it (the tree remover says
 * which rmdir failed, not that the filesystem turned read-only or what to
 * do about it) leaves the hook with the errno's meaning and remedy added,
 * keeping its code: a full or read-only slot always says what to do.
 */
function withDiskRemedy(error: unknown): unknown {
  if (!(error instanceof FscryptError) || !DISK_FAULTS.has(error.code) || error.message.includes('To fix:')) return error;
  const errno = error.errno ?? -(constants.errno as Record<string, number>)[error.code]!;
  const explained = new FscryptError(undefined, { errno, ...(error.syscall === undefined ? {} : { syscall: error.syscall }), ...(error.path === undefined ? {} : { path: error.path }) });
  return new FscryptError(`${error.message}. ${explained.message}`, {
    code: error.code,
    errno,
    ...(error.syscall === undefined ? {} : { syscall: error.syscall }),
    ...(error.ioctl === undefined ? {} : { ioctl: error.ioctl }),
    ...(error.path === undefined ? {} : { path: error.path }),
    cause: error,
  });
}
