// One hook at a time per slot: within this process (a promise chain per
// slot) and across processes (the agent and an admin's CLI) through flock(2)
// on <slot>/.fscrypt-local/lock. The kernel drops the lock when its holder's
// descriptor closes, so a crash or kill -9 never wedges a slot, and the lock
// works whatever PID namespace each holder runs in. The file's content only
// says who holds it, for the error message; it is never deleted, because
// unlinking a flock'ed file lets two processes lock two different inodes.
import { constants } from 'node:fs';
import { open, readFile, type FileHandle } from 'node:fs/promises';
import { hostname } from 'node:os';
import { FscryptError, tryLockExclusive } from '../kernel/index.js';
import { slotPaths } from './slot-layout.js';

const chains = new Map<string, Promise<unknown>>();

export interface SlotLockOptions {
  /** How long to wait for another process's hook on the same slot (default 60 s). */
  timeoutMs?: number;
}

/** Runs `fn` holding the slot's lock. */
export async function withSlotLock<T>(root: string, fn: () => Promise<T>, options: SlotLockOptions = {}): Promise<T> {
  const previous = chains.get(root) ?? Promise.resolve();
  const run = previous
    .catch(() => undefined)
    .then(async () => {
      const handle = await acquireFileLock(root, options.timeoutMs ?? 60_000);
      // Who holds the lock is only read by a waiter that times out: the note
      // is written while the hook runs, not before it.
      const noted = noteHolder(handle);
      try {
        return await fn();
      } finally {
        await noted;
        await handle.close(); // releases the flock
      }
    });
  chains.set(root, run);
  try {
    return await run;
  } finally {
    if (chains.get(root) === run) chains.delete(root);
  }
}

/** Records this process as the holder; a failure only costs the waiter's error message its detail. */
async function noteHolder(handle: FileHandle): Promise<void> {
  try {
    await handle.truncate(0);
    await handle.write(`pid ${process.pid} on ${hostname()} since ${new Date().toISOString()}\n`, 0);
  } catch {
    // The hook itself is unaffected.
  }
}

async function acquireFileLock(root: string, timeoutMs: number): Promise<FileHandle> {
  const { lockFile } = slotPaths(root);
  let handle: FileHandle;
  try {
    handle = await open(lockFile, constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW, 0o600);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new FscryptError(`'${root}' is not an initialized slot. To fix: run \`fscrypt-local init-slot ${root} --key-source ...\``, {
        code: 'ERR_STATE',
        path: root,
      });
    }
    throw error;
  }
  try {
    const deadline = Date.now() + timeoutMs;
    while (!tryLockExclusive(handle.fd, lockFile)) {
      if (Date.now() >= deadline) {
        const holder = (await readFile(lockFile, 'utf8').catch(() => '')).trim() || 'another process';
        throw new FscryptError(`slot '${root}' is busy: ${holder} holds ${lockFile}. Wait for it to finish, or stop it`, {
          code: 'ERR_BUSY',
          path: root,
        });
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    return handle;
  } catch (error) {
    await handle.close();
    throw error;
  }
}
