// untrackedNode / spawnUntracked (test/fixtures/system/js-build.ts): the
// agent and hook children of the crash tests, the soak and the node faults
// must run without tap's process-info hook, or the soak measures tap's
// source-map cache as the agent's memory. Both halves of why the helper
// exists: a child whose environment merely lacks NODE_OPTIONS gets the hook
// back (tap wraps child_process in this process), and the helper's child has
// none, while keeping the pid and the variables it is given.
import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import t from 'tap';
import { spawnUntracked, untrackedNode } from '../fixtures/system/js-build.js';

const PROBE = "process.stdout.write(JSON.stringify({ nodeOptions: process.env.NODE_OPTIONS ?? null, pid: process.pid, extra: process.env.UNTRACKED_PROBE ?? null }))";
const HOOK = /@tapjs\/processinfo/;

t.test('tap runs this file with its process-info hook (what the helper is for)', async (t) => {
  t.match(process.env.NODE_OPTIONS ?? '', HOOK, "this process's NODE_OPTIONS loads @tapjs/processinfo");
});

t.test('a child whose environment leaves NODE_OPTIONS out still gets the hook', async (t) => {
  const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => name !== 'NODE_OPTIONS'));
  const child = spawnSync(process.execPath, ['-e', PROBE], { env, encoding: 'utf8' });
  t.equal(child.status, 0, child.stderr);
  t.match((JSON.parse(child.stdout) as { nodeOptions: string | null }).nodeOptions ?? '', HOOK, 'tap wrote its --import back');
});

t.test("untrackedNode's child has no NODE_OPTIONS, and the variables it was given", async (t) => {
  const node = untrackedNode(['-e', PROBE], { UNTRACKED_PROBE: 'kept' });
  const child = spawnSync(node.command, node.args, { env: node.env, encoding: 'utf8' });
  t.equal(child.status, 0, child.stderr);
  const seen = JSON.parse(child.stdout) as { nodeOptions: string | null; extra: string | null };
  t.equal(seen.nodeOptions, null, 'no NODE_OPTIONS in the child');
  t.equal(seen.extra, 'kept');
});

t.test("spawnUntracked's child is node itself: its pid is the one a test signals", async (t) => {
  const child = spawnUntracked(['-e', PROBE], ['ignore', 'pipe', 'inherit']);
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  const [code] = (await once(child, 'close')) as [number | null];
  t.equal(code, 0);
  const seen = JSON.parse(out) as { nodeOptions: string | null; pid: number };
  t.equal(seen.pid, child.pid, 'env exec()s node: same pid');
  t.equal(seen.nodeOptions, null, 'no NODE_OPTIONS in the child');
});
