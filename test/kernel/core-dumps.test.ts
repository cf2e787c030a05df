// prctl(PR_SET_DUMPABLE) through the addon: a process that holds keys can
// make itself non-dumpable (no core dump, no ptrace or /proc/PID/mem by other
// users), and the agent does so before it opens any protector. The effect is
// checked where the kernel shows it: a non-dumpable process's /proc/PID
// entries belong to root, whatever uid it runs as.
import { spawnSync } from 'node:child_process';
import t from 'tap';
import { coreDumpsEnabled } from '../../lib/kernel/index.js';
import { agentNode, defaultConfig } from '../fixtures/agent/agent.js';

const KERNEL = new URL('../../lib/kernel/index.js', import.meta.url).href;

t.test('as nobody: dumpable until disableCoreDumps(), then /proc/self belongs to root', async (t) => {
  const script = [
    `import { statSync } from 'node:fs';`,
    `const k = await import(${JSON.stringify(KERNEL)});`,
    `const owner = () => statSync('/proc/self/status').uid;`,
    `const before = { enabled: k.coreDumpsEnabled(), owner: owner() };`,
    `k.disableCoreDumps();`,
    `const after = { enabled: k.coreDumpsEnabled(), owner: owner() };`,
    `process.stdout.write(JSON.stringify({ before, after }));`,
  ].join('\n');
  const child = spawnSync(process.execPath, [...process.execArgv, '--input-type=module', '-e', script], { uid: 65534, gid: 65534, encoding: 'utf8', timeout: 60_000 });
  t.equal(child.status, 0, child.stderr);
  const { before, after } = JSON.parse(child.stdout) as Record<'before' | 'after', { enabled: boolean; owner: number }>;
  t.same(before, { enabled: true, owner: 65534 }, 'a fresh process may dump core; its /proc entries are its own');
  t.same(after, { enabled: false, owner: 0 }, 'after: not dumpable, and the kernel hands its /proc entries to root');
});

t.test('the agent makes its process non-dumpable before it opens a protector', async (t) => {
  t.ok(coreDumpsEnabled(), 'the test process starts dumpable');
  const node = await agentNode(t);
  node.addSlot('ssd0');
  node.writeConfig(defaultConfig(node.kek, node.hostDir));
  await node.start();
  t.notOk(coreDumpsEnabled(), 'not dumpable once the agent runs');
});
