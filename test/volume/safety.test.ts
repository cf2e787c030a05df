// Refusals that protect data and keys: a directory the slot state does not
// know is never deleted, a failed publish leaves no key behind, a forged
// volume path is refused, erase decides nothing while files are busy, and
// the slot lock survives its holder's death.
import { execFileSync, spawn } from 'node:child_process';
import { mkdir, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { getKeyStatus } from '../../lib/kernel/index.js';
import { SlotKeys } from '../../lib/keys/index.js';
import { adminLock, adminUnlock, erase, initSlot, lock, prepare, reconcile, slotStatus, unlock, TrashCollector, type Volume } from '../../lib/volume/index.js';
import { withSlotLock } from '../../lib/volume/slot/slot-lock.js';
import { isBindOf, mountAt } from '../../lib/volume/mounts/mounts.js';
import { ext4 } from '../fixtures/system/scratch-fs.js';
import { rejection } from '../fixtures/helpers.js';
import { freshSlot, podTargets } from '../fixtures/volume-slot.js';

const newTarget = podTargets(t);

t.test('a slot whose state was lost keeps its old volume and numbers new ones above it', async (t) => {
  const { slot, source, protector } = await freshSlot(t);
  const old = await prepare(slot, protector);
  const target = await newTarget();
  await unlock(old, protector, { path: target });
  await writeFile(join(target, 'data'), 'tenant data');
  await lock(old, target);

  await rm(join(slot, '.fscrypt-local', 'slot.state'));
  await initSlot(slot, source);
  const next = await prepare(slot, protector);
  t.equal(next.name, 'vol-2', 'the lost generation number is not reused');
  t.same((await slotStatus(slot)).strayVolumes, ['vol-1'], 'the old volume is kept, as a stray');
  t.same((await reconcile(slot, protector)).warnings, ['vol-1 in the slot is not its current volume; left untouched (inspect it, then remove it by hand)']);
  t.equal((await readdir(join(slot, 'vol-1'))).length, 1, 'and reconcile leaves it untouched');
  t.ok(await new SlotKeys(slot).hasPolicy(old.identifier), 'and so is its key');
});

t.test('prepare refuses, and its rollback keeps, a directory the state does not know', async (t) => {
  const { slot, protector } = await freshSlot(t);
  const squatter = join(slot, 'vol-1');
  await mkdir(squatter);
  await writeFile(join(squatter, 'precious'), 'not ours');
  // The slot was initialised before vol-1 appeared, so it plans to use that name.
  t.match(await rejection(prepare(slot, protector)), { code: 'ERR_FOREIGN_ENTRY', message: /vol-1 already exists.*refusing to touch it/ });
  t.equal(await readFile(join(squatter, 'precious'), 'utf8'), 'not ours', 'the directory is intact');
  const status = await slotStatus(slot);
  t.equal(status.volume, null, 'the failed prepare is rolled back');
  await rm(squatter, { recursive: true });
  t.equal((await prepare(slot, protector)).name, 'vol-2', 'the next prepare moves on');
});

t.test('unlock onto a target that holds another mount fails before adding the key', async (t) => {
  const { slot, protector } = await freshSlot(t);
  const volume = await prepare(slot, protector);
  const target = await newTarget();
  await mkdir(target);
  execFileSync('mount', ['-t', 'tmpfs', 'foreign', target]);
  t.teardown(() => execFileSync('umount', ['-l', target], { stdio: 'ignore' }));
  t.match(await rejection(unlock(volume, protector, { path: target })), { code: 'ERR_FOREIGN_MOUNT', message: /already has a different mount/ });
  t.equal((await getKeyStatus(slot, volume.identifier)).status, 'absent', 'no key is left in the kernel');
  t.same((await slotStatus(slot)).volume?.targets, [], 'no target is recorded');
});

t.test('a publish whose state write fails keeps the key of a volume already published elsewhere, and adds nothing', async (t) => {
  const { slot, protector } = await freshSlot(t);
  const volume = await prepare(slot, protector);
  const first = await newTarget();
  await unlock(volume, protector, { path: first });
  t.same(await unlock(volume, protector, { path: first }), { targets: 1 }, 'idempotent');
  // The state write fails for real: an immutable state file refuses every open for writing (EPERM).
  const stateFile = join(slot, '.fscrypt-local', 'slot.state');
  execFileSync('chattr', ['+i', stateFile]);
  t.teardown(() => execFileSync('chattr', ['-i', stateFile]));
  const second = await newTarget();
  t.match(await rejection(unlock(volume, protector, { path: second })), { name: 'FscryptError', code: 'EPERM' });
  t.equal((await getKeyStatus(slot, volume.identifier)).status, 'present', 'the key stays: the first target still uses it');
  t.ok(await isBindOf(first, volume.path), 'the first target is still mounted');
  t.notOk(await mountAt(second).catch(() => undefined), 'nothing was mounted at the second target');
  execFileSync('chattr', ['-i', stateFile]);
  await lock(volume, first);
  t.equal((await getKeyStatus(slot, volume.identifier)).status, 'absent');
});

t.test('hooks refuse a Volume whose path is not the one the slot state derives', async (t) => {
  const { slot, protector } = await freshSlot(t);
  const volume = await prepare(slot, protector);
  const inside = join(volume.path, 'sub'); // inherits the policy, so it would pass a policy check
  const linkToSlot = join(slot, '..', 'slot-link');
  await symlink(slot, linkToSlot);
  const forged: Volume[] = [
    { ...volume, path: inside },
    { ...volume, name: 'vol-9' },
    { ...volume, slot: linkToSlot, path: join(linkToSlot, volume.name) },
  ];
  for (const claim of forged) {
    t.match(await rejection(unlock(claim, protector, { path: await newTarget() })), { code: 'ERR_UNSAFE_PATH' }, `unlock ${JSON.stringify(claim)}`);
    t.match(await rejection(erase(claim)), { code: 'ERR_UNSAFE_PATH' }, 'erase');
  }
  t.equal((await getKeyStatus(slot, volume.identifier)).status, 'absent');
  t.equal((await slotStatus(slot)).volume?.phase, 'ready', 'nothing was erased');
});

t.test('erase decides nothing while the volume is admin-unlocked or its files are busy', async (t) => {
  const { slot, protector } = await freshSlot(t);
  const trash = new TrashCollector();
  const volume = await prepare(slot, protector);
  await adminUnlock(volume, protector);
  t.match(await rejection(erase(volume, { trash })), { code: 'ERR_PUBLISHED', message: /an admin unlocked it/ });
  await adminLock(volume);

  // A file held open through a target that was lazily unmounted behind our back.
  const target = await newTarget();
  await unlock(volume, protector, { path: target });
  await writeFile(join(target, 'held'), 'in use');
  const holder = spawn('sh', ['-c', `exec 3<'${join(target, 'held')}'; echo ready; exec sleep 60`], { stdio: ['ignore', 'pipe', 'ignore'] });
  t.teardown(() => holder.kill('SIGKILL'));
  await new Promise((resolve) => holder.stdout.once('data', resolve));
  execFileSync('umount', ['-l', target]);

  t.match(await rejection(erase(volume, { trash, busyTimeoutMs: 300 })), {
    code: 'ERR_FILES_BUSY',
    message: new RegExp(`pid ${holder.pid} \\(sleep\\) has /held open through a detached \\(lazily unmounted\\) mount`),
  });
  t.equal((await slotStatus(slot)).volume?.phase, 'ready', 'no erase was decided');
  t.ok(await new SlotKeys(slot).hasPolicy(volume.identifier), 'the wrapped key is intact');

  holder.kill('SIGKILL');
  await new Promise((resolve) => holder.once('exit', resolve));
  t.same(await erase(volume, { trash }), { erased: 'vol-1', trash: join(slot, '.fscrypt-local', 'trash', 'vol-1') });
  await trash.idle();
});

t.test('the slot lock excludes another process, and its death releases the lock at once', async (t) => {
  const { slot } = await freshSlot(t);
  const child = spawn(process.execPath, [...process.execArgv, new URL('../fixtures/children/slot-lock-child.ts', import.meta.url).pathname, slot], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  t.teardown(() => child.kill('SIGKILL'));
  await new Promise((resolve) => child.stdout.once('data', resolve));

  const busy = await rejection(withSlotLock(slot, async () => 'never', { timeoutMs: 300 }));
  t.match(busy, { code: 'ERR_SLOT_LOCKED', message: new RegExp(`pid ${child.pid} on .* holds`) });
  child.kill('SIGKILL');
  await new Promise((resolve) => child.once('exit', resolve));
  t.equal(await withSlotLock(slot, async () => 'mine', { timeoutMs: 5_000 }), 'mine', 'a dead holder releases the lock');
});

t.test('unpublishing a path that was never a target leaves that directory alone', async (t) => {
  const { slot, protector } = await freshSlot(t);
  const volume = await prepare(slot, protector);
  const stranger = await newTarget();
  await mkdir(stranger);
  t.same(await lock(volume, stranger), { locked: true, targets: [] });
  t.same(await readdir(stranger), [], 'the empty directory is still there');
});

t.test('hooks on a directory that is not a slot say how to make it one', async (t) => {
  const fs = ext4(t);
  t.match(await rejection(withSlotLock(fs.mountpoint, async () => undefined)), { code: 'ERR_NOT_INITIALIZED', message: /not an initialized slot.*init-slot/ });
});
