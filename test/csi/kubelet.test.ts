// kubelet's scenarios against the CSI node service: the real server on its
// socket, a real grpc-js client, loop ext4 slots prepared with lib/volume and
// real bind mounts into a kubelet-like tree on a tmpfs. Publish and unpublish
// twice, two pods on one volume unpublished concurrently, a kubelet restart,
// a node reboot, read-only targets, and every way a caller of the socket
// could try to have something mounted where it should not be.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import t from 'tap';
import { formatVolumeHandle } from '../../lib/agent/csi/index.js';
import { getKeyStatus, removeKey } from '../../lib/kernel/index.js';
import { prepare, reconcile, recycle, slotStatus, TrashCollector, type Volume } from '../../lib/volume/index.js';
import { mountAt } from '../../lib/volume/mounts/mounts.js';
import { withSlotLock } from '../../lib/volume/slot/slot-lock.js';
import { rejection } from '../fixtures/helpers.js';
import { CsiServer, type CsiServerOptions } from '../../lib/agent/csi/index.js';
import { csiClient, handleOf, kubeletTree, mountCapability, NODE, recordingLog, slotTable, startServer } from '../fixtures/agent/csi.js';
import { scratchDir } from '../fixtures/system/scratch-fs.js';
import { freshSlot } from '../fixtures/volume-slot.js';

type Slot = Awaited<ReturnType<typeof freshSlot>>;

async function setUp(t: Parameters<typeof freshSlot>[0], options: Partial<CsiServerOptions> = {}) {
  const slot = await freshSlot(t);
  const volume = await prepare(slot.slot, slot.protector);
  const kubelet = kubeletTree(t);
  const running = await startServer(t, { slots: slotTable(slot), kubeletDir: kubelet.root, ...options });
  return { slot, volume, kubelet, ...running, volumeId: handleOf(volume, slot.protector) };
}

function publishRequest(volumeId: string, target: string, extra: object = {}): object {
  return { volume_id: volumeId, target_path: target, volume_capability: mountCapability(), ...extra };
}

function codeName(error: unknown): string {
  return grpc.status[(error as grpc.ServiceError).code]!;
}

async function keyOf(slot: Slot, volume: Volume): Promise<string> {
  return (await getKeyStatus(slot.slot, volume.identifier)).status;
}

t.test('publish twice, unpublish twice: idempotent; the other readonly setting at the same target is ALREADY_EXISTS', async (t) => {
  const { slot, volume, kubelet, client, volumeId } = await setUp(t);
  const target = await kubelet.newTarget();
  await client.node('NodePublishVolume', publishRequest(volumeId, target));
  await writeFile(join(target, 'hello'), 'world');
  await client.node('NodePublishVolume', publishRequest(volumeId, target));
  t.equal(await readFile(join(target, 'hello'), 'utf8'), 'world', 'the second publish changed nothing');
  t.equal((await slotStatus(slot.slot)).volume?.targets.length, 1, 'one target recorded');

  const other = await rejection(client.node('NodePublishVolume', publishRequest(volumeId, target, { readonly: true })));
  t.match(other, { code: grpc.status.ALREADY_EXISTS, details: /already has a different mount/ });
  t.match(other.details, new RegExp(`volume "${volumeId}" on node ${NODE}`), 'the message names the volume and the node');

  await client.node('NodeUnpublishVolume', { volume_id: volumeId, target_path: target });
  t.notOk(existsSync(target), 'the target the driver made is removed');
  t.equal(await keyOf(slot, volume), 'absent', 'the last unpublish took the key out');
  await client.node('NodeUnpublishVolume', { volume_id: volumeId, target_path: target });
  t.pass('a second unpublish of a removed target is OK');
  await client.node('NodeUnpublishVolume', { volume_id: volumeId, target_path: await kubelet.newTarget() });
  t.pass('so is an unpublish of a target never published');
});

