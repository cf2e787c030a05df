// One hook at a time per slot: within this process (a promise chain per
// slot) and across processes (the agent and an admin's CLI) through a lock
// file holding the owner's pid and process start time. A lock whose owner is
// gone (crash, kill -9) is taken over, so a crash never wedges a slot.
import { readFile, unlink, writeFile } from 'node:fs/promises';
import { FscryptError } from '../kernel/index.js';
import { slotPaths } from './slot-layout.js';

const chains = new Map<string, Promise<unknown>>();

export interface SlotLockOptions {
  /** How long to wait for another process's hook on the same slot (default 60 s). */
  timeoutMs?: number;
}

/** Runs `fn` holding the slot's lock. */
export async function withSlotLock<T>(root: string, fn: () => Promise<T>, options: SlotLockOptions = {}): Promise<T> {
  const previous = chains.get(root) ?? Promise.resolve();
  const run = previous.catch(() => undefined).then(async () => {
    const release = await acquireFileLock(root, options.timeoutMs ?? 60_000);
    try {
      return await fn();
    } finally {
      await release();
    }
  });
  chains.set(root, run);
  try {
    return await run;
  } finally {
    if (chains.get(root) === run) chains.delete(root);
  }
}

async function processStartTime(pid: number): Promise<string | undefined> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // Field 22 (starttime) comes after the parenthesised command name.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

async function acquireFileLock(root: string, timeoutMs: number): Promise<() => Promise<void>> {
  const { lockFile } = slotPaths(root);
  const me = `${process.pid} ${await processStartTime(process.pid)}\n`;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await writeFile(lockFile, me, { flag: 'wx', mode: 0o600 });
      return async () => {
        if ((await readFile(lockFile, 'utf8').catch(() => '')) === me) await unlink(lockFile).catch(() => undefined);
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const owner = await readFile(lockFile, 'utf8').catch(() => '');
    const [pid, started] = owner.trim().split(' ');
    const alive = pid !== undefined && /^\d+$/.test(pid) && (await processStartTime(Number(pid))) === started;
    if (!alive) {
      // The owner died holding the lock; its hook is finished by reconcile.
      await unlink(lockFile).catch(() => undefined);
      continue;
    }
    if (Date.now() > deadline) {
      throw new FscryptError(`slot '${root}' is busy: process ${pid} holds ${lockFile}. Wait for it to finish, or stop it`, {
        code: 'ERR_BUSY',
        path: root,
      });
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
