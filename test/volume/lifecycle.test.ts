// The lifecycle hooks on the real kernel: prepare, unlock (refcounted
// targets), lock (busy files named), erase (crypto-erase, background
// deletion), reconcile after a "reboot", and the refusals that protect data.
import { execFileSync, spawn } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { defaultPolicy, getKeyStatus, getPolicy, samePolicy } from '../../lib/kernel/index.js';
import { parseKeySource, SlotKeys, type OpenProtector } from '../../lib/keys/index.js';
import { policyTag } from '../../lib/keys/metadata-store.js';
import {
  adminLock,
  adminUnlock,
  erase,
  initSlot,
  lock,
  prepare,
  reconcile,
  recycle,
  resolveVolume,
  slotStatus,
  TrashCollector,
  unlock,
  type ProgressEvent,
  type Volume,
} from '../../lib/volume/index.js';
import { syncFs, tmpfs } from '../fixtures/system/scratch-fs.js';
import { rejection } from '../fixtures/helpers.js';
import { freshSlot } from '../fixtures/volume-slot.js';

const kubelet = tmpfs(t);
let targets = 0;
const newTarget = (): string => join(kubelet.mountpoint, `pod-${targets++}`, 'mount');

async function published(protector: OpenProtector, volume: Volume): Promise<string> {
  const target = newTarget();
  await mkdir(join(target, '..'), { recursive: true });
  await unlock(volume, protector, { path: target });
  return target;
}

t.test('initSlot: idempotent with the same source, refuses another, adopts a protector a crash left', async (t) => {
  const { slot, source, protector } = await freshSlot(t);
  t.same(await initSlot(slot, source), { root: slot, protector: protector.descriptor, created: false });
  const otherKek = join(slot, '..', 'other-kek');
  await writeFile(otherKek, randomFillSync(Buffer.alloc(32)), { mode: 0o600 });
  t.match(await rejection(initSlot(slot, parseKeySource(`file:${otherKek}`))), { code: 'ERR_WRONG_KEY' });
  // A crash after the protector was created but before the state was written:
  await rm(join(slot, '.fscrypt-local', 'slot.state'));
  t.same(await initSlot(slot, source), { root: slot, protector: protector.descriptor, created: true }, 'the existing protector is adopted');
  // Two protectors of the kind and no state: ambiguous, for an admin.
  await rm(join(slot, '.fscrypt-local', 'slot.state'));
  await new SlotKeys(slot).createProtector(source, { name: 'second' });
  t.match(await rejection(initSlot(slot, source)), { code: 'ERR_BAD_METADATA', message: /2 raw_key protectors/ });
  t.equal((await new SlotKeys(slot).listProtectors()).length, 2, 'no third protector was made');
  // A filesystem without fscrypt support is refused up front.
  const tmp = tmpfs(t);
  t.match(await rejection(initSlot(tmp.mountpoint, source)), { code: 'ERR_NOT_SUPPORTED', message: /tmpfs does not support fscrypt/ });
});

t.test('prepare makes a verified, locked, encrypted generation; again is a no-op', async (t) => {
  const { slot, protector } = await freshSlot(t);
  const steps: string[] = [];
  const volume = await prepare(slot, protector, { onProgress: (e) => e.kind === 'step' && steps.push(e.step) });
  t.match(volume, { slot, name: 'vol-1', path: join(slot, 'vol-1'), generation: 1, identifier: /^[0-9a-f]{32}$/ });
  t.same(steps, [
    'prepare:intent-recorded', 'prepare:key-added', 'prepare:dir-created', 'prepare:policy-set', 'prepare:probe-file-checked',
    'prepare:policy-verified', 'prepare:metadata-committed', 'prepare:key-removed', 'prepare:ready',
  ]);
  t.ok(samePolicy((await getPolicy(volume.path))!, defaultPolicy(volume.identifier)), 'the directory has the policy');
  t.same(await readdir(volume.path), [], 'the probe file is gone');
  t.equal((await getKeyStatus(slot, volume.identifier)).status, 'absent', 'locked after prepare (invariant 2)');
  t.ok(await new SlotKeys(slot).hasPolicy(volume.identifier), 'the wrapped key is committed');
  t.same(await prepare(slot, protector), volume, 'a ready slot is returned as is');
  t.same(await resolveVolume(volume.path), volume);
  t.same(await resolveVolume(slot), volume);
});