t.test('two pods on one volume: the key stays while either target is published; their concurrent unpublish is safe', async (t) => {
  const { slot, volume, kubelet, client, volumeId } = await setUp(t);
  const [a, b] = [await kubelet.newTarget(), await kubelet.newTarget()];
  await Promise.all([client.node('NodePublishVolume', publishRequest(volumeId, a)), client.node('NodePublishVolume', publishRequest(volumeId, b))]);
  await writeFile(join(a, 'shared'), 'both pods see this');
  t.equal(await readFile(join(b, 'shared'), 'utf8'), 'both pods see this');

  await client.node('NodeUnpublishVolume', { volume_id: volumeId, target_path: a });
  t.equal(await keyOf(slot, volume), 'present', 'one target left: the key stays');
  t.equal(await readFile(join(b, 'shared'), 'utf8'), 'both pods see this', 'the other pod still reads');

  await client.node('NodePublishVolume', publishRequest(volumeId, a));
  await Promise.all([client.node('NodeUnpublishVolume', { volume_id: volumeId, target_path: a }), client.node('NodeUnpublishVolume', { volume_id: volumeId, target_path: b })]);
  t.notOk(existsSync(a) || existsSync(b), 'both targets removed');
  t.equal(await keyOf(slot, volume), 'absent', 'the key is out once both are gone');
  t.same((await slotStatus(slot.slot)).volume?.targets, [], 'no target recorded');
});

t.test('kubelet restart: a publish onto the existing, correct mount is OK and keeps the data', async (t) => {
  const { slot, volume, kubelet, client, server, volumeId } = await setUp(t);
  const target = await kubelet.newTarget();
  await client.node('NodePublishVolume', publishRequest(volumeId, target));
  await writeFile(join(target, 'kept'), 'across restarts');
  client.close();
  await server.stop();

  // The agent restarts too: a new server, same slots, same socket directory.
  const again = await startServer(t, { slots: slotTable(slot), kubeletDir: kubelet.root });
  await again.client.node('NodePublishVolume', publishRequest(volumeId, target));
  t.equal(await readFile(join(target, 'kept'), 'utf8'), 'across restarts');
  t.equal(await keyOf(slot, volume), 'present');
  await again.client.node('NodeUnpublishVolume', { volume_id: volumeId, target_path: target });
  t.equal(await keyOf(slot, volume), 'absent');
});

t.test('node reboot: mounts and keys gone, the target directory left; after reconcile the publish mounts it again', async (t) => {
  const { slot, volume, kubelet, client, server, volumeId } = await setUp(t);
  const target = await kubelet.newTarget();
  await client.node('NodePublishVolume', publishRequest(volumeId, target));
  await writeFile(join(target, 'data'), 'survives the reboot');
  client.close();
  await server.stop();
  // The "reboot": every mount and key gone; kubelet's directories stay.
  execFileSync('umount', [target]);
  await removeKey(slot.slot, volume.identifier, { allUsers: true });
  t.ok(existsSync(target) && (await mountAt(target)) === undefined, 'an empty, unmounted target directory is left');

  let ready = false;
  const socketDir = scratchDir(t);
  const again = await startServer(t, { slots: slotTable(slot), kubeletDir: kubelet.root, readiness: () => (ready ? { ready: true } : { ready: false, reason: 'reconciling slots (0 of 1 done)' }) }, socketDir);
  t.match(await rejection(again.client.identity('Probe')), { code: grpc.status.FAILED_PRECONDITION, details: /not ready: reconciling slots \(0 of 1 done\)/ }, 'not ready before start-up reconcile');
  const report = await reconcile(slot.slot, slot.protector);
  t.match(report.actions.join('\n'), /forgot 1 target\(s\) no longer mounted/, 'reconcile forgot the dead target');
  ready = true;
  t.same(await again.client.identity('Probe'), { ready: { value: true } });

  await again.client.node('NodePublishVolume', publishRequest(volumeId, target));
  t.equal(await readFile(join(target, 'data'), 'utf8'), 'survives the reboot', 'mounted onto the existing directory');
  await again.client.node('NodeUnpublishVolume', { volume_id: volumeId, target_path: target });
  t.equal(await keyOf(slot, volume), 'absent');
});

