// The agent against what goes wrong around it: the API server down at start
// and misbehaving mid-run (500s, dropped watches, 410 Gone), a config change
// that is invalid, a slot unmounted under it, an admin deleting a Retained
// PV, and directories it must never adopt (someone else's files, another key
// source's slot). Each ends with the invariants holding and the problem
// told in words an operator can act on.
import { execFileSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { parseKeySource } from '../../lib/keys/index.js';
import { initSlot, slotStatus } from '../../lib/volume/index.js';
import { agentNode, CLASS, defaultConfig, type AgentNode } from '../fixtures/agent/agent.js';

const live = (node: AgentNode) => node.pvs().filter((pv) => !(pv.metadata as any).deletionTimestamp);
const reasons = (node: AgentNode) => node.api.events().map((e) => `${(e as any).reason}: ${(e as any).message}`);

async function boundAndReleased(node: AgentNode) {
  const pv = await node.until('a PV', () => live(node)[0]);
  const name = (pv.metadata as any).name as string;
  node.api.bind(name, { namespace: 'default', name: 'claim-1' });
  node.api.release(name);
  return name;
}

t.test('API server down at start: CSI serves, not ready, and once it is up the PV appears', async (t) => {
  const node = await agentNode(t);
  node.addSlot('ssd0');
  node.writeConfig(defaultConfig(node.kek, node.hostDir));
  await node.api.down();
  const agent = await node.start();
  const { ready } = await agent.csi.identity<{ ready: { value: boolean } | null }>('Probe').then(
    (r) => ({ ready: r.ready?.value }),
    (e: { code: number; details: string }) => ({ ready: `${e.code}: ${e.details}` }),
  );
  t.match(String(ready), /9: .*PersistentVolumes not listed yet/, 'Probe is FAILED_PRECONDITION and says why');
  t.equal(agent.running.agent.readiness().ok, false);
  t.equal(node.pvs().length, 0);
  await node.api.up();
  await node.until('a PV once the API server is back', () => live(node)[0]);
  await node.until('ready', () => agent.running.agent.readiness().ok);
  t.equal(live(node).length, 1);
  node.api.assertNoInvalidWrites(t);
});

t.test('500s, dropped watches and 410 Gone mid-run: the reclaim still happens, once', async (t) => {
  const node = await agentNode(t);
  const slot = node.addSlot('ssd0');
  node.writeConfig(defaultConfig(node.kek, node.hostDir));
  const agent = await node.start();
  await node.until('ready', () => agent.running.agent.readiness().ok);

  node.api.dropWatches({ reset: true });
  node.api.failNext({ status: 500, verb: 'list', count: 3 });
  node.api.expireWatches();
  const old = await boundAndReleased(node);
  node.api.failNext({ status: 500, verb: 'create', count: 2 });
  const next = await node.until('a new PV after the faults', () => live(node).find((pv) => (pv.metadata as any).name !== old));
  await node.until('the old PV gone', () => node.api.get('persistentvolumes', old) === undefined);
  t.equal(live(node).length, 1, 'one PV per slot');
  t.equal((next.metadata as any).annotations['fscrypt-local.github.io/generation'], String((await slotStatus(slot)).volume!.generation));
  node.api.assertNoInvalidWrites(t);
});

t.test('a watch that goes silent is restarted by the staleness watchdog', async (t) => {
  const node = await agentNode(t);
  node.addSlot('ssd0');
  node.writeConfig(defaultConfig(node.kek, node.hostDir));
  const agent = await node.start({ timings: { configPeriodMs: 200, retry: { initialMs: 100, maxMs: 1000 }, informerRestart: { initialMs: 100, maxMs: 1000 }, informerStaleAfterMs: 1500 } });
  await node.until('a PV', () => live(node)[0]);
  const lists = () => node.api.requests.filter((r) => r.verb === 'list' && r.resource === 'persistentvolumes').length;
  const before = lists();
  // The watch stays open but silent (nothing changes): the watchdog must notice and list again.
  await node.until('a re-list by the watchdog', () => lists() > before, 20_000);
  t.match(agent.logs(), /heard nothing for too long; restarting it/, 'and says so');
  // Still working after the restart: a release is reclaimed.
  const old = await boundAndReleased(node);
  await node.until('reclaimed after the restart', () => live(node).some((pv) => (pv.metadata as any).name !== old));
});

t.test('an invalid config change is rejected and told; the agent keeps its last good config', async (t) => {
  const node = await agentNode(t);
  node.addSlot('ssd0');
  node.writeConfig(defaultConfig(node.kek, node.hostDir));
  const agent = await node.start();
  await node.until('a PV', () => live(node)[0]);
  node.writeConfig({ ...defaultConfig(node.kek, node.hostDir), storageClassMap: `${CLASS}:\n  hostDir: ${node.hostDir}\n  volumeMode: Block\n  fscrypt:\n    keySource: file:${node.kek}\n` });
  const event = await node.until('a ConfigRejected event', () => node.api.events().find((e) => (e as any).reason === 'ConfigRejected'));
  t.match((event as any).message, /storageClassMap.*volumeMode.*(LUKS|dm-crypt)/s, 'the event names the key and points to dm-crypt/LUKS');
  t.equal(agent.running.agent.readiness().ok, true, 'still ready');
  t.equal(agent.running.config().config.classes[0]!.volumeMode, 'Filesystem', 'running on the last good config');
  t.equal(live(node).length, 1, 'the PV is untouched');
  node.writeConfig({ ...defaultConfig(node.kek, node.hostDir), labelsForPV: 'team: storage\n' });
  await node.until('the fixed config applied', () => agent.running.config().config.labelsForPV.team === 'storage');
});

t.test('a slot unmounted under the agent is reported and not offered again', async (t) => {
  const node = await agentNode(t);
  const slot = node.addSlot('ssd0');
  node.writeConfig(defaultConfig(node.kek, node.hostDir));
  const agent = await node.start();
  const pv = await node.until('a PV', () => live(node)[0]);
  execFileSync('umount', ['-l', slot]); // lazy: the agent may be reading the slot's state at this moment
  const gone = await node.until('a SlotGone event', () => node.api.events().find((e) => (e as any).reason === 'SlotGone'));
  t.match((gone as any).message, /no longer a mount point/);
  t.equal(agent.running.agent.status().slots[0]!.condition, 'gone');
  // The plain directory left behind is never made a slot.
  t.notOk(existsSync(join(slot, '.fscrypt')), 'nothing written into the bare directory');
  t.same(live(node).map((p) => (p.metadata as any).name), [(pv.metadata as any).name], 'its PV is left as it is (an admin decides), no new one');
});

t.test('a Retained PV deleted by an admin: its generation is never offered again', async (t) => {
  const node = await agentNode(t, { reclaimPolicy: 'Retain' });
  const slot = node.addSlot('ssd0');
  node.writeConfig(defaultConfig(node.kek, node.hostDir));
  const agent = await node.start();
  const name = await boundAndReleased(node);
  await node.until('the claim recorded', async () => (await slotStatus(slot)).volume?.claimed);
  node.api.delete('persistentvolumes', name);
  await node.until('the PV gone', () => node.api.get('persistentvolumes', name) === undefined);
  const waiting = await node.until('the slot reported', () => {
    const why = agent.running.agent.status().slots[0]?.waiting;
    return why !== undefined && /PersistentVolume is gone/.test(why) ? why : undefined;
  });
  t.match(waiting, /never offered again.*fscrypt-local erase/);
  await agent.running.agent.settle();
  t.equal(node.pvs().length, 0, 'no PV re-created over the previous tenant’s data');
  t.equal((await slotStatus(slot)).volume!.generation, 1, 'the data is kept (Retain): not erased');
  t.ok(reasons(node).some((r) => /^SlotWaiting: .*never offered again/.test(r)), 'an Event says what to do');
});

t.test('a directory holding someone else’s files is refused and never adopted', async (t) => {
  const node = await agentNode(t);
  const slot = node.addSlot('ssd0');
  writeFileSync(join(slot, 'customers.db'), 'plaintext rows');
  node.writeConfig(defaultConfig(node.kek, node.hostDir));
  const agent = await node.start();
  const refused = await node.until('a SlotRefused event', () => node.api.events().find((e) => (e as any).reason === 'SlotRefused'));
  t.match((refused as any).message, /customers\.db.*never adopts/);
  await node.until('ready (a refused slot does not hold start-up)', () => agent.running.agent.readiness().ok);
  t.equal(node.pvs().length, 0, 'no PV');
  t.notOk(existsSync(join(slot, '.fscrypt')), 'no metadata written beside the files');
  t.equal(agent.running.agent.status().slots[0]!.condition, 'refused');
  await new Promise((resolve) => setTimeout(resolve, 1500)); // discovery passes look at it again
  t.equal(node.api.events().filter((e) => (e as any).reason === 'SlotRefused').length, 1, 'told once, not at every pass');
  t.equal(((node.api.events().find((e) => (e as any).reason === 'SlotRefused') as any).count ?? 1), 1);

  // The operator moves the files away: the next discovery adopts the slot.
  rmSync(join(slot, 'customers.db'));
  await node.until('a PV once the slot is clean', () => node.pvs()[0]);
  t.equal(agent.running.agent.status().slots[0]!.condition, 'ready');
});

t.test('a slot made with another key source is refused clearly', async (t) => {
  const node = await agentNode(t);
  const slot = node.addSlot('ssd0');
  const otherKek = join(node.configDir, '..', 'other-kek');
  writeFileSync(otherKek, randomFillSync(Buffer.alloc(32)), { mode: 0o600 });
  await initSlot(slot, parseKeySource(`file:${otherKek}`));
  node.writeConfig(defaultConfig(node.kek, node.hostDir));
  await node.start();
  const refused = await node.until('a SlotRefused event', () => node.api.events().find((e) => (e as any).reason === 'SlotRefused'));
  t.match((refused as any).message, /belongs to another key source/);
  t.equal(node.pvs().length, 0);
});