t.test('targets are refcounted: the key stays until the last target is unpublished', async (t) => {
  const { slot, protector } = await freshSlot(t);
  const volume = await prepare(slot, protector);
  const a = await published(protector, volume);
  const b = await published(protector, volume);
  t.same(await unlock(volume, protector, { path: a }), { targets: 2 }, 'publishing the same target again is idempotent');
  await writeFile(join(a, 'shared'), 'seen through both targets');
  t.equal(await readFile(join(b, 'shared'), 'utf8'), 'seen through both targets');
  const status = await slotStatus(slot);
  t.same(status.volume?.targets.map((x) => x.mounted), [true, true]);

  t.same(await lock(volume, a), { locked: false, targets: [b], reason: 'targets-remain' });
  t.equal((await getKeyStatus(slot, volume.identifier)).status, 'present');
  t.match(await rejection(readdir(a)), { code: 'ENOENT' }, 'the unpublished target directory is removed');
  t.same(await lock(volume, b), { locked: true, targets: [] });
  t.equal((await getKeyStatus(slot, volume.identifier)).status, 'absent');
  t.same(await lock(volume, b), { locked: true, targets: [] }, 'unpublishing an unknown target is idempotent');
  const names = await readdir(volume.path);
  t.equal(names.length, 1);
  t.not(names[0], 'shared', 'locked: only a no-key name is visible');
});

t.test('a read-only target is read-only', async (t) => {
  const { slot, protector } = await freshSlot(t);
  const volume = await prepare(slot, protector);
  const rw = await published(protector, volume);
  await writeFile(join(rw, 'f'), 'x');
  const ro = newTarget();
  await mkdir(join(ro, '..'), { recursive: true });
  await unlock(volume, protector, { path: ro, readonly: true });
  t.equal(await readFile(join(ro, 'f'), 'utf8'), 'x');
  t.match(await rejection(writeFile(join(ro, 'g'), 'y')), { code: 'EROFS' });
  t.match(await rejection(unlock(volume, protector, { path: ro })), { code: 'ERR_FOREIGN_MOUNT' }, 'the same target with another readonly flag is refused');
  await lock(volume, ro);
  await lock(volume, rw);
});

t.test('data is ciphertext on the disk, and no key (policy key or KEK) is ever written to it', async (t) => {
  const { fs, slot, protector, kek } = await freshSlot(t);
  const volume = await prepare(slot, protector);
  const target = await published(protector, volume);
  const marker = `lifecycle-plaintext-${process.pid}-`.repeat(100);
  await writeFile(join(target, 'data'), marker);
  await lock(volume, target);
  syncFs(slot);
  const disk = readFileSync(fs.image!);
  t.notOk(disk.includes(marker.slice(0, 40)), 'no plaintext on disk');
  const policyKey = await protector.unwrapPolicyKey(volume.identifier);
  const kekBytes = await readFile(kek);
  try {
    for (const [what, secret] of [['policy key', policyKey], ['KEK', kekBytes]] as const) {
      for (const encoding of ['binary', 'hex', 'base64'] as const) {
        const needle = encoding === 'binary' ? secret : Buffer.from(secret.toString(encoding));
        t.notOk(disk.includes(needle), `the ${what} is not on disk (${encoding})`);
      }
    }
    const state = await readFile(join(slot, '.fscrypt-local', 'slot.state'), 'utf8');
    t.notOk(state.includes(policyKey.toString('hex')) || state.includes(policyKey.toString('base64')), 'not in the state file');
  } finally {
    policyKey.fill(0);
    kekBytes.fill(0);
  }
});

t.test('lock waits for busy files, names who holds them, and succeeds once they are closed', async (t) => {
  const { slot, protector } = await freshSlot(t);
  const volume = await prepare(slot, protector);
  await adminUnlock(volume, protector);
  await writeFile(join(volume.path, 'held'), 'x');
  const holder = spawn('sh', ['-c', `exec 3<'${join(volume.path, 'held')}'; echo ready; exec sleep 60`], { stdio: ['ignore', 'pipe', 'ignore'] });
  t.teardown(() => holder.kill('SIGKILL'));
  await new Promise((resolve) => holder.stdout.once('data', resolve));

  const events: ProgressEvent[] = [];
  const error = await rejection(adminLock(volume, { busyTimeoutMs: 300, onProgress: (e) => events.push(e) }));
  t.match(error, { name: 'FscryptError', code: 'ERR_FILES_BUSY' });
  t.match(error.message, new RegExp(`pid ${holder.pid} \\(sleep\\)`), 'the message names the process');
  t.match(error.message, /held/, 'and the file');
  t.ok(events.some((e) => e.kind === 'busy' && e.blockers.some((b) => b.pid === holder.pid)), 'busy progress events name it too');
  t.equal((await getKeyStatus(slot, volume.identifier)).status, 'incompletely-removed');

  holder.kill('SIGKILL');
  await new Promise((resolve) => holder.once('exit', resolve));
  t.same(await adminLock(volume), { locked: true, targets: [] });
  t.equal((await getKeyStatus(slot, volume.identifier)).status, 'absent');
});

