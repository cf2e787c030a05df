// When a volume's key is in the kernel. Adding checks the identifier the
// kernel computed; removing drops every user's claim and does not return
// until the key is ABSENT: files still open inside the volume leave it
// INCOMPLETELY_REMOVED, so removal is retried with backoff and whoever holds
// the files is named (read from /proc), in progress events and in the error.
import { addKey, FscryptError, getKeyStatus, isFscryptError, removeKey } from '../../kernel/index.js';
import { describeBlockers, findBlockers, type Blocker } from '../mounts/blockers.js';
import { emit, type HookOptions } from './hook-options.js';

/** Adds a volume's policy key and checks the kernel agrees on its identity. */
export async function addVolumeKey(slot: string, key: Uint8Array, identifier: string): Promise<void> {
  const added = await addKey(slot, key);
  if (added !== identifier) {
    // Never leave an unexpected key behind.
    await removeKey(slot, added, { allUsers: true }).catch(() => undefined);
    throw new FscryptError(`the kernel computed key identifier ${added}, but the volume's policy names ${identifier}: the metadata does not belong to this volume`, {
      code: 'ERR_BAD_METADATA',
      path: slot,
    });
  }
}

export interface RemovalOptions {
  /** The volume directory, to name what keeps it busy. */
  dir: string;
  /** Give up (ERR_FILES_BUSY) after this long with files still busy (default 30 s). */
  busyTimeoutMs?: number;
  /** First retry delay; doubles up to 2 s (default 50 ms). */
  initialDelayMs?: number;
  onBusy?(event: { attempt: number; blockers: Blocker[] }): void;
  /** Stops the wait for busy files early (the same ERR_FILES_BUSY, saying the caller stopped waiting). */
  signal?: AbortSignal;
}

/**
 * Removes a volume's key for all users and waits until the kernel reports it
 * ABSENT. Already absent is success.
 */
export async function removeVolumeKey(slot: string, identifier: string, options: RemovalOptions): Promise<{ attempts: number }> {
  const deadline = Date.now() + (options.busyTimeoutMs ?? 30_000);
  let delay = options.initialDelayMs ?? 50;
  for (let attempt = 1; ; attempt++) {
    try {
      await removeKey(slot, identifier, { allUsers: true });
    } catch (error) {
      // ENOKEY: the filesystem holds no such key, not even one incompletely
      // removed (removing that again retries its eviction instead).
      if (isFscryptError(error, 'ENOKEY')) return { attempts: attempt };
      throw error;
    }
    if ((await getKeyStatus(slot, identifier)).status === 'absent') return { attempts: attempt };

    // Naming the blockers is a report: its failure never fails the removal.
    const blockers = await findBlockers(options.dir).catch((): Blocker[] => []);
    options.onBusy?.({ attempt, blockers });
    if (Date.now() >= deadline || options.signal?.aborted) {
      throw new FscryptError(
        `the key of ${options.dir} is only incompletely removed: files inside are still in use` +
          (blockers.length > 0 ? `:\n${describeBlockers(blockers)}\n` : ' (no process or mount found holding them). ') +
          'Stop those processes or unmount those mounts, then lock again' +
          (options.signal?.aborted ? ' (the caller stopped waiting)' : ''),
        { code: 'ERR_FILES_BUSY', path: options.dir },
      );
    }
    await sleep(delay, options.signal);
    delay = Math.min(delay * 2, 2_000);
  }
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
    function done(): void {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
  });
}

/** Removal options for a hook: its busy timeout and signal, and busy events as progress. */
export function removalOptions(dir: string, hook: string, options: HookOptions): RemovalOptions {
  return {
    dir,
    ...(options.busyTimeoutMs === undefined ? {} : { busyTimeoutMs: options.busyTimeoutMs }),
    ...(options.signal === undefined ? {} : { signal: options.signal }),
    onBusy: ({ attempt, blockers }) => emit(options, { hook, kind: 'busy', attempt, blockers }),
  };
}
