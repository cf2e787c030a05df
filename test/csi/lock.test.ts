// What the node service does when locking is not simple: files still busy
// after the last unpublish (OK to kubelet, the key removal retried in the
// background, the blockers named, the key gone once they exit), what is left
// on disk after the last unpublish (ENOKEY, ciphertext only), a call whose
// deadline passes while another holds the slot, and a key source that cannot
// be reached.
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { open, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import * as grpc from '@grpc/grpc-js';
import t from 'tap';
import { FscryptError, getKeyStatus } from '../../lib/kernel/index.js';
import type { OpenProtector } from '../../lib/keys/index.js';
import { prepare, slotStatus } from '../../lib/volume/index.js';
import { withSlotLock } from '../../lib/volume/slot/slot-lock.js';
import { mountAt } from '../../lib/volume/mounts/mounts.js';
import { rejection } from '../fixtures/helpers.js';
import { handleOf, kubeletTree, mountCapability, slotTable, startServer } from '../fixtures/agent/csi.js';
import { syncFs } from '../fixtures/system/scratch-fs.js';
import { freshSlot } from '../fixtures/volume-slot.js';

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await sleep(50);
  }
}

t.test('a busy unpublish answers OK, names the blocker, and the key goes once the blocker exits', async (t) => {
  const slot = await freshSlot(t);
  const volume = await prepare(slot.slot, slot.protector);
  const kubelet = kubeletTree(t);
  const { client, server, logs } = await startServer(t, {
    slots: slotTable(slot),
    kubeletDir: kubelet.root,
    unpublishBusyTimeoutMs: 300,
    busyRetry: { initialDelayMs: 100, maxDelayMs: 400 },
  });
  const volumeId = handleOf(volume, slot.protector);
  const target = await kubelet.newTarget();
  await client.node('NodePublishVolume', { volume_id: volumeId, target_path: target, volume_capability: mountCapability() });
  await writeFile(join(target, 'held'), 'in use');
  // A host process holds a file open through the target, which is then
  // lazily unmounted behind kubelet's back: the file stays busy.
  const holder = spawn('sh', ['-c', `exec 3<'${join(target, 'held')}'; echo ready; exec sleep 60`], { stdio: ['ignore', 'pipe', 'ignore'] });
  t.teardown(() => holder.kill('SIGKILL'));
  await new Promise((resolve) => holder.stdout.once('data', resolve));
  execFileSync('umount', ['-l', target]);

  t.same(await client.node('NodeUnpublishVolume', { volume_id: volumeId, target_path: target }), {}, 'kubelet hears OK');
  t.notOk(existsSync(target), 'the target is removed');
  t.equal((await getKeyStatus(slot.slot, volume.identifier)).status, 'incompletely-removed', 'the key is only incompletely removed');
  const [pending] = server.pendingLocks();
  t.match(pending, { volumeId, slot: slot.slot, volume: volume.path, targets: [target], attempts: Number, since: String, nextAttempt: String });
  t.ok(pending?.blockers.some((b) => b.pid === holder.pid && b.command === 'sleep'), 'the pending lock names the blocker');
  t.match(logs.text(), new RegExp(`only incompletely removed.*pid ${holder.pid} \\(sleep\\)`), 'the log names it too');
  const status = await slotStatus(slot.slot);
  t.match(status.volume, { key: 'incompletely-removed', targets: [{ path: target, mounted: false }] }, 'status shows a key with no mounted target');

  // The retrier keeps trying, and says so each time.
  await until('a retry is logged', async () => logs.lines.some((l) => l.level === 'warn' && /still only incompletely removed/.test(l.message)));
  holder.kill('SIGKILL');
  await new Promise((resolve) => holder.once('exit', resolve));
  await until('the key is absent', async () => (await getKeyStatus(slot.slot, volume.identifier)).status === 'absent');
  await until('nothing is pending', async () => server.pendingLocks().length === 0);
  t.match(logs.text(), /is removed: the volume is locked/);
  t.same((await slotStatus(slot.slot)).volume?.targets, [], 'the unmounted target is forgotten once the key is out');
});

