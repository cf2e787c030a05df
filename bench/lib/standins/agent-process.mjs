// Starts the node agent in a process of its own (agent-child.mjs), as it
// runs on a node: the benchmark, the kubelet stand-in and the fake API
// server stay out of its memory, its event loop and its CPU. The process
// gets the agent's thread pool (UV_THREADPOOL_SIZE=64, what `fscrypt-local
// run` is deployed with; lib/volume/thread-pool.ts) and --expose-gc, so
// that its RSS can be read after a full GC.
//
// FSCRYPT_LOCAL_BENCH_AGENT_NODE_ARGS adds node options to the agent's
// process only (space-separated), e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof"
// to see where its time goes (NODE_OPTIONS refuses --cpu-prof, and would
// reach every process of the benchmark).
import { forkChild } from './ipc-child.mjs';

/**
 * Forks the agent process and waits until it has loaded its modules (it
 * does not start the agent: call('start')). `options`: see agent-child.mjs.
 * Returns the child ({ call, close, ready: { importMs, loadedAt } }) and
 * forkedAt (process.hrtime ns, just before the fork).
 */
export async function startAgentProcess(options, { threadPoolSize }) {
  const forkedAt = process.hrtime.bigint();
  const child = await forkChild(new URL('./agent-child.mjs', import.meta.url), {
    args: [JSON.stringify(options)],
    env: { ...process.env, UV_THREADPOOL_SIZE: String(threadPoolSize) },
    execArgv: ['--expose-gc', ...(process.env.FSCRYPT_LOCAL_BENCH_AGENT_NODE_ARGS ?? '').split(' ').filter(Boolean)],
    name: 'agent',
  });
  return { ...child, forkedAt };
}
