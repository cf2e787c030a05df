// A helper process that a benchmark drives over Node's IPC channel: one
// request, one answer, matched by id. Both halves are here: forkChild() in
// the benchmark, serve() in the child.
//
//   parent → child  { id, op, args }
//   child → parent  { id, result } or { id, error }, and once at start { ready } (or { failed })
//
// The child is killed on any exit of the benchmark (bench/lib/cleanup.mjs),
// and serve() ends it when the channel closes, so a benchmark that dies
// without cleaning up leaves no helper behind.
import { fork } from 'node:child_process';
import { onCleanup } from '../cleanup.mjs';

/**
 * Forks `module` (a URL or path) with `args`, `env` and `execArgv`, and waits
 * for its ready message. Returns { pid, ready, call(op, args), close() }.
 */
export async function forkChild(module, { args = [], env = process.env, execArgv = [], name = 'child' } = {}) {
  const child = fork(module, args, { stdio: ['ignore', 'ignore', 'inherit', 'ipc'], env, execArgv });
  const kill = onCleanup(() => child.kill('SIGKILL'));
  let next = 0;
  const pending = new Map();
  let exited;
  child.on('exit', (code, signal) => {
    exited = signal ?? code;
    for (const { reject } of pending.values()) reject(new Error(`the ${name} process exited (${exited})`));
    pending.clear();
  });
  const ready = await new Promise((resolve, reject) => {
    const onMessage = (message) => {
      if (message.ready !== undefined) resolve(message.ready);
      else if (message.failed !== undefined) reject(new Error(`the ${name} process failed to start: ${message.failed}`));
      else return;
      child.off('message', onMessage);
    };
    child.on('message', onMessage);
    child.once('exit', (code, signal) => reject(new Error(`the ${name} process exited before it was ready (${signal ?? code})`)));
  });
  child.on('message', (message) => {
    const waiter = pending.get(message.id);
    if (waiter === undefined) return;
    pending.delete(message.id);
    if (message.error !== undefined) waiter.reject(new Error(`${name}: ${message.error}`));
    else waiter.resolve(message.result);
  });
  return {
    pid: child.pid,
    ready,
    call(op, args = {}) {
      if (exited !== undefined) return Promise.reject(new Error(`the ${name} process exited (${exited})`));
      const id = next++;
      return new Promise((resolve, reject) => {
        pending.set(id, { resolve, reject });
        child.send({ id, op, args });
      });
    },
    /** Closes the channel (serve() then ends the child) and waits for the exit. */
    async close() {
      if (exited === undefined) {
        const gone = new Promise((resolve) => child.once('exit', resolve));
        child.disconnect();
        await gone;
      }
      kill();
    },
  };
}

/**
 * The child's half: answers requests with `operations[op](args)` (sync or
 * async), after sending { ready: await start() }. `onDisconnect` runs when
 * the parent closes the channel or dies; the process exits after it.
 */
export async function serve(operations, start, onDisconnect = async () => undefined) {
  process.on('disconnect', () => {
    void Promise.resolve()
      .then(onDisconnect)
      .finally(() => process.exit(0));
  });
  let ready;
  try {
    ready = await start();
  } catch (error) {
    process.send({ failed: error?.stack ?? String(error) });
    process.exit(1);
  }
  process.on('message', async ({ id, op, args }) => {
    try {
      const operation = operations[op];
      if (operation === undefined) throw new Error(`no operation ${op}`);
      process.send({ id, result: await operation(args) });
    } catch (error) {
      process.send({ id, error: error?.message ?? String(error) });
    }
  });
  process.send({ ready });
}