t.test('an explicit lock is refused while targets are published, unless forced', async (t) => {
  const { slot, protector } = await freshSlot(t);
  const volume = await prepare(slot, protector);
  const target = await published(protector, volume);
  t.match(await rejection(adminLock(volume)), { code: 'ERR_PUBLISHED', message: new RegExp(`published at ${target}`) });
  t.equal((await getKeyStatus(slot, volume.identifier)).status, 'present', 'nothing changed');
  t.same(await adminLock(volume, { force: true }), { locked: true, targets: [] });
  t.match(await rejection(readdir(target)), { code: 'ENOENT' });
});

t.test('unlock refuses a volume directory that is missing, replaced or a symlink, and mounts nothing', async (t) => {
  const { slot, protector } = await freshSlot(t);
  const volume = await prepare(slot, protector);
  const target = newTarget();
  await mkdir(join(target, '..'), { recursive: true });

  await rename(volume.path, `${volume.path}.away`);
  t.match(await rejection(unlock(volume, protector, { path: target })), { code: 'ERR_UNSAFE_PATH', message: /missing/ });
  await mkdir(volume.path); // e.g. the disk is not mounted: an empty plain directory
  t.match(await rejection(unlock(volume, protector, { path: target })), { code: 'ERR_UNSAFE_PATH', message: /policy is missing/ });
  await rm(volume.path, { recursive: true });
  await symlink(`${volume.path}.away`, volume.path);
  t.match(await rejection(unlock(volume, protector, { path: target })), { code: 'ERR_UNSAFE_PATH', message: /symlink/ });
  t.match(await rejection(readdir(target)), { code: 'ENOENT' }, 'no target was created');
  t.equal((await getKeyStatus(slot, volume.identifier)).status, 'absent', 'no key was added');

  await rm(volume.path);
  await rename(`${volume.path}.away`, volume.path);
  await unlock(volume, protector, { path: target });
  await lock(volume, target);
});

t.test('volume paths cannot name anything outside a slot', async (t) => {
  const { slot } = await freshSlot(t);
  // The slot's parent is no slot; '..' cannot climb out; other names in a slot are no volume.
  const cases: [string, string][] = [
    [join(slot, '..'), 'ERR_NOT_MOUNTPOINT'],
    [join(slot, 'vol-1', '..', '..'), 'ERR_NOT_MOUNTPOINT'],
    [join(slot, 'lost+found'), 'ERR_UNSAFE_PATH'],
    [join(slot, '.fscrypt'), 'ERR_UNSAFE_PATH'],
  ];
  for (const [path, code] of cases) {
    t.match(await rejection(resolveVolume(path)), { name: 'FscryptError', code }, `${path}: ${code}`);
  }
});

