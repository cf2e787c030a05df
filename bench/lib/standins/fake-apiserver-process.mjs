// The fake Kubernetes API server of the tests (test/fixtures/fake-apiserver*.ts)
// in a child process of its own (fake-apiserver-child.mjs), for benchmarks of
// the node agent. In a process of its own because it is the API server: its
// CPU (schema validation of every write, watch fan-out, copies) and its
// memory must not be counted as the agent's, nor delay the agent's event loop.
//
// The fixture is TypeScript. The child transpiles it (type-stripping only, as
// test/fixtures/system/js-build.ts does for the crash tests' children) into a temp
// directory this side makes and removes, with a symlink to the repository's
// node_modules, and imports the plain JavaScript: that starts in about a
// second and needs no loader flags, where tap's TypeScript loader would tie
// the benchmark to tap's internals. tsc, not this, checks the fixture's types.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { onCleanup } from '../cleanup.mjs';
import { repoRoot } from '../build.mjs';
import { forkChild } from './ipc-child.mjs';

/**
 * Starts a fake API server in a child process. Returns
 * { url, kubeConfig(), call(op, args), close() }; the operations are the
 * child's (fake-apiserver-child.mjs).
 */
export async function startFakeApiServerProcess() {
  const out = mkdtempSync(join(tmpdir(), 'fscrypt-local-bench-fakeapi-'));
  const removeOut = onCleanup(() => rmSync(out, { recursive: true, force: true }));
  const child = await forkChild(new URL('./fake-apiserver-child.mjs', import.meta.url), {
    args: [repoRoot, out],
    // The API server is not the agent: libuv's default pool, whatever the benchmark runs with.
    env: { ...process.env, UV_THREADPOOL_SIZE: '4' },
    name: 'fake API server',
  });
  const url = child.ready;
  const { KubeConfig } = await import('@kubernetes/client-node');
  return {
    url,
    pid: child.pid,
    /** A KubeConfig for it (client-node needs skipTLSVerify to speak plain http). */
    kubeConfig() {
      const kc = new KubeConfig();
      kc.loadFromOptions({
        clusters: [{ name: 'fake', server: url, skipTLSVerify: true }],
        users: [{ name: 'fake' }],
        contexts: [{ name: 'fake', cluster: 'fake', user: 'fake' }],
        currentContext: 'fake',
      });
      return kc;
    },
    call: child.call,
    async close() {
      await child.close();
      removeOut();
    },
  };
}
