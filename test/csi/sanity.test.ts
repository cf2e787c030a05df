// csi-sanity's Identity and Node suites (kubernetes-csi/csi-test v5.5.0,
// pkg/sanity), ported check by check for a node-only driver: the real
// server on its unix socket, a real grpc-js client with authority localhost,
// a real volume on a loop ext4 slot. The tests csi-sanity runs only through
// Controller RPCs (CreateVolume) are mirrored on a prepared volume, and the
// lifecycle tests it auto-skips without CONTROLLER_SERVICE are run anyway.
import { existsSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import t from 'tap';
import { prepare } from '../../lib/volume/index.js';
import { rejection } from '../fixtures/helpers.js';
import { handleOf, kubeletTree, mountCapability, rawCall, slotTable, startServer } from '../fixtures/agent/csi.js';
import { freshSlot } from '../fixtures/volume-slot.js';

const KNOWN_PLUGIN_SERVICES = ['CONTROLLER_SERVICE', 'VOLUME_ACCESSIBILITY_CONSTRAINTS', 'GROUP_CONTROLLER_SERVICE', 'SNAPSHOT_METADATA_SERVICE'];
const KNOWN_NODE_RPCS = ['STAGE_UNSTAGE_VOLUME', 'GET_VOLUME_STATS', 'EXPAND_VOLUME', 'VOLUME_CONDITION', 'SINGLE_NODE_MULTI_WRITER', 'VOLUME_MOUNT_GROUP'];

const slot = await freshSlot(t);
const volume = await prepare(slot.slot, slot.protector);
const kubelet = kubeletTree(t);
const { client, socket } = await startServer(t, { slots: slotTable(slot), kubeletDir: kubelet.root });
const volumeId = handleOf(volume, slot.protector);

function codeOf(error: unknown): string {
  return grpc.status[(error as grpc.ServiceError).code]!;
}

t.test('Identity: GetPluginInfo returns a valid name and a vendor version', async (t) => {
  const info = await client.identity<{ name: string; vendor_version: string }>('GetPluginInfo');
  t.equal(info.name, 'fscrypt-local.github.io');
  t.ok(info.name.length > 0 && info.name.length <= 63, 'at most 63 characters');
  t.match(info.name, /^[A-Za-z].*[A-Za-z]$/, 'starts and ends with a letter (csi-sanity is stricter than the spec)');
  t.ok(info.vendor_version.length > 0, 'vendor_version is set');
});

t.test('Identity: GetPluginCapabilities returns only known types', async (t) => {
  const { capabilities } = await client.identity<{ capabilities: { service?: { type: string } }[] }>('GetPluginCapabilities');
  for (const c of capabilities) t.ok(c.service && KNOWN_PLUGIN_SERVICES.includes(c.service.type), `known: ${JSON.stringify(c)}`);
  t.notOk(
    capabilities.some((c) => c.service?.type === 'CONTROLLER_SERVICE'),
    'a node-only driver does not advertise CONTROLLER_SERVICE',
  );
});

t.test('Identity: Probe returns OK (or FAILED_PRECONDITION)', async (t) => {
  const probe = await client.identity<{ ready: { value: boolean } | null }>('Probe');
  t.same(probe.ready, { value: true });
});

t.test('Node: NodeGetCapabilities succeeds; every capability has rpc set, with a known type', async (t) => {
  const { capabilities } = await client.node<{ capabilities: { rpc?: { type: string }; type: string }[] }>('NodeGetCapabilities');
  t.ok(capabilities.length > 0);
  for (const c of capabilities) t.ok(c.rpc && KNOWN_NODE_RPCS.includes(c.rpc.type), `known: ${JSON.stringify(c)}`);
  t.same(capabilities.map((c) => c.rpc!.type).sort(), ['GET_VOLUME_STATS', 'VOLUME_CONDITION']);
});

t.test('Node: NodeGetInfo has a node id, a volume limit >= 0, and no topology (none advertised)', async (t) => {
  const info = await client.node<{ node_id: string; max_volumes_per_node: string; accessible_topology: unknown }>('NodeGetInfo');
  t.equal(info.node_id, 'node-a');
  t.equal(info.max_volumes_per_node, '0', 'no limit');
  t.equal(info.accessible_topology, null);
});

t.test('NodePublishVolume: INVALID_ARGUMENT without volume id, target path or capability (before any lookup)', async (t) => {
  const random = randomUUID();
  t.equal(codeOf(await rejection(client.node('NodePublishVolume', {}))), 'INVALID_ARGUMENT', '{}');
  t.equal(codeOf(await rejection(client.node('NodePublishVolume', { volume_id: random }))), 'INVALID_ARGUMENT', '{volume_id}');
  t.equal(codeOf(await rejection(client.node('NodePublishVolume', { volume_id: random, target_path: '/tmp/csi-mount/target' }))), 'INVALID_ARGUMENT', '{volume_id, target_path}');
  const missing = await rejection(client.node('NodePublishVolume', { volume_id: volumeId, target_path: await kubelet.newTarget() }));
  t.match(missing, { code: grpc.status.INVALID_ARGUMENT, details: /volume_capability is required/ }, 'a real volume is not looked up either');
});

t.test('NodeUnpublishVolume: INVALID_ARGUMENT without volume id or target path', async (t) => {
  t.equal(codeOf(await rejection(client.node('NodeUnpublishVolume', {}))), 'INVALID_ARGUMENT', '{}');
  t.equal(codeOf(await rejection(client.node('NodeUnpublishVolume', { volume_id: randomUUID() }))), 'INVALID_ARGUMENT', '{volume_id}');
});

t.test('NodeUnpublishVolume: should remove target path', async (t) => {
  const target = await kubelet.newTarget();
  await client.node('NodePublishVolume', { volume_id: volumeId, target_path: target, volume_capability: mountCapability() });
  t.ok(existsSync(target), 'the driver created the target');
  await client.node('NodeUnpublishVolume', { volume_id: volumeId, target_path: target });
  t.notOk(existsSync(target), 'and removed it');
});

t.test('NodeGetVolumeStats: INVALID_ARGUMENT without id or path; NOT_FOUND for a random id or a wrong path', async (t) => {
  const target = await kubelet.newTarget();
  await client.node('NodePublishVolume', { volume_id: volumeId, target_path: target, volume_capability: mountCapability() });
  t.teardown(() => client.node('NodeUnpublishVolume', { volume_id: volumeId, target_path: target }));
  t.equal(codeOf(await rejection(client.node('NodeGetVolumeStats', { volume_path: target }))), 'INVALID_ARGUMENT', 'no volume id');
  t.equal(codeOf(await rejection(client.node('NodeGetVolumeStats', { volume_id: volumeId }))), 'INVALID_ARGUMENT', 'no volume path');
  t.equal(codeOf(await rejection(client.node('NodeGetVolumeStats', { volume_id: randomUUID(), volume_path: 'some/path' }))), 'NOT_FOUND', 'a random id');
  t.equal(codeOf(await rejection(client.node('NodeGetVolumeStats', { volume_id: volumeId, volume_path: '/some/path' }))), 'NOT_FOUND', 'a real volume, a wrong path');
  t.equal(codeOf(await rejection(client.node('NodeGetVolumeStats', { volume_id: volumeId, volume_path: await kubelet.newTarget() }))), 'NOT_FOUND', 'a real volume, another pod’s path');
});

t.test('Node: Stage and Unstage are not advertised and answer UNIMPLEMENTED', async (t) => {
  for (const method of ['NodeStageVolume', 'NodeUnstageVolume', 'NodeExpandVolume']) {
    t.equal((await rawCall(socket, `/csi.v1.Node/${method}`))?.code, grpc.status.UNIMPLEMENTED, method);
  }
  t.equal((await rawCall(socket, '/csi.v1.Controller/CreateVolume'))?.code, grpc.status.UNIMPLEMENTED, 'no Controller service');
});

t.test('lifecycle: should work (publish, stats, unpublish)', async (t) => {
  const target = await kubelet.newTarget();
  await client.node('NodePublishVolume', { volume_id: volumeId, target_path: target, volume_capability: mountCapability() });
  const stats = await client.node<{ usage: { unit: string; total: string; used: string; available: string }[]; volume_condition: { abnormal: boolean } }>('NodeGetVolumeStats', {
    volume_id: volumeId,
    volume_path: target,
  });
  t.same(stats.usage.map((u) => u.unit).sort(), ['BYTES', 'INODES']);
  for (const u of stats.usage) t.ok(BigInt(u.total) > 0n && BigInt(u.used) >= 0n && BigInt(u.available) >= 0n, `${u.unit}: total > 0, nothing negative`);
  t.equal(stats.volume_condition.abnormal, false);
  await client.node('NodeUnpublishVolume', { volume_id: volumeId, target_path: target });
  t.notOk(existsSync(target));
});

t.test('lifecycle: should be idempotent (10 publishes to one target, then usage)', async (t) => {
  const target = await kubelet.newTarget();
  for (let i = 0; i < 10; i++) await client.node('NodePublishVolume', { volume_id: volumeId, target_path: target, volume_capability: mountCapability() });
  const stats = await client.node<{ usage: unknown[] }>('NodeGetVolumeStats', { volume_id: volumeId, volume_path: target });
  t.equal(stats.usage.length, 2);
  for (let i = 0; i < 10; i++) await client.node('NodeUnpublishVolume', { volume_id: volumeId, target_path: target });
  t.notOk(existsSync(target));
});