t.test('erase: refused while published; then the key is gone for good and a new generation follows', async (t) => {
  const { slot, protector } = await freshSlot(t);
  const trash = new TrashCollector();
  const volume = await prepare(slot, protector);
  const target = await published(protector, volume);
  await writeFile(join(target, 'secret'), 'tenant one');
  t.match(await rejection(erase(volume, { trash })), { code: 'ERR_PUBLISHED', message: /refusing to erase.*published/ });
  t.equal(await readFile(join(target, 'secret'), 'utf8'), 'tenant one', 'data of a published volume is untouched (invariant 4)');
  await lock(volume, target);

  const steps: string[] = [];
  const result = await erase(volume, { trash, onProgress: (e) => e.kind === 'step' && steps.push(e.step) });
  t.same(steps, ['erase:intent-recorded', 'erase:key-removed', 'erase:policy-destroyed', 'erase:moved-to-trash', 'erase:done']);
  t.same(result, { erased: 'vol-1', trash: join(slot, '.fscrypt-local', 'trash', 'vol-1') });
  t.same(await erase(volume, { trash }), {}, 'erasing again is a no-op');
  t.notOk(await new SlotKeys(slot).hasPolicy(volume.identifier), 'the wrapped key is destroyed');
  await t.rejects(protector.unwrapPolicyKey(volume.identifier), { name: 'FscryptError' }, 'nothing can unwrap it any more');
  t.equal((await getKeyStatus(slot, volume.identifier)).status, 'absent');
  t.match(await rejection(unlock(volume, protector, { path: newTarget() })), { code: 'ERR_NOT_CURRENT', message: /not the current volume/ });
  await trash.idle();
  t.same(await readdir(join(slot, '.fscrypt-local', 'trash')), [], 'the ciphertext is deleted in the background');

  const next = await prepare(slot, protector);
  t.equal(next.name, 'vol-2', 'generations are never reused');
  t.not(next.identifier, volume.identifier, 'a fresh key');
  const again = await published(protector, next);
  t.same(await readdir(again), [], "the next tenant starts empty");
  await lock(next, again);
});

t.test('erase of 100k files returns at once; the next generation is usable while the old one is deleted', async (t) => {
  const { slot, protector } = await freshSlot(t, { sizeMiB: 1024, mkfsArgs: ['-N', '250000'] });
  const volume = await prepare(slot, protector);
  const target = await published(protector, volume);
  // 100 directories x 1,000 empty files, created by the kernel-speed path.
  execFileSync('sh', ['-c', 'cd "$1" && for d in $(seq 1 100); do mkdir d$d; (cd d$d && seq 1 1000 | xargs touch); done', 'sh', target]);
  await lock(volume, target);

  // erase hands the old tree to its collector and returns; this one holds
  // the tree instead of deleting it, so "not yet deleted" is certain, not a race.
  const handedOver: string[] = [];
  const holding = { add: (tree: string) => void handedOver.push(tree) } as unknown as TrashCollector;
  await erase(volume, { trash: holding });
  t.same(handedOver, [join(slot, '.fscrypt-local', 'trash', 'vol-1')], 'erase returned with the old generation handed over, not deleted');
  const next = await prepare(slot, protector);
  const use = await published(protector, next);
  await writeFile(join(use, 'new-tenant'), 'already working');
  t.equal(await readFile(join(use, 'new-tenant'), 'utf8'), 'already working', 'the new generation is in use while the old one waits for deletion');
  t.equal((await readdir(join(handedOver[0]!))).length, 100, 'the old ciphertext is all still there');

  let progressSeen = 0;
  const trash = new TrashCollector({ onProgress: () => progressSeen++ });
  trash.add(handedOver[0]!);
  await trash.idle();
  t.same(trash.status().removed, { trees: 1, files: 100_000, dirs: 101 });
  t.ok(progressSeen > 0, 'deletion reports progress');
  await lock(next, use);
});

t.test('recycle erases, prepares the next generation, and only then queues the old one for deletion', async (t) => {
  const { slot, protector } = await freshSlot(t);
  const volume = await prepare(slot, protector);
  const target = await published(protector, volume);
  await writeFile(join(target, 'old'), 'old tenant');
  await lock(volume, target);
  const trash = new TrashCollector();
  const queuedDuringPrepare: number[] = [];
  const { erased, next } = await recycle(volume, protector, {
    trash,
    onStep: (step) => {
      if (step.startsWith('prepare:')) queuedDuringPrepare.push(trash.status().queued.length + (trash.status().current ? 1 : 0));
    },
  });
  t.equal(erased, 'vol-1');
  t.match(next, { name: 'vol-2', generation: 2 });
  t.ok(queuedDuringPrepare.length > 0 && queuedDuringPrepare.every((n) => n === 0), 'nothing was being deleted while the next generation was prepared');
  t.not(trash.status().queued.length + (trash.status().current ? 1 : 0) + trash.status().removed.trees, 0, 'the old generation is queued afterwards');
  await trash.idle();
  t.same(await readdir(join(slot, '.fscrypt-local', 'trash')), []);
  t.equal((await getKeyStatus(slot, volume.identifier)).status, 'absent');
});

