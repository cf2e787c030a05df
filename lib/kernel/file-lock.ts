// flock(2) for the slot lock: an exclusive lock the kernel releases when the
// holder's file descriptor is closed, including when the process dies.
import { native } from './binding.js';
import { FscryptError } from './errors.js';

const LOCK_EX = 2;
const LOCK_NB = 4;
const EWOULDBLOCK = -11;

/** Takes an exclusive flock on `fd` without waiting; false if another open file description holds it. */
export function tryLockExclusive(fd: number, path: string): boolean {
  const rc = native().flock(fd, LOCK_EX | LOCK_NB);
  if (rc === 0) return true;
  if (rc === EWOULDBLOCK) return false;
  throw new FscryptError(undefined, { errno: rc, syscall: 'flock', path });
}
