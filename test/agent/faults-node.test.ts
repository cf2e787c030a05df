// The node under the agent: a reboot (every mount and every key gone, the
// agent stopped), after which kubelet publishes again what it had published;
// and the agent killed (SIGKILL) in the middle of a publish while the slot's
// disk is frozen, then restarted after the thaw. Each ends with the data
// written before back, the start-up reconcile told (a Recovered Event),
// stale state forgotten, one PV per slot, and a key in the kernel only for
// what kubelet published again (invariant 2).
import { execFileSync } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import t from 'tap';
import { slotStatus } from '../../lib/volume/index.js';
import { mountAt } from '../../lib/volume/mounts/mounts.js';
import { agentChildOptions, agentNode, defaultConfig, NODE_NAME, TAINT, writeKubeconfigFile, type AgentNode } from '../fixtures/agent/agent.js';
import { agentChildScript } from '../fixtures/crash/agent-crash.js';
import { eventLines, keyOf, live, meta, publish, pvOf, spec, unpublish } from '../fixtures/agent/agent-faults.js';
import { recordFigure } from '../fixtures/campaign/campaign.js';
import { csiClient, mountCapability } from '../fixtures/agent/csi.js';
import { freeze, requireFsfreeze } from '../fixtures/system/freeze.js';
import { rejection } from '../fixtures/helpers.js';
import { slotBacking } from '../fixtures/system/bind-mount.js';
import { spawnUntracked } from '../fixtures/system/js-build.js';

const COMMAND = 'npx tap test/agent/faults-node.test.ts';

/** The reboot: kubelet's mounts, the slots' mounts and the disk go; the disk comes back, and with it a keyring with no key. */
function reboot(node: AgentNode, slots: string[], targets: string[]): void {
  for (const target of targets) execFileSync('umount', [target]);
  for (const slot of slots) execFileSync('umount', [slot]);
  execFileSync('umount', [node.fs.mountpoint]);
  execFileSync('mount', ['-o', 'loop', node.fs.image!, node.fs.mountpoint]);
  for (const slot of slots) execFileSync('mount', ['--bind', slotBacking(node.fs, basename(slot)), slot]);
}

t.test('a node reboot: kubelet republishes, the data is back, stale targets forgotten, keys only where republished', async (t) => {
  const node = await agentNode(t);
  const slots = ['ssd0', 'ssd1', 'ssd2'].map((name) => node.addSlot(name));
  const [ssd0, ssd1, ssd2] = slots as [string, string, string];
  node.writeConfig(defaultConfig(node.kek, node.hostDir));
  let agent = await node.start();
  await node.until('ready', () => agent.running.agent.readiness().ok);
  const pvs = await Promise.all(slots.map((slot) => pvOf(node, slot)));
  const [pv0, pv1] = pvs as [(typeof pvs)[0], (typeof pvs)[0]];
  for (const [i, pv] of pvs.entries()) node.api.bind(meta(pv).name, { namespace: 'default', name: `claim-${i}` });
  // ssd0: two pods; ssd1: one pod, deleted while the node is down; ssd2: bound, never published.
  const [a, b, c] = [await publish(agent, node, pv0), await publish(agent, node, pv0), await publish(agent, node, pv1)];
  await writeFile(join(a, 'ledger'), 'before the reboot');
  await writeFile(join(c, 'cache'), 'also before the reboot');
  const keysBefore = (await Promise.all(slots.map(keyOf))).filter((k) => k === 'present').length;
  await agent.stop();

  reboot(node, slots, [a, b, c]);
  for (const slot of slots) t.equal(await keyOf(slot), 'absent', `${basename(slot)}: no key after the reboot`);
  t.equal((await slotStatus(ssd0)).volume!.targets.length, 2, 'the slot state still records the targets of before');

  agent = await node.start();
  await node.until('ready after the reboot', () => agent.running.agent.readiness().ok);
  const recovered = eventLines(node).filter((e) => e.startsWith('Recovered: '));
  t.ok(recovered.some((e) => /^Recovered: slot fast-disks\/ssd0: start-up reconcile: .*forgot 2 target\(s\) no longer mounted/.test(e)), 'a Recovered Event says the stale targets were forgotten');
  t.ok(recovered.some((e) => /^Recovered: slot fast-disks\/ssd1: start-up reconcile: .*forgot 1 target\(s\)/.test(e)));
  t.same((await slotStatus(ssd0)).volume!.targets, [], 'no stale target left before kubelet republishes');

  // kubelet publishes again what its pods still use, and unpublishes the deleted pod's target.
  await publish(agent, node, pv0, a);
  await publish(agent, node, pv0, b);
  t.equal(await readFile(join(a, 'ledger'), 'utf8'), 'before the reboot', 'the data written before the reboot is read back');
  t.equal(await readFile(join(b, 'ledger'), 'utf8'), 'before the reboot', 'at both targets');
  await unpublish(agent, pv1, c);
  t.equal(await mountAt(c), undefined, "the deleted pod's target is not mounted (its directory is kubelet's to remove: the record that the driver made it was forgotten)");
  t.equal(await keyOf(ssd0), 'present', 'a key for the republished volume');
  t.equal(await keyOf(ssd1), 'absent', 'none for the volume not republished');
  t.equal(await keyOf(ssd2), 'absent', 'none for the volume never published');
  t.same((await slotStatus(ssd0)).volume!.targets.map((x) => x.path).sort(), [a, b].sort(), 'the republished targets recorded');
  t.same((await slotStatus(ssd1)).volume!.targets, []);
  t.same(live(node).map((pv) => meta(pv).name).sort(), pvs.map((pv) => meta(pv).name).sort(), 'one PV per slot, the same ones');
  const again = await publish(agent, node, pv1);
  t.equal(await readFile(join(again, 'cache'), 'utf8'), 'also before the reboot', "the other volume's data is there too");
  for (const [pv, target] of [[pv1, again], [pv0, a], [pv0, b]] as const) await unpublish(agent, pv, target);
  for (const slot of slots) t.equal(await keyOf(slot), 'absent');
  node.api.assertNoInvalidWrites(t);
  recordFigure({ area: 'faults', name: 'node reboot: targets and keys dropped', value: 3 + keysBefore, command: COMMAND });
});

