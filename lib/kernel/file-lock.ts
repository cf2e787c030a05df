// flock(2) for the slot lock: an exclusive lock the kernel releases when the
// holder's file descriptor is closed, including when the process dies.
import { constants } from 'node:os';
import { native } from './binding.js';
import { FscryptError } from './errors.js';

/** Takes an exclusive flock on `fd` without waiting; false if another open file description holds it. */
export function tryLockExclusive(fd: number, path: string): boolean {
  // The flags come from the addon (the C headers), as no Node API has them.
  const { LOCK_EX, LOCK_NB } = native().constants;
  const rc = native().flock(fd, LOCK_EX | LOCK_NB);
  if (rc === 0) return true;
  if (rc === -constants.errno.EWOULDBLOCK) return false;
  throw new FscryptError(undefined, { errno: rc, syscall: 'flock', path });
}
