// One hook at a time per slot: within this process (a FIFO queue per slot)
// and across processes (the agent and an admin's CLI) through flock(2) on
// <slot>/.fscrypt-local/lock. The kernel drops the lock when its holder's
// descriptor closes, so a crash or kill -9 never wedges a slot, and the lock
// works whatever PID namespace each holder runs in. The file's content only
// says who holds it, for the error message; it is never deleted, because
// unlinking a flock'ed file lets two processes lock two different inodes.
//
// The wait is bounded from the moment of the call, queue included: a caller
// behind a hung hook (a frozen disk) gets ERR_SLOT_LOCKED or ERR_ABORTED in
// time, leaves the queue, and the callers behind it keep their places.
//
// A read that must not overlap a hook (the agent's census: an open fd on a
// volume directory during a lock's REMOVE_KEY leaves the key incompletely
// removed) takes the lock only if it is free, withSlotLockIfFree, and never
// waits: a hook that comes meanwhile waits for that one read instead.
import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { hostname } from 'node:os';
import { FscryptError, tryLockExclusive } from '../../kernel/index.js';
import { slotPaths } from './slot-layout.js';

export interface SlotLockOptions {
  /** How long to wait for the slot, from the call (default 60 s). */
  timeoutMs?: number;
  /** Stops waiting (ERR_ABORTED) when it fires. */
  signal?: AbortSignal;
  /** Told once, when the call has to wait for the slot, with who holds it (for progress). */
  onWait?(holder: string): void;
  /**
   * A reader's turn (a status read that must not overlap a hook): the lock
   * file is opened read-only and the holder is not noted, so the read writes
   * nothing to the slot; a slot without a lock file is read without one.
   */
  read?: boolean;
}

interface Queue {
  held: boolean;
  waiters: (() => void)[];
}

const queues = new Map<string, Queue>();

/** Runs `fn` holding the slot's lock. */
export async function withSlotLock<T>(root: string, fn: () => Promise<T>, options: SlotLockOptions = {}): Promise<T> {
  const deadline = Date.now() + (options.timeoutMs ?? 60_000);
  throwIfAborted(root, options.signal);
  const onWait = once(options.onWait);
  await enter(root, deadline, options.signal, onWait);
  try {
    const handle = await acquireFileLock(root, deadline, options.signal, onWait, options.read === true ? 'read' : 'write');
    try {
      return await fn();
    } finally {
      await handle?.close(); // releases the flock
    }
  } finally {
    leave(root);
  }
}

/**
 * Runs `fn` holding the slot's lock if no one holds it or waits for it,
 * in this process or another; undefined, without waiting, if someone does.
 * The lock file is opened read-only and the holder is not noted: a read
 * writes nothing to the slot (on a frozen filesystem a write would block
 * until the thaw, with the slot held all that time). A waiter that times
 * out behind such a read may so name an earlier holder; only a hung disk
 * can make a status read last that long.
 */
export async function withSlotLockIfFree<T>(root: string, fn: () => Promise<T>): Promise<{ value: T } | undefined> {
  if (queues.get(root)?.held === true) return undefined;
  queues.set(root, { held: true, waiters: [] });
  try {
    const handle = await tryFileLock(root);
    if (handle === 'taken') return undefined;
    try {
      return { value: await fn() };
    } finally {
      await handle?.close();
    }
  } finally {
    leave(root);
  }
}

function once(fn: ((holder: string) => void) | undefined): (holder: () => Promise<string> | string) => Promise<void> {
  let told = false;
  return async (holder) => {
    if (told || fn === undefined) return;
    told = true;
    try {
      fn(await holder());
    } catch {
      // A progress observer never decides the call's outcome.
    }
  };
}

export function abortedError(root: string, signal: AbortSignal): FscryptError {
  const reason = signal.reason as { name?: string } | undefined;
  const why = reason?.name === 'TimeoutError' ? 'its deadline passed' : 'it was cancelled';
  return new FscryptError(`the call on slot '${root}' was abandoned before it changed anything: ${why}. Retry it`, {
    code: 'ERR_ABORTED',
    path: root,
    cause: signal.reason,
  });
}

export function throwIfAborted(root: string, signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw abortedError(root, signal);
}

/** Takes this process's turn on the slot, in call order. */
function enter(root: string, deadline: number, signal: AbortSignal | undefined, onWait: (holder: () => string) => Promise<void>): Promise<void> {
  let queue = queues.get(root);
  if (queue === undefined) {
    queue = { held: false, waiters: [] };
    queues.set(root, queue);
  }
  if (!queue.held) {
    queue.held = true;
    return Promise.resolve();
  }
  const q = queue;
  return new Promise<void>((resolve, reject) => {
    const onTurn = (): void => {
      cleanup();
      resolve();
    };
    const giveUp = (error: FscryptError): void => {
      const index = q.waiters.indexOf(onTurn);
      if (index >= 0) q.waiters.splice(index, 1);
      cleanup();
      reject(error);
    };
    const onAbort = (): void => giveUp(abortedError(root, signal!));
    const timer = setTimeout(
      () => giveUp(new FscryptError(`slot '${root}' is busy: an earlier hook of this process is still running on it. Retry later`, { code: 'ERR_SLOT_LOCKED', path: root })),
      Math.max(0, deadline - Date.now()),
    );
    function cleanup(): void {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    }
    q.waiters.push(onTurn);
    signal?.addEventListener('abort', onAbort, { once: true });
    void onWait(() => 'an earlier call of this process');
  });
}