t.test('recycle refuses a stale volume, and a prepare half that fails still finishes the erase and leaves a foreign directory alone', async (t) => {
  const { slot, protector } = await freshSlot(t);
  const volume = await prepare(slot, protector);
  const target = await published(protector, volume);
  await writeFile(join(target, 'old'), 'old tenant');
  t.match(await rejection(recycle(volume, protector)), { code: 'ERR_PUBLISHED', message: /published at/ }, 'a published volume is refused');
  await lock(volume, target);

  // Something the state does not know sits where the next generation goes.
  const squatter = join(slot, 'vol-2');
  await mkdir(squatter);
  await writeFile(join(squatter, 'not-ours'), 'keep me');
  const trash = new TrashCollector();
  t.match(await rejection(recycle(volume, protector, { trash })), { code: 'ERR_FOREIGN_ENTRY', message: /vol-1 of slot .* was crypto-erased, but preparing the next generation failed: .*vol-2 already exists.*fscrypt-local prepare/ });
  await trash.idle();
  const status = await slotStatus(slot);
  t.equal(status.volume, null, 'the half-made generation is rolled back');
  t.equal(status.retiring, null, 'the decided erase was finished');
  t.notOk(await new SlotKeys(slot).hasPolicy(volume.identifier), 'the old wrapped key is destroyed');
  t.equal((await getKeyStatus(slot, volume.identifier)).status, 'absent');
  t.same(await readdir(join(slot, '.fscrypt-local', 'trash')), [], 'the old ciphertext was deleted');
  t.equal(await readFile(join(squatter, 'not-ours'), 'utf8'), 'keep me', 'the foreign directory is untouched');
  t.same(await new SlotKeys(slot).listPolicies(), [], 'no wrapped key of the rolled-back generation is left');

  // A retry (the controller's, after the failure) finishes the job: the erase
  // stays done, the next generation moves past the foreign name.
  const retried = await recycle(volume, protector, { trash });
  t.match(retried, { erased: 'vol-1', next: { name: 'vol-3', generation: 3 } });
  t.same(await recycle(volume, protector, { trash }), retried, 'and again: the same result');
  t.same(await prepare(slot, protector), retried.next, 'prepare agrees');
});

t.test('reconcile after a reboot: targets and keys are gone; state follows the kernel', async (t) => {
  const { fs, slot, protector } = await freshSlot(t);
  const volume = await prepare(slot, protector);
  const target = await published(protector, volume);
  await writeFile(join(target, 'f'), 'survives');
  // A reboot: the bind mount and the kernel key vanish.
  execFileSync('umount', [target]);
  execFileSync('umount', [slot]);
  execFileSync('mount', ['-o', 'loop', fs.image!, slot]);
  const report = await reconcile(slot, protector);
  t.same(report.actions, [`forgot 1 target(s) no longer mounted: ${target}`]);
  t.same(report.warnings, []);
  t.same((await slotStatus(slot)).volume?.targets, []);
  // kubelet publishes again after the reboot, into the directory that exists.
  await unlock(volume, protector, { path: target });
  t.equal(await readFile(join(target, 'f'), 'utf8'), 'survives');
  await lock(volume, target);
});

t.test('reconcile leaves a key no hook of ours added (break-glass), locks one a lost target left, and re-adds one a published target needs', async (t) => {
  const { slot, protector } = await freshSlot(t);
  const volume = await prepare(slot, protector);
  const key = await protector.unwrapPolicyKey(volume.identifier);
  const { addKey, removeKey } = await import('../../lib/kernel/index.js');
  try {
    await addKey(slot, key); // an admin's break-glass unlock with the stock tool
    const foreign = await reconcile(slot, protector);
    t.same(foreign.actions, []);
    t.match(foreign.warnings, [/key of vol-1 is in the kernel, but no unlock of fscrypt-local put it there.*left alone/]);
    t.equal((await getKeyStatus(slot, volume.identifier)).status, 'present', 'the admin keeps access');
    await removeKey(slot, volume.identifier, { allUsers: true });

    // A target recorded, then lost (its mount gone behind our back), the key still in.
    const lost = await published(protector, volume);
    execFileSync('umount', [lost]);
    t.same((await reconcile(slot, protector)).actions, ['locked vol-1: its key was in the kernel with no target published', `forgot 1 target(s) no longer mounted: ${lost}`]);
    t.equal((await getKeyStatus(slot, volume.identifier)).status, 'absent');

    const target = await published(protector, volume);
    await removeKey(slot, volume.identifier, { allUsers: true }); // e.g. `fscrypt lock` by hand
    t.same((await reconcile(slot)).warnings, [`vol-1 is published at ${target} but its key is absent: run unlock with the slot's key source`], 'without a protector it reports');
    t.same((await reconcile(slot, protector)).actions, ['re-added the key of vol-1, published at 1 target(s)']);
    t.equal((await getKeyStatus(slot, volume.identifier)).status, 'present');
    await lock(volume, target);
  } finally {
    key.fill(0);
  }
});