t.test('read-only: readonly, the ro mount flag and SINGLE_NODE_READER_ONLY give a read-only bind mount (EROFS)', async (t) => {
  const { kubelet, client, volumeId } = await setUp(t);
  const rw = await kubelet.newTarget();
  await client.node('NodePublishVolume', publishRequest(volumeId, rw));
  await writeFile(join(rw, 'file'), 'written through a writable target');
  for (const extra of [{ readonly: true }, { volume_capability: mountCapability('SINGLE_NODE_WRITER', ['ro']) }, { volume_capability: mountCapability('SINGLE_NODE_READER_ONLY') }]) {
    const target = await kubelet.newTarget();
    await client.node('NodePublishVolume', publishRequest(volumeId, target, extra));
    t.equal(await readFile(join(target, 'file'), 'utf8'), 'written through a writable target', `readable: ${JSON.stringify(extra)}`);
    t.match(await rejection(writeFile(join(target, 'file'), 'no')), { code: 'EROFS' }, 'writes refused');
    t.ok((await mountAt(target))?.options.includes('ro'));
    await client.node('NodeUnpublishVolume', { volume_id: volumeId, target_path: target });
  }
  await client.node('NodeUnpublishVolume', { volume_id: volumeId, target_path: rw });
});

t.test('capabilities: block, multi-node modes, other mount flags and a mount group are refused before anything is mounted', async (t) => {
  const { slot, volume, kubelet, client, volumeId } = await setUp(t);
  const target = await kubelet.newTarget();
  const cases: [object, string, RegExp][] = [
    [{ block: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' } }, 'INVALID_ARGUMENT', /block volumes are not supported.*dm-crypt\/LUKS/],
    [{ mount: {} }, 'INVALID_ARGUMENT', /access_mode is required/],
    [{ access_mode: { mode: 'SINGLE_NODE_WRITER' } }, 'INVALID_ARGUMENT', /needs an access type: mount/],
    [mountCapability('MULTI_NODE_MULTI_WRITER'), 'FAILED_PRECONDITION', /MULTI_NODE_MULTI_WRITER is not supported: .*one node/],
    [mountCapability('MULTI_NODE_READER_ONLY'), 'FAILED_PRECONDITION', /MULTI_NODE_READER_ONLY/],
    [mountCapability('SINGLE_NODE_WRITER', ['noexec', 'context=system_u:object_r:secret_t']), 'INVALID_ARGUMENT', /mount flags noexec, context=… cannot be honoured/],
    [{ mount: { volume_mount_group: '1000' }, access_mode: { mode: 'SINGLE_NODE_WRITER' } }, 'INVALID_ARGUMENT', /volume_mount_group is not supported/],
  ];
  for (const [capability, code, message] of cases) {
    const error = await rejection(client.node('NodePublishVolume', { volume_id: volumeId, target_path: target, volume_capability: capability }));
    t.equal(codeName(error), code, JSON.stringify(capability));
    t.match(error.details, message);
    t.notMatch(error.details, /secret_t/, 'no mount flag value is echoed');
  }
  t.notOk(existsSync(target), 'no target made');
  t.equal(await keyOf(slot, volume), 'absent', 'no key added');
  const modes = ['SINGLE_NODE_SINGLE_WRITER', 'SINGLE_NODE_MULTI_WRITER'];
  for (const mode of modes) {
    await client.node('NodePublishVolume', publishRequest(volumeId, target, { volume_capability: mountCapability(mode, ['rw', 'defaults']) }));
    await client.node('NodeUnpublishVolume', { volume_id: volumeId, target_path: target });
  }
  t.pass(`the other single-node modes are accepted: ${modes.join(', ')}`);
});

t.test('forged volume handles are NOT_FOUND, with nothing mounted and no key added', async (t) => {
  const { slot, volume, kubelet, client, volumeId } = await setUp(t);
  const trash = new TrashCollector();
  const good = handleOf(volume, slot.protector);
  const [, node, descriptor, generation, key] = good.split('.');
  const forged: [string, RegExp][] = [
    [`v1.${node}.${descriptor}.${generation}.${key}/..`, /not a volume handle/],
    ['../../../../etc', /not a volume handle/],
    [`v1.${node}.${descriptor}/${generation}.${key}`, /not a volume handle/],
    [`v1.${node}.${descriptor}.${generation}.${key}\0`, /not a volume handle/],
    [`${good}${'0'.repeat(200)}`, /not a volume handle/],
    [formatVolumeHandle({ nodeName: 'node-b', slot: descriptor!, generation: volume.generation, identifier: volume.identifier }), /on node node-a: the volume belongs to another node, not to node-a/],
    [`v1.${node}.0000000000000000.${generation}.${key}`, /its slot 0000000000000000 is not served by this node's agent/],
    [`v1.${node}.${descriptor}.${generation}.0000000000000000`, /the handle names key 0000000000000000…, but .* has key/],
    [`v1.${node}.${descriptor}.${volume.generation + 1}.${key}`, /generation 2 of slot .* was erased \(the slot's current volume is vol-1\)/],
  ];
  for (const [id, message] of forged) {
    const target = await kubelet.newTarget();
    const error = await rejection(client.node('NodePublishVolume', publishRequest(id, target)));
    t.equal(codeName(error), 'NOT_FOUND', JSON.stringify(id.slice(0, 80)));
    t.match(error.details, message);
    t.notOk(existsSync(target), 'nothing made at the target');
    t.same(await client.node('NodeUnpublishVolume', { volume_id: id, target_path: target }), {}, 'its unpublish is OK (nothing to do)');
    t.equal(codeName(await rejection(client.node('NodeGetVolumeStats', { volume_id: id, volume_path: target }))), 'NOT_FOUND', 'and its stats NOT_FOUND');
  }
  t.equal(await keyOf(slot, volume), 'absent', 'no key was added');
  t.same((await slotStatus(slot.slot)).volume?.targets, [], 'no target recorded');

  // An unknown handle with a real mount at its target: not OK, and not touched.
  const mounted = await kubelet.newTarget();
  await client.node('NodePublishVolume', publishRequest(volumeId, mounted));
  const [forgedId] = forged[0]!;
  t.match(await rejection(client.node('NodeUnpublishVolume', { volume_id: forgedId, target_path: mounted })), {
    code: grpc.status.FAILED_PRECONDITION,
    details: /still has a mount .* not a volume handle of this driver.*left alone/,
  });
  t.ok(await mountAt(mounted), 'the mount is left alone');
  await client.node('NodeUnpublishVolume', { volume_id: volumeId, target_path: mounted });

  // An erased generation: its handle names a key that no longer exists.
  const { next } = await recycle(volume, slot.protector, { trash });
  await trash.idle();
  const target = await kubelet.newTarget();
  t.match(await rejection(client.node('NodePublishVolume', publishRequest(volumeId, target))), { code: grpc.status.NOT_FOUND, details: /generation 1 of slot .* was erased \(the slot's current volume is vol-2\)/ });
  t.notOk(existsSync(target));
  await client.node('NodePublishVolume', publishRequest(handleOf(next, slot.protector), target));
  t.ok(await mountAt(target), 'the new generation’s handle works');
  await client.node('NodeUnpublishVolume', { volume_id: handleOf(next, slot.protector), target_path: target });
});

t.test('targets: only under <kubelet>/pods/, after resolving symlinks; never a symlink or a file', async (t) => {
  const { slot, volume, kubelet, client, volumeId } = await setUp(t);
  const outside = scratchDir(t);
  const escape = join(kubelet.pods, 'uid-1', 'volumes', 'kubernetes.io~csi', 'evil');
  await mkdir(join(kubelet.pods, 'uid-1', 'volumes', 'kubernetes.io~csi'), { recursive: true });
  await symlink(outside, escape);
  const podDir = join(kubelet.pods, 'uid-2');
  await mkdir(join(podDir, 'volumes'), { recursive: true });
  const linkTarget = join(podDir, 'volumes', 'link');
  await symlink(outside, linkTarget);
  const fileTarget = join(podDir, 'volumes', 'file');
  await writeFile(fileTarget, '');
  const cases: [string, string, RegExp][] = [
    [join(outside, 'mount'), 'INVALID_ARGUMENT', /is not under .*\/pods\/: this driver mounts volumes only into pods' directories/],
    [join(escape, 'mount'), 'INVALID_ARGUMENT', new RegExp(`\\(${outside}/mount once symlinks are resolved\\) is not under`)],
    [`${kubelet.pods}/uid-2/../../../../mount`, 'INVALID_ARGUMENT', /clean absolute path/],
    ['relative/mount', 'INVALID_ARGUMENT', /clean absolute path/],
    [`${kubelet.pods}//uid-2/mount`, 'INVALID_ARGUMENT', /clean absolute path/],
    [podDir, 'INVALID_ARGUMENT', /is not under/],
    [linkTarget, 'INVALID_ARGUMENT', /is a symbolic link/],
    [fileTarget, 'INVALID_ARGUMENT', /exists and is not a directory/],
    [join(kubelet.pods, 'uid-3', 'missing', 'mount'), 'FAILED_PRECONDITION', /parent directory .* does not exist; kubelet creates it/],
    [join(slot.slot, 'mount'), 'INVALID_ARGUMENT', /is not under/],
  ];
  for (const [target, code, message] of cases) {
    const error = await rejection(client.node('NodePublishVolume', publishRequest(volumeId, target)));
    t.equal(codeName(error), code, target);
    t.match(error.details, message);
  }
  t.notOk(existsSync(join(outside, 'mount')), 'nothing was made outside');
  t.equal((await mountAt(outside)) ?? (await mountAt(linkTarget)), undefined, 'nothing mounted outside');
  t.equal(await keyOf(slot, volume), 'absent', 'no key added');
  for (const target of [join(outside, 'mount'), join(escape, 'mount'), linkTarget]) {
    t.equal(codeName(await rejection(client.node('NodeUnpublishVolume', { volume_id: volumeId, target_path: target }))), 'INVALID_ARGUMENT', `unpublish ${target} refused too`);
  }

  // A server on another kubelet directory refuses this one's pods.
  const other = await startServer(t, { slots: slotTable(slot), kubeletDir: join(outside, 'no-kubelet') });
  t.match(await rejection(other.client.node('NodePublishVolume', publishRequest(volumeId, await kubelet.newTarget()))), {
    code: grpc.status.FAILED_PRECONDITION,
    details: /kubelet's pods directory .* cannot be reached on this node .*--kubelet-dir/,
  });
});

t.test('each RPC logs one line (method, volume, target, code, duration) and never the secrets', async (t) => {
  const { kubelet, client, logs, volumeId } = await setUp(t);
  const target = await kubelet.newTarget();
  const secret = 'S3CRET-do-not-log-me';
  await client.node('NodePublishVolume', publishRequest(volumeId, target, { secrets: { token: secret }, volume_context: { 'csi.storage.k8s.io/pod.name': 'web-0' } }));
  await client.node('NodeUnpublishVolume', { volume_id: volumeId, target_path: target });
  await rejection(client.node('NodePublishVolume', { volume_id: volumeId, secrets: { token: secret } }));
  const rpcs = logs.lines.filter((l) => typeof l.fields.method === 'string');
  t.match(rpcs, [
    { level: 'info', fields: { method: 'NodePublishVolume', volume_id: volumeId, target, code: 'OK', duration_ms: Number } },
    { level: 'info', fields: { method: 'NodeUnpublishVolume', volume_id: volumeId, target, code: 'OK' } },
    { level: 'warn', fields: { method: 'NodePublishVolume', code: 'INVALID_ARGUMENT', error: /target_path is required/ } },
  ]);
  t.notMatch(logs.text(), /S3CRET/, 'no secret in any log line');
});

t.test('NodeGetVolumeStats: the slot’s bytes and inodes; the condition turns abnormal when the key or the mount goes', async (t) => {
  const { slot, volume, kubelet, client, volumeId } = await setUp(t);
  const target = await kubelet.newTarget();
  await client.node('NodePublishVolume', publishRequest(volumeId, target));
  await writeFile(join(target, 'data'), Buffer.alloc(1 << 20, 1));
  type Stats = { usage: { unit: string; total: string; used: string; available: string }[]; volume_condition: { abnormal: boolean; message: string } };
  const stats = await client.node<Stats>('NodeGetVolumeStats', { volume_id: volumeId, volume_path: target });
  const bytes = stats.usage.find((u) => u.unit === 'BYTES')!;
  t.ok(BigInt(bytes.total) > 50n << 20n && BigInt(bytes.used) >= 1n << 20n, `bytes: ${JSON.stringify(bytes)}`);
  t.ok(BigInt(bytes.used) + BigInt(bytes.available) <= BigInt(bytes.total));
  t.match(stats.volume_condition, { abnormal: false });

  await removeKey(slot.slot, volume.identifier, { allUsers: true });
  t.match((await client.node<Stats>('NodeGetVolumeStats', { volume_id: volumeId, volume_path: target })).volume_condition, { abnormal: true, message: /its key is (absent|incompletely-removed)/ });
  execFileSync('umount', ['-l', target]);
  t.match((await client.node<Stats>('NodeGetVolumeStats', { volume_id: volumeId, volume_path: target })).volume_condition, {
    abnormal: true,
    message: /no longer mounted at .*; its key is (absent|incompletely-removed).*To fix: delete the pod/,
  });
  await client.node('NodeUnpublishVolume', { volume_id: volumeId, target_path: target });
  t.equal(codeName(await rejection(client.node('NodeGetVolumeStats', { volume_id: volumeId, volume_path: target }))), 'NOT_FOUND', 'once unpublished');
});

t.test('NodeGetVolumeStats while a hook holds the slot: read after it, never during it; ABORTED behind a hook that does not end', async (t) => {
  const { slot, kubelet, client, volumeId } = await setUp(t);
  const target = await kubelet.newTarget();
  await client.node('NodePublishVolume', publishRequest(volumeId, target));
  const stats = () => client.node<{ volume_condition: { abnormal: boolean } }>('NodeGetVolumeStats', { volume_id: volumeId, volume_path: target });
  // A hook of this process holds the slot (the queue the CSI hooks share), as a second pod's publish would.
  const holdSlot = () => {
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let holding!: () => void;
    const held = new Promise<void>((resolve) => (holding = resolve));
    const done = withSlotLock(slot.slot, async () => {
      holding();
      await released;
    });
    return { held, release, done };
  };

  const hook = holdSlot();
  await hook.held;
  let answeredWhileHeld = false;
  let hookDone = false;
  const answer = stats().then((value) => {
    answeredWhileHeld = !hookDone;
    return value;
  });
  // Time for a read that did not wait to answer; the assertion is on the order, not on the time.
  await new Promise((resolve) => setTimeout(resolve, 500));
  hookDone = true;
  hook.release();
  await hook.done;
  t.match(await answer, { volume_condition: { abnormal: false } }, 'the stats, once the hook let go');
  t.notOk(answeredWhileHeld, 'no answer while the hook held the slot: the read waited for it');

  const stuck = holdSlot();
  await stuck.held;
  const gaveUp = await rejection(stats());
  t.equal(codeName(gaveUp), 'ABORTED', 'behind a hook that does not end (a hung disk): ABORTED at the stats lock timeout, which kubelet retries');
  t.match((gaveUp as Error).message, /is busy/);
  stuck.release();
  await stuck.done;
  t.match(await stats(), { volume_condition: { abnormal: false } }, 'and read again once the slot is free');
  await client.node('NodeUnpublishVolume', { volume_id: volumeId, target_path: target });
});

t.test('a slot whose disk went away under a published target: unpublish still unmounts it', async (t) => {
  const { slot, kubelet, client, volumeId } = await setUp(t);
  const target = await kubelet.newTarget();
  await client.node('NodePublishVolume', publishRequest(volumeId, target));
  execFileSync('umount', ['-l', slot.slot]);
  t.match(await rejection(client.node('NodePublishVolume', publishRequest(volumeId, await kubelet.newTarget()))), {
    code: grpc.status.FAILED_PRECONDITION,
    details: /its slot .* has no slot state: is the slot's disk mounted there\?/,
  });
  await client.node('NodeUnpublishVolume', { volume_id: volumeId, target_path: target });
  t.equal(await mountAt(target), undefined, 'the target is unmounted');
  t.notOk(existsSync(target), 'and removed');
});

t.test('the server refuses a bad driver name, node id or kubelet directory', async (t) => {
  const slots = new Map();
  const log = recordingLog().log;
  t.throws(() => new CsiServer({ nodeId: '', slots, log }), /node id/);
  t.throws(() => new CsiServer({ nodeId: NODE, slots, log, driverName: '-bad-' }), /driver name/);
  t.throws(() => new CsiServer({ nodeId: NODE, slots, log, driverName: 'x'.repeat(64) }), /driver name/);
  t.throws(() => new CsiServer({ nodeId: NODE, slots, log, kubeletDir: 'var/lib/kubelet' }), /absolute/);
  const named = new CsiServer({ nodeId: NODE, slots, log, driverName: 'example.com' });
  const dir = scratchDir(t);
  await named.start(join(dir, 'csi.sock'));
  t.teardown(() => named.stop());
  const client = csiClient(t, join(dir, 'csi.sock'));
  t.match(await client.identity('GetPluginInfo'), { name: 'example.com' }, 'the name is overridable');
  await t.rejects(named.start(join(dir, 'again.sock')), /already started/);
});
