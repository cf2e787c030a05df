// CsiServerOptions.hookObserver: it sees each publish's and unpublish's hook
// from its start, through the steps lib/volume reports, to its end, in
// order and attributed to the volume; it is told nothing about a call refused
// before its hook; and an observer that throws changes no call's outcome.
import { existsSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import t from 'tap';
import type { HookObservation } from '../../lib/agent/csi/server.js';
import { getKeyStatus } from '../../lib/kernel/index.js';
import { HOOK_STEPS, prepare } from '../../lib/volume/index.js';
import { isBindOf } from '../../lib/volume/mounts/mounts.js';
import { rejection } from '../fixtures/helpers.js';
import { handleOf, kubeletTree, mountCapability, slotTable, startServer } from '../fixtures/agent/csi.js';
import { freshSlot } from '../fixtures/volume-slot.js';

type Observer = (observation: HookObservation) => void;

async function setUp(t: Parameters<typeof freshSlot>[0], hookObserver: Observer) {
  const slot = await freshSlot(t);
  const volume = await prepare(slot.slot, slot.protector);
  const kubelet = kubeletTree(t);
  const { client } = await startServer(t, { slots: slotTable(slot), kubeletDir: kubelet.root, hookObserver });
  return { slot, volume, kubelet, client, volumeId: handleOf(volume, slot.protector) };
}

/** What an observation says, in one word: the hook's start, a step's name, the end and its outcome. */
function label({ event }: HookObservation): string {
  if (event.kind === 'step') return event.step;
  if (event.kind === 'hook-end') return `hook-end:${event.ok ? 'ok' : 'failed'}`;
  return event.kind;
}

t.test('the observer sees the publish and the unpublish hook: start, every step in order, end', async (t) => {
  const seen: HookObservation[] = [];
  const { slot, volume, kubelet, client, volumeId } = await setUp(t, (o) => void seen.push(o));
  const target = await kubelet.newTarget();

  await client.node('NodePublishVolume', { volume_id: volumeId, target_path: target, volume_capability: mountCapability() });
  t.ok(await isBindOf(target, volume.path), 'published');
  t.same(seen.map(label), ['hook-start', ...HOOK_STEPS.unlock, 'hook-end:ok'], 'unlock: start, its three steps in order, end');
  t.ok(
    seen.every((o) => o.rpc === 'NodePublishVolume' && o.volumeId === volumeId),
    'each is attributed to the publish and its volume',
  );

  seen.length = 0;
  await client.node('NodeUnpublishVolume', { volume_id: volumeId, target_path: target });
  t.notOk(existsSync(target), 'unpublished');
  t.same(seen.map(label), ['hook-start', ...HOOK_STEPS.lock, 'hook-end:ok'], 'lock (the last target): start, its three steps in order, end');
  t.ok(seen.every((o) => o.rpc === 'NodeUnpublishVolume' && o.volumeId === volumeId));
  t.equal((await getKeyStatus(slot.slot, volume.identifier)).status, 'absent');
});

t.test('a hook that fails ends with ok: false; a call refused before its hook tells the observer nothing', async (t) => {
  const seen: HookObservation[] = [];
  const { slot, volume, kubelet, client, volumeId } = await setUp(t, (o) => void seen.push(o));
  const target = await kubelet.newTarget();
  await client.node('NodePublishVolume', { volume_id: volumeId, target_path: target, volume_capability: mountCapability() });
  seen.length = 0;

  // The same target read-only: unlock refuses it (ERR_FOREIGN_MOUNT) before changing anything.
  const other = await rejection(client.node('NodePublishVolume', { volume_id: volumeId, target_path: target, volume_capability: mountCapability(), readonly: true }));
  t.equal((other as unknown as grpc.ServiceError).code, grpc.status.ALREADY_EXISTS);
  t.same(seen.map(label), ['hook-start', 'hook-end:failed'], 'the hook ran and failed, with no step');

  seen.length = 0;
  const unknown = `v1.00000000.${slot.protector.descriptor}.99.0123456789abcdef`;
  const notFound = await rejection(client.node('NodePublishVolume', { volume_id: unknown, target_path: await kubelet.newTarget(), volume_capability: mountCapability() }));
  t.equal((notFound as unknown as grpc.ServiceError).code, grpc.status.NOT_FOUND);
  const invalid = await rejection(client.node('NodePublishVolume', { volume_id: volumeId, target_path: target }));
  t.equal((invalid as unknown as grpc.ServiceError).code, grpc.status.INVALID_ARGUMENT);
  t.same(seen, [], 'no hook ran, nothing observed');

  await client.node('NodeUnpublishVolume', { volume_id: volumeId, target_path: target });
  t.equal((await getKeyStatus(slot.slot, volume.identifier)).status, 'absent');
});

t.test('an observer that throws on every event fails no call and changes nothing', async (t) => {
  let calls = 0;
  const { slot, volume, kubelet, client, volumeId } = await setUp(t, () => {
    calls++;
    throw new Error('observer down');
  });
  const target = await kubelet.newTarget();

  await client.node('NodePublishVolume', { volume_id: volumeId, target_path: target, volume_capability: mountCapability() });
  t.ok(await isBindOf(target, volume.path), 'published all the same');
  t.equal((await getKeyStatus(slot.slot, volume.identifier)).status, 'present', 'the key is in');
  t.equal(calls, HOOK_STEPS.unlock.length + 2, 'the observer was called for the start, every step and the end, and threw each time');

  await client.node('NodeUnpublishVolume', { volume_id: volumeId, target_path: target });
  t.notOk(existsSync(target), 'unpublished all the same');
  t.equal((await getKeyStatus(slot.slot, volume.identifier)).status, 'absent', 'the key is out');
  t.equal(calls, 2 * (HOOK_STEPS.unlock.length + 2));
});