function startAgentChild(t: Parameters<typeof agentNode>[0] & { teardown(fn: () => void | Promise<void>): void }, script: string, node: AgentNode, kubeconfigFile: string) {
  const child = spawnUntracked([script, JSON.stringify(agentChildOptions(node, kubeconfigFile))], ['ignore', 'pipe', 'pipe']);
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', () => undefined);
  const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('close', (_code, signal) => resolve(signal)));
  t.teardown(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGKILL');
    await exited;
  });
  return { child, exited, started: () => out.split('\n').includes('started') };
}

const tainted = (node: AgentNode) => ((spec(node.api.get('nodes', NODE_NAME)!).taints ?? []) as { key: string }[]).some((x) => x.key === TAINT);

t.test('the agent killed in a publish on a frozen disk, restarted after the thaw: the retry succeeds, no leaked key or mount', async (t) => {
  requireFsfreeze();
  const script = await agentChildScript(t);
  const node = await agentNode(t);
  const slot = node.addSlot('ssd0');
  node.writeConfig(defaultConfig(node.kek, node.hostDir));
  const kubeconfigFile = writeKubeconfigFile(t, node);
  const first = startAgentChild(t, script, node, kubeconfigFile);
  await node.until('the agent started', first.started);
  const pv = await pvOf(node, slot);
  node.api.bind(meta(pv).name, { namespace: 'default', name: 'db-0' });
  await node.until('the claim recorded', async () => (await slotStatus(slot)).volume?.claimed);
  const csi = csiClient(t, node.socket);
  const target = await node.kubelet.newTarget(meta(pv).name);
  const request = { volume_id: spec(pv).csi.volumeHandle, target_path: target, volume_capability: mountCapability(), readonly: false };

  // The disk hangs; kubelet's publish times out; the agent is killed while its publish is stuck on the disk.
  const thaw = freeze(t, node.fs.mountpoint);
  const stuck = await rejection(csi.node('NodePublishVolume', request, { deadlineMs: 3000 }));
  t.equal(grpc.status[stuck.code as number], 'DEADLINE_EXCEEDED', "kubelet's publish times out on the frozen disk");
  first.child.kill('SIGKILL');
  thaw(); // a process killed in a system call on a frozen disk finishes dying only when the call returns
  t.equal(await first.exited, 'SIGKILL', 'the agent was killed');

  // As after a reboot, the Node carries the start-up taint: its removal says the new agent's start-up reconcile ran.
  const current = structuredClone(node.api.get('nodes', NODE_NAME)!);
  spec(current).taints = [...(spec(current).taints ?? []), { key: TAINT, effect: 'NoSchedule' }];
  node.api.put('nodes', current);
  const second = startAgentChild(t, script, node, kubeconfigFile);
  await node.until('the new agent ready', () => second.started() && !tainted(node));
  t.equal(await keyOf(slot), 'absent', 'no key left in the kernel by the killed publish');
  t.equal(await mountAt(target), undefined, 'no mount left at the target');
  t.same((await slotStatus(slot)).volume!.targets, [], 'no target left recorded');

  await csi.node('NodePublishVolume', request);
  await writeFile(join(target, 'rows'), 'after the retry');
  t.equal(await readFile(join(target, 'rows'), 'utf8'), 'after the retry', "kubelet's retry publishes the volume");
  await csi.node('NodeUnpublishVolume', { volume_id: request.volume_id, target_path: target });
  t.equal(await keyOf(slot), 'absent', 'and its unpublish takes the key out');
  t.equal(await mountAt(target), undefined);
  t.equal(live(node).length, 1, 'one PV for the slot');
  node.api.assertNoInvalidWrites(t);
  recordFigure({ area: 'faults', name: 'agent killed mid-publish on a frozen disk: kills', value: 1, command: COMMAND });
});