t.test('a tenant symlink pointing outside the slot is removed by erase; its target survives', async (t) => {
  const { slot, protector } = await freshSlot(t);
  const outside = join(kubelet.mountpoint, 'outside');
  await mkdir(outside);
  await writeFile(join(outside, 'precious'), 'not the tenant\'s');
  const volume = await prepare(slot, protector);
  const target = await published(protector, volume);
  await symlink(outside, join(target, 'escape'));
  await symlink('../../..', join(target, 'up'));
  await lock(volume, target);
  const trash = new TrashCollector();
  await erase(volume, { trash });
  await trash.idle();
  t.equal(await readFile(join(outside, 'precious'), 'utf8'), 'not the tenant\'s');
  t.same(trash.status().failures, []);
});

t.test('reconcile reports key metadata that would not unlock, and erases leftovers of interrupted metadata writes', async (t) => {
  const { slot, protector } = await freshSlot(t);
  const volume = await prepare(slot, protector);
  const policyFile = join(slot, '.fscrypt', 'policies', volume.identifier);
  await rename(policyFile, `${policyFile}.away`);
  const report = await reconcile(slot, protector);
  t.match(report.warnings, [new RegExp(`has no policy ${volume.identifier}.*key of its volume is lost`)], 'a missing wrapped key is reported, not hidden');
  await rename(`${policyFile}.away`, policyFile);
  t.same((await reconcile(slot, protector)).warnings, [], 'and nothing once it is back');

  // A temp file a killed metadata write left in keys/tmp.
  const tmp = join(slot, '.fscrypt-local', 'keys', 'tmp');
  await mkdir(tmp, { recursive: true });
  await writeFile(join(tmp, `${policyTag(volume.identifier)}.0123456789ab.tmp`), 'wrapped key bytes of an interrupted write');
  t.match((await reconcile(slot, protector)).actions, [/crypto-erased 1 leftover key metadata file/]);
  t.same(await readdir(tmp), []);
});

t.test('status shows a lock waiting for busy files, with who holds them, and key metadata that would not unlock', async (t) => {
  const { slot, protector } = await freshSlot(t);
  const volume = await prepare(slot, protector);
  const target = await published(protector, volume);
  await writeFile(join(target, 'held'), 'in use');
  // A process on the host holds a file through the slot, not the target: the unmount works, the key cannot go.
  const holder = spawn('sh', ['-c', `exec 3<'${join(volume.path, 'held')}'; echo ready; exec sleep 60`], { stdio: ['ignore', 'pipe', 'ignore'] });
  t.teardown(() => holder.kill('SIGKILL'));
  await new Promise((resolve) => holder.stdout.once('data', resolve));
  t.same((await slotStatus(slot)).volume?.pendingLock, undefined, 'published: no lock is pending');

  t.match(await rejection(lock(volume, target, { busyTimeoutMs: 200 })), { code: 'ERR_FILES_BUSY' });
  const pending = (await slotStatus(slot)).volume?.pendingLock;
  t.ok(pending, 'the key still in the kernel with no target is shown');
  t.ok(pending?.blockers.some((b) => b.pid === holder.pid), 'with the process holding the file');

  holder.kill('SIGKILL');
  await new Promise((resolve) => holder.once('exit', resolve));
  t.match(await lock(volume, target), { locked: true });
  t.same((await slotStatus(slot)).volume?.pendingLock, undefined, 'locked: nothing pending');

  t.same((await slotStatus(slot)).metadataProblems, []);
  const policyFile = join(slot, '.fscrypt', 'policies', volume.identifier);
  await rename(policyFile, `${policyFile}.away`);
  t.match((await slotStatus(slot)).metadataProblems, [new RegExp(`no policy ${volume.identifier}`)], 'a volume that cannot be unlocked does not look healthy');
  await rename(`${policyFile}.away`, policyFile);
});
