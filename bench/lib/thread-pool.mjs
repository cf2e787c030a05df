// Running a benchmark with the libuv thread pool the node agent runs with.
// libuv reads UV_THREADPOOL_SIZE once, when its pool first starts, and in an
// ES module that is before the module's first line: the loader reads the
// imported files through the pool. So a benchmark that wants another size
// cannot set it for itself; it runs itself again with the variable set.

import { spawn } from 'node:child_process';
import { once } from 'node:events';

const FORWARDED = ['SIGINT', 'SIGTERM', 'SIGHUP'];

/**
 * If UV_THREADPOOL_SIZE is unset, runs this script again with it set to
 * `size` (and `env` added), passes its exit status on, and returns true: the caller must then
 * do nothing else. Returns false when it is set (whatever its value: a run
 * with another size is an experiment the caller asked for).
 *
 * The child gets a process group of its own, so a Ctrl-C reaches it once,
 * forwarded from here, and its cleanup (bench/lib/cleanup.mjs) is not cut
 * short by a second signal.
 */
export async function reexecWithThreadPool(size, env = {}) {
  if (process.env.UV_THREADPOOL_SIZE !== undefined) return false;
  const child = spawn(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
    stdio: 'inherit',
    env: { ...process.env, ...env, UV_THREADPOOL_SIZE: String(size) },
    detached: true,
  });
  for (const signal of FORWARDED) process.on(signal, () => child.kill(signal));
  const [code, signal] = await once(child, 'exit');
  process.exitCode = code ?? (signal ? 128 + ({ SIGINT: 2, SIGTERM: 15, SIGHUP: 1 }[signal] ?? 0) : 1);
  return true;
}