t.test('a target a host process still uses cannot be unmounted: FAILED_PRECONDITION naming it, and kubelet’s retry succeeds once it is gone', async (t) => {
  const slot = await freshSlot(t);
  const volume = await prepare(slot.slot, slot.protector);
  const kubelet = kubeletTree(t);
  const { client } = await startServer(t, { slots: slotTable(slot), kubeletDir: kubelet.root });
  const volumeId = handleOf(volume, slot.protector);
  const target = await kubelet.newTarget();
  await client.node('NodePublishVolume', { volume_id: volumeId, target_path: target, volume_capability: mountCapability() });
  await writeFile(join(target, 'held'), 'in use');
  const holder = spawn('sh', ['-c', `exec 3<'${join(target, 'held')}'; echo ready; exec sleep 60`], { stdio: ['ignore', 'pipe', 'ignore'] });
  t.teardown(() => holder.kill('SIGKILL'));
  await new Promise((resolve) => holder.stdout.once('data', resolve));

  const busy = await rejection(client.node('NodeUnpublishVolume', { volume_id: volumeId, target_path: target }));
  t.match(busy, { code: grpc.status.FAILED_PRECONDITION, details: new RegExp(`cannot unmount .*target is busy.*pid ${holder.pid} \\(sleep\\)`, 's') });
  t.ok(await mountAt(target), 'the target stays mounted: a mount in use is never detached behind its user');
  t.equal((await getKeyStatus(slot.slot, volume.identifier)).status, 'present');
  holder.kill('SIGKILL');
  await new Promise((resolve) => holder.once('exit', resolve));
  await client.node('NodeUnpublishVolume', { volume_id: volumeId, target_path: target });
  t.equal((await getKeyStatus(slot.slot, volume.identifier)).status, 'absent');
});

t.test('a volume published again while its key removal is pending keeps its key', async (t) => {
  const slot = await freshSlot(t);
  const volume = await prepare(slot.slot, slot.protector);
  const kubelet = kubeletTree(t);
  const { client, server, logs } = await startServer(t, { slots: slotTable(slot), kubeletDir: kubelet.root, unpublishBusyTimeoutMs: 100, busyRetry: { initialDelayMs: 60_000 } });
  const volumeId = handleOf(volume, slot.protector);
  const first = await kubelet.newTarget();
  await client.node('NodePublishVolume', { volume_id: volumeId, target_path: first, volume_capability: mountCapability() });
  const held = await open(join(first, 'held'), 'w');
  t.teardown(() => held.close().catch(() => undefined));
  execFileSync('umount', ['-l', first]);
  await client.node('NodeUnpublishVolume', { volume_id: volumeId, target_path: first });
  t.equal(server.pendingLocks().length, 1);

  const second = await kubelet.newTarget();
  await client.node('NodePublishVolume', { volume_id: volumeId, target_path: second, volume_capability: mountCapability() });
  t.equal(server.pendingLocks().length, 0, 'the pending removal is dropped');
  t.match(logs.text(), /published again: its key stays/);
  t.equal((await getKeyStatus(slot.slot, volume.identifier)).status, 'present');
  await held.close();
  await client.node('NodeUnpublishVolume', { volume_id: volumeId, target_path: second });
  t.equal((await getKeyStatus(slot.slot, volume.identifier)).status, 'absent');
});

t.test('stop() with a key removal pending says so: reconcile at the next start removes it', async (t) => {
  const slot = await freshSlot(t);
  const volume = await prepare(slot.slot, slot.protector);
  const kubelet = kubeletTree(t);
  const { client, server, logs } = await startServer(t, { slots: slotTable(slot), kubeletDir: kubelet.root, unpublishBusyTimeoutMs: 100, busyRetry: { initialDelayMs: 50, maxDelayMs: 50 } });
  const volumeId = handleOf(volume, slot.protector);
  const target = await kubelet.newTarget();
  await client.node('NodePublishVolume', { volume_id: volumeId, target_path: target, volume_capability: mountCapability() });
  const held = await open(join(target, 'held'), 'w');
  execFileSync('umount', ['-l', target]);
  await client.node('NodeUnpublishVolume', { volume_id: volumeId, target_path: target });
  await sleep(200);
  client.close();
  await server.stop();
  t.match(logs.lines.at(-2), { level: 'error', message: /stopping with the key of .* still incompletely removed .* reconcile/ });
  await held.close();
  const { reconcile } = await import('../../lib/volume/index.js');
  await reconcile(slot.slot, slot.protector);
  t.equal((await getKeyStatus(slot.slot, volume.identifier)).status, 'absent', 'reconcile finished the removal');
});

t.test('after the last unpublish the volume reads ENOKEY and the disk holds only ciphertext', async (t) => {
  const slot = await freshSlot(t);
  const volume = await prepare(slot.slot, slot.protector);
  const kubelet = kubeletTree(t);
  const { client } = await startServer(t, { slots: slotTable(slot), kubeletDir: kubelet.root });
  const volumeId = handleOf(volume, slot.protector);
  const target = await kubelet.newTarget();
  await client.node('NodePublishVolume', { volume_id: volumeId, target_path: target, volume_capability: mountCapability() });
  const marker = `PLAINTEXT-${randomBytes(8).toString('hex')}`;
  const name = `NAME-${randomBytes(8).toString('hex')}`;
  const file = await open(join(target, name), 'w');
  await file.writeFile(`${marker}\n`.repeat(2000));
  await file.sync();
  await file.close();
  syncFs(slot.slot);
  await client.node('NodeUnpublishVolume', { volume_id: volumeId, target_path: target });

  const [entry] = await readdir(volume.path);
  t.not(entry, name, 'the name is encrypted');
  t.match(await rejection(readFile(join(volume.path, entry!))), { errno: -126 }, 'a read fails with ENOKEY (errno 126, which Node has no name for)');
  syncFs(slot.slot);
  const image = await readFile(slot.fs.image!);
  t.equal(image.indexOf(marker), -1, 'no plaintext content on the device');
  t.equal(image.indexOf(name), -1, 'no plaintext file name on the device');
});

