// One hook at a time per slot: within this process (a promise chain per
// slot) and across processes (the agent and an admin's CLI) through flock(2)
// on <slot>/.fscrypt-local/lock. The kernel drops the lock when its holder's
// descriptor closes, so a crash or kill -9 never wedges a slot, and the lock
// works whatever PID namespace each holder runs in. The file's content only
// says who holds it, for the error message; it is never deleted, because
// unlinking a flock'ed file lets two processes lock two different inodes.
import { closeSync, constants, ftruncateSync, openSync, readFileSync, writeSync } from 'node:fs';
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
      const fd = await acquireFileLock(root, options.timeoutMs ?? 60_000);
      try {
        return await fn();
      } finally {
        closeSync(fd); // releases the flock
      }
    });
  chains.set(root, run);
  try {
    return await run;
  } finally {
    if (chains.get(root) === run) chains.delete(root);
  }
}

// The lock file is opened, locked and noted synchronously (see
// durable-fs.ts): these calls cost microseconds, and every hook pays them.

/** Records this process as the holder, for a waiter's error message. */
function noteHolder(fd: number): void {
  try {
    ftruncateSync(fd, 0);
    writeSync(fd, `pid ${process.pid} on ${hostname()} since ${new Date().toISOString()}\n`, 0);
  } catch {
    // Only the waiter's message loses its detail; the hook is unaffected.
  }
}

async function acquireFileLock(root: string, timeoutMs: number): Promise<number> {
  const { lockFile } = slotPaths(root);
  let fd: number;
  try {
    fd = openSync(lockFile, constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW, 0o600);
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
    while (!tryLockExclusive(fd, lockFile)) {
      if (Date.now() >= deadline) {
        let holder = '';
        try {
          holder = readFileSync(lockFile, 'utf8').trim();
        } catch {
          // unreadable: say nothing more
        }
        throw new FscryptError(`slot '${root}' is busy: ${holder || 'another process'} holds ${lockFile}. Wait for it to finish, or stop it`, {
          code: 'ERR_BUSY',
          path: root,
        });
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    noteHolder(fd);
    return fd;
  } catch (error) {
    closeSync(fd);
    throw error;
  }
}
