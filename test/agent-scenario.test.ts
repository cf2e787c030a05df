// The agent's whole story on one slot, on the real kernel, with only the
// Kubernetes API faked: discovery → PV → Bound → NodePublish (a real gRPC
// client playing kubelet) → write → NodeUnpublish (locked: ENOKEY, only
// ciphertext on disk) → Released → crypto-erase → a new PV with a new key →
// the old handle refused → the old data unrecoverable.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { slotStatus } from '../lib/volume/index.js';
import { agentNode, CLASS, NODE_NAME, TAINT } from './fixtures/agent.js';
import { mountCapability } from './fixtures/csi.js';
import { failure } from './fixtures/helpers.js';
import { syncFs } from './fixtures/scratch-fs.js';

const MARKER = Buffer.from('tenant-one-secret-ledger-0123456789');

t.test('discover, offer, publish, lock, release, crypto-erase, offer afresh', async (t) => {
  const node = await agentNode(t);
  const slot = node.addSlot('ssd0');
  node.writeConfig({
    storageClassMap: `${CLASS}:\n  hostDir: ${node.hostDir}\n  mountDir: ${node.hostDir}\n  fscrypt:\n    keySource: file:${node.kek}\n`,
    removeNodeNotReadyTaint: 'true',
    nodeLabelsForPV: '- topology.kubernetes.io/zone\n',
  });
  const agent = await node.start();

  // Discovery → one PV for generation 1, its policy verified; then ready, and the start-up taint goes.
  const pv = await node.until('a PV for the slot', () => node.pvs()[0]);
  const spec = pv.spec as Record<string, any>;
  const meta = pv.metadata as Record<string, any>;
  t.equal(node.pvs().length, 1, 'exactly one PV');
  t.equal(spec.csi.driver, 'fscrypt-local.github.io');
  t.equal(spec.storageClassName, CLASS);
  t.equal(spec.persistentVolumeReclaimPolicy, 'Delete');
  t.same(spec.accessModes, ['ReadWriteOnce']);
  t.equal(spec.volumeMode, 'Filesystem');
  t.same(spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0], { key: 'kubernetes.io/hostname', operator: 'In', values: [NODE_NAME] });
  t.equal(meta.labels['topology.kubernetes.io/zone'], 'zone-1', 'nodeLabelsForPV copied');
  t.equal(meta.annotations['pv.kubernetes.io/provisioned-by'], 'fscrypt-local.github.io');
  const status1 = await slotStatus(slot);
  t.equal(meta.annotations['fscrypt-local.github.io/key-identifier'], status1.volume!.identifier, 'the evidence is the kernel-verified key identifier');
  t.match(meta.annotations['fscrypt-local.github.io/policy'], /^v2 AES_256_XTS\/AES_256_CTS padding 32$/);
  t.notOk(JSON.stringify(pv).includes(readFileSync(node.kek).toString('hex')), 'no key byte in the PV');
  await node.until('ready', () => agent.running.agent.readiness().ok);
  await node.until('the start-up taint removed', () => ((node.api.get('nodes', NODE_NAME)!.spec as any).taints ?? []).every((x: any) => x.key !== TAINT));

  // Bound: the agent records the claim; kubelet publishes.
  node.api.bind(meta.name, { namespace: 'default', name: 'data-db-0' });
  await node.until('the claim recorded', async () => (await slotStatus(slot)).volume?.claimed);
  const target = await node.kubelet.newTarget(meta.name);
  await agent.csi.node('NodePublishVolume', { volume_id: spec.csi.volumeHandle, target_path: target, volume_capability: mountCapability(), readonly: false });
  await writeFile(join(target, 'ledger'), MARKER);
  t.same(await readFile(join(target, 'ledger')), MARKER, 'the pod reads its data');

  // Last unpublish: locked. Reads fail with ENOKEY, and the disk holds only ciphertext.
  await agent.csi.node('NodeUnpublishVolume', { volume_id: spec.csi.volumeHandle, target_path: target });
  const locked = await slotStatus(slot);
  t.equal(locked.volume!.key, 'absent', 'the key left the kernel');
  // Without the key the name is encrypted too: the one entry has a no-key name, and opening it is ENOKEY.
  const names = readdirSync(locked.volume!.path);
  t.equal(names.length, 1);
  t.notOk(names.includes('ledger'), 'the file name is ciphertext');
  t.match(await failure(() => readFile(join(locked.volume!.path, names[0]!))), { errno: -126 }, 'a read after the lock is ENOKEY (126, which Node has no name for)');
  syncFs(node.fs.mountpoint);
  t.notOk(readFileSync(node.fs.image!).includes(MARKER), 'the raw device holds no plaintext');

  // Released with reclaim Delete: crypto-erase, the old PV deleted, a new PV with a new key.
  node.api.release(meta.name);
  const next = await node.until('a PV for generation 2', () => node.pvs().find((p) => (p.metadata as any).name !== meta.name && !(p.metadata as any).deletionTimestamp));
  await node.until('the old PV gone', () => node.api.get('persistentvolumes', meta.name) === undefined);
  t.equal(node.pvs().length, 1, 'one PV per slot');
  const nextMeta = next.metadata as Record<string, any>;
  t.not(nextMeta.name, meta.name, 'a new tenant never sees the old PV name');
  t.equal(nextMeta.annotations['fscrypt-local.github.io/generation'], '2');
  t.not(nextMeta.annotations['fscrypt-local.github.io/key-identifier'], meta.annotations['fscrypt-local.github.io/key-identifier'], 'a new key');
  const status2 = await slotStatus(slot);
  t.equal(status2.volume!.generation, 2);
  t.equal(status2.volume!.claimed, false, 'the new generation is unclaimed');

  // The old handle is refused: nothing unlocked or mounted.
  const oldTarget = await node.kubelet.newTarget(meta.name);
  const refused = await failure(() => agent.csi.node('NodePublishVolume', { volume_id: spec.csi.volumeHandle, target_path: oldTarget, volume_capability: mountCapability() }));
  t.equal(refused.code, 5, 'NOT_FOUND for the erased generation');
  // The old data cannot come back: its key is destroyed everywhere the agent wrote it.
  await agent.running.agent.trash.idle();
  syncFs(node.fs.mountpoint);
  t.notOk(readFileSync(node.fs.image!).includes(MARKER), 'still no plaintext on disk');
  const policies = join(slot, '.fscrypt', 'policies');
  t.notOk(
    readdirSync(policies).includes(meta.annotations['fscrypt-local.github.io/key-identifier']),
    'the old policy (wrapped key) file is gone',
  );

  // Events told the story; every object written was valid for a real API server.
  const reasons = node.api.events().map((e) => (e as any).reason);
  t.ok(reasons.includes('Prepared'), 'a Prepared event');
  t.ok(reasons.includes('CryptoErased'), 'a CryptoErased event');
  node.api.assertNoInvalidWrites(t);

  await agent.stop();
  t.notOk(existsSync(node.socket), 'the socket is removed at shutdown');
});