t.test('a call whose deadline passes while the slot is held answers DEADLINE_EXCEEDED; a retry waits for the slot and succeeds', async (t) => {
  const slot = await freshSlot(t);
  const volume = await prepare(slot.slot, slot.protector);
  const kubelet = kubeletTree(t);
  const { client, logs } = await startServer(t, { slots: slotTable(slot), kubeletDir: kubelet.root });
  const volumeId = handleOf(volume, slot.protector);
  const target = await kubelet.newTarget();
  const request = { volume_id: volumeId, target_path: target, volume_capability: mountCapability() };

  let release!: () => void;
  const held = withSlotLock(slot.slot, () => new Promise<void>((resolve) => (release = resolve)));
  const late = await rejection(client.node('NodePublishVolume', request, { deadlineMs: 1_500 }));
  t.match(late, { code: grpc.status.DEADLINE_EXCEEDED, details: /abandoned before it changed anything: its deadline passed/ }, 'the server’s own answer, in time');
  t.notOk(existsSync(target), 'nothing was done');

  // kubelet retries; the retry waits in the slot's queue and gets the real outcome.
  const retry = client.node('NodePublishVolume', request, { deadlineMs: 30_000 });
  const duplicate = client.node('NodePublishVolume', request, { deadlineMs: 30_000 });
  await sleep(300);
  release();
  await held;
  t.same(await Promise.all([retry, duplicate]), [{}, {}], 'both waiting calls succeed');
  t.ok(await mountAt(target), 'mounted once');

  // A call cancelled while it waits is ABORTED (the log says so; the client saw its own cancel).
  let releaseAgain!: () => void;
  const heldAgain = withSlotLock(slot.slot, () => new Promise<void>((resolve) => (releaseAgain = resolve)));
  let call!: grpc.ClientUnaryCall;
  const cancelled = rejection(client.node('NodeUnpublishVolume', { volume_id: volumeId, target_path: target }, { onCall: (c) => (call = c) }));
  await sleep(300);
  call.cancel();
  t.match(await cancelled, { code: grpc.status.CANCELLED });
  await until('the cancelled call is logged', async () => logs.lines.some((l) => l.fields.method === 'NodeUnpublishVolume' && l.fields.code === 'ABORTED'));
  releaseAgain();
  await heldAgain;
  t.ok(await mountAt(target), 'the cancelled unpublish did nothing');
  await client.node('NodeUnpublishVolume', { volume_id: volumeId, target_path: target });
});

t.test('a key source that cannot be reached is UNAVAILABLE, with nothing mounted and no key added', async (t) => {
  const slot = await freshSlot(t);
  const volume = await prepare(slot.slot, slot.protector);
  const kubelet = kubeletTree(t);
  const kmsDown: OpenProtector = {
    descriptor: slot.protector.descriptor,
    info: slot.protector.info,
    root: slot.slot,
    addPolicy: () => Promise.reject(new Error('not used')),
    unwrapPolicyKey: () =>
      Promise.reject(new FscryptError("the KMS plugin at '/run/kms/plugin.sock' is unreachable: connect ENOENT. Check that the KMS plugin sidecar runs", { code: 'ERR_KEY_SOURCE' })),
    close: () => undefined,
  };
  const { client } = await startServer(t, { slots: new Map([[slot.protector.descriptor, { root: slot.slot, protector: kmsDown }]]), kubeletDir: kubelet.root });
  const volumeId = handleOf(volume, slot.protector);
  const target = await kubelet.newTarget();
  const error = await rejection(client.node('NodePublishVolume', { volume_id: volumeId, target_path: target, volume_capability: mountCapability() }));
  t.match(error, { code: grpc.status.UNAVAILABLE, details: /KMS plugin .* is unreachable/ });
  t.equal(await mountAt(target), undefined, 'nothing mounted');
  t.equal((await getKeyStatus(slot.slot, volume.identifier)).status, 'absent', 'no key added');
  t.same((await slotStatus(slot.slot)).volume?.targets, [], 'the target record was rolled back');

  const closed = await startServer(t, { slots: new Map([[slot.protector.descriptor, { root: slot.slot }]]), kubeletDir: kubelet.root });
  t.match(await rejection(closed.client.node('NodePublishVolume', { volume_id: volumeId, target_path: target, volume_capability: mountCapability() })), {
    code: grpc.status.UNAVAILABLE,
    details: /key source of slot .* is not open yet/,
  }, 'a slot whose protector is not open yet');
});
