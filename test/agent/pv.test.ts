// The PersistentVolume the agent writes, field by field from the config and
// the StorageClass (and valid for a real API server: the fake validates
// every write with kubernetes-models); mount options a bind mount cannot
// honour refused with an Event; and what an operator reads off a running
// agent: /metrics, /healthz, /readyz, and a busy lock told as an Event.
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { slotStatus } from '../../lib/volume/index.js';
import { agentNode, CLASS, defaultConfig, NODE_NAME } from '../fixtures/agent/agent.js';
import { mountCapability } from '../fixtures/agent/csi.js';

t.test('the PV follows the config: labels, owner reference, selector, access mode, fsType', async (t) => {
  const node = await agentNode(t);
  node.addSlot('ssd0');
  const node_ = node.api.get('nodes', NODE_NAME)!;
  node.writeConfig({
    storageClassMap: [
      `${CLASS}:`,
      `  hostDir: ${node.hostDir}`,
      `  accessMode: ReadWriteOncePod`,
      `  fsType: ext4`,
      `  selector:`,
      `    - matchExpressions:`,
      `        - key: topology.kubernetes.io/zone`,
      `          operator: In`,
      `          values: [zone-1]`,
      `  fscrypt:`,
      `    keySource: file:${node.kek}`,
      '',
    ].join('\n'),
    labelsForPV: 'team: storage\n',
    nodeLabelsForPV: '- topology.kubernetes.io/zone\n- not.on/this-node\n',
    setPVOwnerRef: 'true',
  });
  await node.start();
  const pv = (await node.until('a PV', () => node.pvs()[0])) as any;
  t.same(pv.spec.accessModes, ['ReadWriteOncePod']);
  t.equal(pv.spec.csi.fsType, 'ext4');
  t.equal(pv.metadata.labels.team, 'storage', 'labelsForPV');
  t.equal(pv.metadata.labels['topology.kubernetes.io/zone'], 'zone-1', 'nodeLabelsForPV, for labels the Node has');
  t.notOk('not.on/this-node' in pv.metadata.labels, 'a label the Node lacks is not invented');
  t.same(pv.metadata.ownerReferences, [{ apiVersion: 'v1', kind: 'Node', name: NODE_NAME, uid: (node_.metadata as any).uid }], 'setPVOwnerRef');
  const terms = pv.spec.nodeAffinity.required.nodeSelectorTerms;
  t.equal(terms.length, 2, 'the hostname term, ORed with the selector term (upstream semantics)');
  t.same(terms[1], { matchExpressions: [{ key: 'topology.kubernetes.io/zone', operator: 'In', values: ['zone-1'] }] });
  t.match(pv.spec.capacity.storage, /^\d+(Mi)?$/, 'capacity from statfs with upstream rounding');
  node.api.assertNoInvalidWrites(t);
});

t.test('StorageClass mount options a bind mount cannot honour: no PV, and an Event says which', async (t) => {
  const node = await agentNode(t);
  node.api.put('storageclasses', { ...node.api.get('storageclasses', CLASS), mountOptions: ['noatime', 'ro'] });
  node.addSlot('ssd0');
  node.writeConfig(defaultConfig(node.kek, node.hostDir));
  await node.start();
  const event = await node.until('a MountOptionsRefused event', () => node.api.events().find((e) => (e as any).reason === 'MountOptionsRefused'));
  t.match((event as any).message, /noatime/);
  t.notMatch((event as any).message, /\bro\b.*cannot/, 'ro is honoured, only noatime is named');
  t.equal(node.pvs().length, 0);
});

t.test('metrics, health and readiness of a running agent; a busy lock told as an Event', async (t) => {
  const node = await agentNode(t);
  const slot = node.addSlot('ssd0');
  node.writeConfig(defaultConfig(node.kek, node.hostDir));
  const agent = await node.start();
  const { host, port } = agent.running.health;
  const get = async (path: string) => {
    const response = await fetch(`http://${host}:${port}${path}`);
    return { status: response.status, text: await response.text() };
  };
  const pv = (await node.until('a PV', () => node.pvs()[0])) as any;
  await node.until('ready', async () => (await get('/readyz')).status === 200);
  t.equal((await get('/healthz')).status, 200);

  node.api.bind(pv.metadata.name, { namespace: 'default', name: 'claim-1' });
  const target = await node.kubelet.newTarget(pv.metadata.name);
  await agent.csi.node('NodePublishVolume', { volume_id: pv.spec.csi.volumeHandle, target_path: target, volume_capability: mountCapability() });
  await writeFile(join(target, 'held'), 'x');
  // A process on the host holds a file of the volume open, from the volume directory itself (not the target).
  const status = await slotStatus(slot);
  const holder = spawn('sh', ['-c', `exec 3<'${join(status.volume!.path, 'held')}'; echo open; exec sleep 60`], { stdio: ['ignore', 'pipe', 'ignore'] });
  t.teardown(() => holder.kill('SIGKILL'));
  await new Promise((resolve) => holder.stdout.once('data', resolve));
  await agent.csi.node('NodeUnpublishVolume', { volume_id: pv.spec.csi.volumeHandle, target_path: target });
  const busy = await node.until('a LockBusy event', () => node.api.events().find((e) => (e as any).reason === 'LockBusy'));
  t.match((busy as any).message, new RegExp(`pid ${holder.pid}|\\bsh\\b`), 'the event names the process holding the files');
  t.equal((busy as any).involvedObject.name, pv.metadata.name, 'on the PV');
  // The metrics show the key still in the kernel with no target: the invariant-2 signal is not 0 while it lasts.
  await node.until('keys_without_target 1', async () => /fscrypt_local_keys_without_target 1\b/.test((await get("/metrics")).text), 45_000);
  holder.kill('SIGKILL');
  await node.until('the key removed once the holder exits', async () => (await slotStatus(slot)).volume?.key === 'absent', 60_000);
  await node.until('keys_without_target back to 0', async () => /fscrypt_local_keys_without_target 0\b/.test((await get("/metrics")).text), 45_000);
  const metrics = (await get('/metrics')).text;
  t.match(metrics, /fscrypt_local_volumes\{state="locked"\} 1/);
  t.match(metrics, /fscrypt_local_hook_duration_seconds_count\{hook="slot-setup",outcome="ok"\}/);
  t.match(metrics, /fscrypt_local_api_requests_total\{verb="create",resource="persistentvolumes"\}/);
  node.api.assertNoInvalidWrites(t);
});
