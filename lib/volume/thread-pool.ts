// The libuv thread pool, which every filesystem call of the hooks runs on
// (durable-fs.ts): how big a long-running service must make it.
//
// A call on a slot whose filesystem is frozen or whose disk hangs holds its
// pool thread until the disk answers. One hook per slot runs at a time (the
// slot lock; callers queued behind it make no filesystem call while they
// wait, and give up at their deadline), and a hook has at most a few calls
// in flight at once (its Promise.all rounds), so a hung slot holds a few
// threads. The background deletion of a slot's trash holds up to its
// concurrency (removeTree, 32 by default) while it runs on a hung disk. With
// libuv's default of 4 threads, one or two hung slots starve every other
// slot, the gRPC server's file I/O and the health checks: invariant 9 needs
// a larger pool.
//
// libuv reads UV_THREADPOOL_SIZE once, when the pool is first used (the
// first fs, dns.lookup, crypto.pbkdf2/scrypt or zlib call of the process),
// and never again. A library cannot set it: by the time it runs, the pool
// usually exists. So a long-running service (the node agent, `fscrypt-local
// run`) sets it in its own environment before its first I/O: in the
// container spec, or by re-executing itself with it set.

/** libuv's pool size when UV_THREADPOOL_SIZE is not set. */
export const LIBUV_DEFAULT_THREADPOOL_SIZE = 4;

/**
 * The pool size a long-running service should run with: room for the
 * background deletion of one hung slot (32 threads at removeTree's default
 * concurrency), a few threads for each of several hung slots' hooks, and
 * the healthy slots' hooks and the service's own I/O. Idle threads cost
 * only their (virtual) stacks.
 */
export const SERVICE_THREADPOOL_SIZE = 64;

// libuv's own bounds (threadpool.c: 0 becomes 1, MAX_THREADPOOL_SIZE is 1024).
const LIBUV_MAX_THREADPOOL_SIZE = 1024;

/** The pool size libuv uses with this environment (UV_THREADPOOL_SIZE, parsed as libuv's atoi does). */
export function threadPoolSize(env: NodeJS.ProcessEnv = process.env): number {
  const value = env.UV_THREADPOOL_SIZE;
  if (value === undefined) return LIBUV_DEFAULT_THREADPOOL_SIZE;
  const match = /^\s*([+-]?\d+)/.exec(value);
  const parsed = match ? Number(match[1]) : 0;
  // libuv stores atoi's result in an unsigned int: a negative value wraps to a huge one.
  if (parsed < 0 || parsed > LIBUV_MAX_THREADPOOL_SIZE) return LIBUV_MAX_THREADPOOL_SIZE;
  return Math.max(1, parsed);
}

/**
 * For a long-running service to log at start: what is wrong with the pool
 * size this environment gives, or undefined if it is at least
 * SERVICE_THREADPOOL_SIZE. (Only the environment the process started with
 * counts; changing process.env now changes nothing.)
 */
export function threadPoolWarning(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const size = threadPoolSize(env);
  if (size >= SERVICE_THREADPOOL_SIZE) return undefined;
  return (
    `the libuv thread pool has ${size} threads (UV_THREADPOOL_SIZE ${env.UV_THREADPOOL_SIZE === undefined ? 'unset' : `'${env.UV_THREADPOOL_SIZE}'`}): ` +
    `a slot whose disk hangs can hold enough of them to stall every other slot. ` +
    `To fix: start the service with UV_THREADPOOL_SIZE=${SERVICE_THREADPOOL_SIZE} in its environment (it must be set before the process's first I/O)`
  );
}