/** Hands the slot to the next caller of this process, if any. */
function leave(root: string): void {
  const queue = queues.get(root);
  if (queue === undefined) return;
  const next = queue.waiters.shift();
  if (next) next();
  else queues.delete(root);
}

// The lock file is opened, noted and closed through the thread pool, like
// every call on a slot's filesystem (durable-fs.ts): on a frozen slot the
// open for writing blocks until the thaw, and must hold a pool thread, not
// the event loop. The flock itself never waits for the disk (LOCK_NB, and
// the lock lives in memory).

/** Records this process as the holder, for a waiter's error message. */
async function noteHolder(handle: FileHandle): Promise<void> {
  try {
    await handle.truncate(0);
    await handle.write(`pid ${process.pid} on ${hostname()} since ${new Date().toISOString()}\n`, 0);
  } catch {
    // Only the waiter's message loses its detail; the hook is unaffected.
  }
}

async function holderOf(handle: FileHandle): Promise<string> {
  try {
    const buffer = Buffer.alloc(256);
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0);
    return buffer.subarray(0, bytesRead).toString('utf8').trim().replace(/[^\x20-\x7e]/g, '?');
  } catch {
    return '';
  }
}

const OPEN_FLAGS = constants.O_NOFOLLOW | constants.O_NONBLOCK | constants.O_NOCTTY;

/**
 * Opens the lock file: never through a symlink, never a FIFO or a hard link
 * to another file (noting the holder truncates it). On a read-only slot the
 * file is opened read-only (flock works on any descriptor), so that lock
 * can still take a key out of the kernel there; without a lock file on a
 * read-only slot there is no lock, and none is needed (nothing can change
 * the slot). Returns undefined then. For a read (`read`: withSlotLockIfFree)
 * the file is only ever opened read-only, and a missing one is no lock too.
 */
async function openLockFile(root: string, lockFile: string, mode: 'write' | 'read' = 'write'): Promise<{ handle: FileHandle; writable: boolean } | undefined> {
  let handle: FileHandle;
  let writable = mode === 'write';
  try {
    handle = await open(lockFile, (writable ? constants.O_RDWR | constants.O_CREAT : constants.O_RDONLY) | OPEN_FLAGS, 0o600);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      // A read takes no lock where there is none; the read itself says what the slot lacks.
      if (!writable) return undefined;
      throw new FscryptError(`'${root}' is not an initialized slot (it has no ${slotPaths(root).stateDir}). To fix: run \`fscrypt-local init-slot ${root} --key-source ...\``, {
        code: 'ERR_NOT_INITIALIZED',
        path: root,
      });
    }
    if (code === 'ELOOP') throw unsafeLockFile(root, lockFile, 'it is a symbolic link');
    if (code !== 'EROFS' || !writable) throw error;
    try {
      handle = await open(lockFile, constants.O_RDONLY | OPEN_FLAGS);
      writable = false;
    } catch (inner) {
      if ((inner as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw inner;
    }
  }
  let stat;
  try {
    stat = await handle.stat();
  } catch (error) {
    await handle.close();
    throw error;
  }
  if (!stat.isFile() || stat.nlink !== 1) {
    await handle.close();
    throw unsafeLockFile(root, lockFile, stat.isFile() ? `it has ${stat.nlink} hard links (it may be another file)` : 'it is not a regular file');
  }
  return { handle, writable };
}

function unsafeLockFile(root: string, lockFile: string, why: string): FscryptError {
  return new FscryptError(`refusing to use the lock file ${lockFile} of slot '${root}': ${why}. To fix: remove it (nothing else is stored in it)`, {
    code: 'ERR_UNSAFE_PATH',
    path: lockFile,
  });
}

/** The slot's file lock if no process holds it, 'taken' if one does; never waits. */
async function tryFileLock(root: string): Promise<FileHandle | undefined | 'taken'> {
  const { lockFile } = slotPaths(root);
  const opened = await openLockFile(root, lockFile, 'read');
  if (opened === undefined) return undefined;
  try {
    if (tryLockExclusive(opened.handle.fd, lockFile)) return opened.handle;
  } catch (error) {
    await opened.handle.close();
    throw error;
  }
  await opened.handle.close();
  return 'taken';
}

async function acquireFileLock(
  root: string,
  deadline: number,
  signal: AbortSignal | undefined,
  onWait: (holder: () => Promise<string>) => Promise<void>,
  mode: 'read' | 'write',
): Promise<FileHandle | undefined> {
  const { lockFile } = slotPaths(root);
  const opened = await openLockFile(root, lockFile, mode);
  if (opened === undefined) return undefined;
  const { handle, writable } = opened;
  try {
    while (!tryLockExclusive(handle.fd, lockFile)) {
      await onWait(async () => (await holderOf(handle)) || 'another process');
      throwIfAborted(root, signal);
      if (Date.now() >= deadline) {
        throw new FscryptError(`slot '${root}' is busy: ${(await holderOf(handle)) || 'another process'} holds ${lockFile}. Wait for it to finish, or stop it`, {
          code: 'ERR_SLOT_LOCKED',
          path: root,
        });
      }
      await new Promise((resolve) => setTimeout(resolve, Math.min(100, Math.max(1, deadline - Date.now()))));
    }
    if (writable) await noteHolder(handle);
    return handle;
  } catch (error) {
    await handle.close();
    throw error;
  }
}
