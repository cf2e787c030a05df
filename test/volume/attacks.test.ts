// Regression tests for the defects an outside attacker found in lib/volume
// (fixed in 23fdbf3), one test per finding, each reproducing the attack on
// the real kernel and asserting what really happened to the data, the keys,
// the mounts and the slot state. Numbers are the finding's number in the
// attacker's issue.
import { execFileSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, rmdir, symlink, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { dirname, join } from 'node:path';
import t, { type Test } from 'tap';
import { addKey, FscryptError, getKeyStatus, readMountInfo, removeKey } from '../../lib/kernel/index.js';
import type { OpenProtector } from '../../lib/keys/index.js';
import {
  adminLock,
  adminUnlock,
  erase,
  initSlot,
  lock,
  openSlotProtector,
  prepare,
  reconcile,
  recycle,
  resolveVolume,
  rotateKeySource,
  slotStatus,
  TrashCollector,
  unlock,
  type Volume,
} from '../../lib/volume/index.js';
import { readSlotState } from '../../lib/volume/slot/slot-state.js';
import { ext4, scratchDir } from '../fixtures/system/scratch-fs.js';
import { failure } from '../fixtures/helpers.js';
import { freshSlot, podTargets } from '../fixtures/volume-slot.js';

const newTarget = podTargets(t);

function sh(command: string, args: string[]): string {
  return execFileSync(command, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

async function mountedAt(path: string): Promise<boolean> {
  return (await readMountInfo()).some((m) => m.mountPoint === path);
}

async function keyOf(slot: string, volume: Volume): Promise<string> {
  return (await getKeyStatus(slot, volume.identifier)).status;
}

const policyFile = (volume: Volume): string => join(volume.slot, '.fscrypt', 'policies', volume.identifier);
const stateFile = (slot: string): string => join(slot, '.fscrypt-local', 'slot.state');

// slot.state: two 64 KiB halves, each magic (8) | sequence (u64 LE) | JSON length (u32) | SHA-256 (32) | JSON.
const HALF = 64 * 1024;
const HEADER = 8 + 8 + 4 + 32;

/** Flips one byte inside the JSON of the newest half (the higher sequence); returns that half's JSON as it was. */
function flipNewestJson(slot: string): string {
  const bytes = readFileSync(stateFile(slot));
  const sequence = (offset: number): bigint => (bytes.subarray(offset, offset + 8).toString('latin1') === 'FSLSTAT1' ? bytes.readBigUInt64LE(offset + 8) : -1n);
  const newest = sequence(0) > sequence(HALF) ? 0 : HALF;
  const json = bytes.subarray(newest + HEADER, newest + HEADER + bytes.readUInt32LE(newest + 16)).toString('utf8');
  bytes[newest + HEADER + 20]! ^= 0x01;
  writeFileSync(stateFile(slot), bytes);
  return json;
}

/** Reads a file of a volume with its key put in the kernel directly (no hook, no state change), then takes the key out again. */
async function readWithKey(protector: OpenProtector, volume: Volume, name: string): Promise<string> {
  const key = await protector.unwrapPolicyKey(volume.identifier);
  try {
    await addKey(volume.slot, key);
  } finally {
    key.fill(0);
  }
  try {
    return await readFile(join(volume.path, name), 'utf8');
  } finally {
    await removeKey(volume.slot, volume.identifier, { allUsers: true });
  }
}

/** The slot's tree, by name, type, size and content (the lock file's content, which names its last holder, left out). */
async function slotSnapshot(slot: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  async function walk(path: string, rel: string): Promise<void> {
    const st = lstatSync(path);
    let content = '';
    if (st.isFile() && rel !== './.fscrypt-local/lock') content = (await readFile(path)).toString('base64');
    out[rel] = `${st.mode.toString(8)} ${st.isFile() && rel === './.fscrypt-local/lock' ? '' : st.size} ${st.nlink} ${content}`;
    if (st.isDirectory()) for (const name of (await readdir(path)).sort()) if (name !== 'lost+found') await walk(join(path, name), `${rel}/${name}`);
  }
  await walk(slot, '.');
  return out;
}

t.test('1: one flipped byte in the newest state copy is refused, and costs neither data nor key', async (t) => {
  const { slot, protector } = await freshSlot(t);
  const volume = await prepare(slot, protector);
  await adminUnlock(volume, protector);
  await writeFile(join(volume.path, 'data.txt'), 'tenant data, written after the volume was handed out');
  await adminLock(volume);

  t.match(flipNewestJson(slot), /"phase":"ready"/, 'the damaged copy is the newest, ready state');
  for (const [name, call] of [
    ['reconcile', () => reconcile(slot, protector)],
    ['prepare', () => prepare(slot, protector)],
    ['status', () => slotStatus(slot)],
    ['unlock', () => adminUnlock(volume, protector)],
  ] as const) {
    const error = await failure(call);
    t.match(error, { code: 'ERR_BAD_METADATA', message: /newest copy of the slot state .* is damaged.*nothing was changed.*--use-previous-state/ }, `${name} refuses`);
  }
  t.ok(existsSync(volume.path), 'the volume directory survives');
  t.ok(existsSync(policyFile(volume)), 'and its wrapped key');
  t.equal(await keyOf(slot, volume), 'absent');
  t.equal(await readWithKey(protector, volume, 'data.txt'), 'tenant data, written after the volume was handed out', 'and its data, under that key');

  // On request, the previous copy (ready, admin-unlocked) is used and the file repaired.
  const report = await reconcile(slot, protector, { usePreviousState: true });
  t.match(report.actions, ['rewrote the slot state from its intact copy', /vol-1 is no longer admin-unlocked/]);
  t.same(report.warnings, []);
  t.match((await slotStatus(slot)).volume, { name: 'vol-1', phase: 'ready', adminUnlocked: false, key: 'absent' });
  await adminUnlock(volume, protector);
  t.equal(await readFile(join(volume.path, 'data.txt'), 'utf8'), 'tenant data, written after the volume was handed out');
  await adminLock(volume);
});

t.test('1: with --use-previous-state, a previous `preparing` copy never rolls back a volume holding data', async (t) => {
  const { slot, protector } = await freshSlot(t);
  // prepare's last two writes: the intent (`preparing`), then `ready`. Data
  // then goes in without a state write (a break-glass `fscrypt unlock`), so
  // the previous copy is still the `preparing` record of this very volume.
  const volume = await prepare(slot, protector);
  const key = await protector.unwrapPolicyKey(volume.identifier);
  await addKey(slot, key);
  key.fill(0);
  await writeFile(join(volume.path, 'data.txt'), 'tenant data');
  await removeKey(slot, volume.identifier, { allUsers: true });

  t.match(flipNewestJson(slot), /"phase":"ready"/);
  t.match(await failure(() => reconcile(slot, protector)), { code: 'ERR_BAD_METADATA', message: /--use-previous-state/ }, 'refused without the option');
  t.same(await readdir(volume.path).then((e) => e.length), 1, 'nothing was rolled back');

  const report = await reconcile(slot, protector, { usePreviousState: true });
  t.match(report.warnings, [new RegExp(`refusing to roll back the prepare of vol-1 .* holds data.*wrapped key and directory are kept`)]);
  t.ok(existsSync(volume.path), 'the volume directory survives the rollback');
  t.ok(existsSync(policyFile(volume)), 'and its wrapped key');
  t.equal(await readWithKey(protector, volume, 'data.txt'), 'tenant data', 'and its data');
  t.equal(await keyOf(slot, volume), 'absent', 'the key is out of the kernel');
  // The repaired file now holds the `preparing` copy: every later attempt refuses the same way, until an admin repairs the state.
  t.match((await reconcile(slot, protector)).warnings, [/refusing to roll back the prepare of vol-1/], 'a later reconcile refuses again');
  t.match(await failure(() => prepare(slot, protector)), { code: 'ERR_BAD_METADATA', message: /refusing to roll back the prepare of vol-1/ }, 'so does prepare');
  t.equal(await readWithKey(protector, volume, 'data.txt'), 'tenant data', 'the data and its wrapped key are still there');
});

t.test('2: a read-only slot can still be locked; reconcile records it once the slot is writable again', async (t) => {
  const { slot, protector } = await freshSlot(t);
  t.teardown(() => {
    try {
      sh('mount', ['-o', 'remount,rw', slot]);
    } catch {
      // already read-write, or gone
    }
  });
  const volume = await prepare(slot, protector);
  const target = await newTarget();
  await unlock(volume, protector, { path: target });
  await writeFile(join(target, 'data'), 'tenant data');

  sh('mount', ['-o', 'remount,ro', slot]); // what ext4 does by itself after an I/O error (errors=remount-ro)
  const result = await lock(volume, target);
  t.match(result, { locked: true, targets: [], warning: /state could not be recorded \(EROFS.*read-only.*unmount and the key removal are done.*reconcile/ });
  t.notOk(await mountedAt(target), 'the target is unmounted');
  t.notOk(existsSync(target), 'and removed');
  t.equal(await keyOf(slot, volume), 'absent', 'the key is out of the kernel');

  // An admin unlock (and a target) on a read-only slot: adminLock with force.
  sh('mount', ['-o', 'remount,rw', slot]);
  t.match((await reconcile(slot, protector)).actions, [`forgot 1 target(s) no longer mounted: ${target}`], 'the stale target is forgotten');
  await adminUnlock(volume, protector);
  const second = await newTarget();
  await unlock(volume, protector, { path: second });
  sh('mount', ['-o', 'remount,ro', slot]);
  t.match(await adminLock(volume, { force: true }), { locked: true, targets: [], warning: /EROFS/ });
  t.notOk(await mountedAt(second), 'the target is unmounted');
  t.equal(await keyOf(slot, volume), 'absent', 'the key is out of the kernel');

  sh('mount', ['-o', 'remount,rw', slot]);
  t.same((await reconcile(slot, protector)).actions, ['vol-1 is no longer admin-unlocked: its key left the kernel (a reboot?)', `forgot 1 target(s) no longer mounted: ${second}`]);
  t.match((await slotStatus(slot)).volume, { phase: 'ready', key: 'absent', adminUnlocked: false, targets: [] });
  await adminUnlock(volume, protector);
  t.equal(await readFile(join(volume.path, 'data'), 'utf8'), 'tenant data', 'the data is intact');
  await adminLock(volume);
});

t.test('3: a slot unmounted while published', async (t) => {
  async function publishedSlot(t: Parameters<typeof freshSlot>[0]) {
    const fixture = await freshSlot(t);
    const volume = await prepare(fixture.slot, fixture.protector);
    const target = await newTarget();
    await unlock(volume, fixture.protector, { path: target });
    await writeFile(join(target, 'data'), 'tenant data');
    const device = (await readMountInfo()).find((m) => m.mountPoint === fixture.slot)!.device;
    return { ...fixture, volume, target, device };
  }

  /** Hooks on the bare mount point say the disk is not mounted, never "run init-slot", and create nothing there. */
  async function refusedWhileUnmounted(t: Test, slot: string, protector: OpenProtector): Promise<void> {
    for (const [name, call] of [
      ['status', () => slotStatus(slot)],
      ['reconcile', () => reconcile(slot, protector)],
      ['prepare', () => prepare(slot, protector)],
      ['resolveVolume', () => resolveVolume(slot)],
    ] as const) {
      const error = await failure(call);
      t.match(error, { code: 'ERR_NOT_MOUNTPOINT', message: /is not a mount point.*mount the slot's disk/ }, `${name}: not a mount point`);
      t.notMatch(error.message, /init-slot/, `${name} never says to run init-slot`);
    }
    t.same(await readdir(slot), [], 'nothing was created in the bare directory');
  }

  t.test('a: the filesystem still mounted elsewhere: the key is removed there', async (t) => {
    const { fs, slot, protector, volume, target, device } = await publishedSlot(t);
    const elsewhere = scratchDir(t);
    sh('mount', [fs.device!, elsewhere]); // the same superblock, so the same keyring
    sh('umount', [slot]); // the target's bind mount keeps the filesystem alive

    const result = await lock(volume, target);
    t.match(result, { locked: true, targets: [], warning: new RegExp(`slot '${slot}' cannot be reached.*unmounted '${target}'.*the key was removed through ${elsewhere}`) });
    t.notOk(await mountedAt(target), 'the target is unmounted');
    t.equal((await getKeyStatus(elsewhere, volume.identifier)).status, 'absent', 'the key is absent from the filesystem');
    t.same(await readdir(join(elsewhere, volume.name)).then((e) => e.length), 1, 'the data is still there (as ciphertext)');
    await refusedWhileUnmounted(t, slot, protector);

    sh('mount', [fs.device!, slot]);
    sh('umount', [elsewhere]);
    t.equal((await readMountInfo()).find((m) => m.mountPoint === slot)?.device, device);
    t.same((await reconcile(slot, protector)).actions, [`forgot 1 target(s) no longer mounted: ${target}`], 'once mounted again, reconcile forgets the target');
  });

  t.test('b: no other mount: the filesystem, and its keyring, are gone', async (t) => {
    const { fs, slot, protector, volume, target, device } = await publishedSlot(t);
    sh('umount', [slot]);
    t.ok((await readMountInfo()).some((m) => m.device === device), 'only the target holds the filesystem');

    const result = await lock(volume, target);
    t.match(result, { locked: true, targets: [], warning: new RegExp(`slot '${slot}' cannot be reached.*unmounted '${target}'.*no longer mounted anywhere`) });
    t.notOk(await mountedAt(target), 'the target is unmounted');
    t.same(
      (await readMountInfo()).filter((m) => m.device === device),
      [],
      'nothing mounts the filesystem any more: the kernel dropped it with its keys',
    );
    t.match(await lock(volume, target), { locked: true, targets: [], warning: /nothing is mounted at/ }, 'a second lock of the target is fine');
    await refusedWhileUnmounted(t, slot, protector);

    sh('mount', ['-o', 'loop', fs.image!, slot]);
    t.same((await reconcile(slot, protector)).actions, [`forgot 1 target(s) no longer mounted: ${target}`]);
    t.equal(await keyOf(slot, volume), 'absent');
  });
});

t.test('4: erase validates the wrapped key before changing anything', async (t) => {
  const { slot, protector } = await freshSlot(t);
  const trash = new TrashCollector();
  const volume = await prepare(slot, protector);
  const file = policyFile(volume);
  const saved = join(slot, 'policy-saved');
  await rename(file, saved);
  let server: Server | undefined;
  t.teardown(() => server?.close());

  const cases: [string, () => Promise<void>, () => Promise<void>][] = [
    ['a FIFO', async () => void sh('mkfifo', [file]), () => rm(file)],
    [
      'a unix socket',
      async () => {
        server = createServer();
        await new Promise<void>((resolve) => server!.listen(file, resolve));
      },
      async () => {
        await new Promise((resolve) => server!.close(resolve));
        await rm(file, { force: true });
      },
    ],
    ['a directory', () => mkdir(file), () => rmdir(file)],
  ];
  for (const [what, plant, remove] of cases) {
    await plant();
    const before = await slotSnapshot(slot);
    const error = await failure(() => erase(volume, { trash }));
    t.match(error, { code: 'ERR_BAD_METADATA', message: /refusing to erase .*vol-1: its wrapped key cannot be destroyed safely.*nothing was changed/ }, `${what}: refused`);
    t.same(await slotSnapshot(slot), before, `${what}: the slot is unchanged`);
    const state = await readSlotState(slot);
    t.match(state, { volume: { name: 'vol-1', phase: 'ready' } }, `${what}: the volume is still ready`);
    t.equal(state.retiring, undefined, `${what}: no erase was recorded`);
    t.ok(lstatSync(volume.path).isDirectory(), `${what}: the directory is in place`);
    t.same(await readdir(join(slot, '.fscrypt-local', 'trash')), [], `${what}: nothing went to the trash`);
    await remove();
  }

  await rename(saved, file);
  t.same(await erase(volume, { trash }), { erased: 'vol-1', trash: join(slot, '.fscrypt-local', 'trash', 'vol-1') }, 'with the file restored, erase works');
  t.notOk(existsSync(file), 'and destroys the wrapped key');
  await trash.idle();
});

t.test('5: prepare, status, reconcile and unlock never vouch for a volume directory that is not the verified one', async (t) => {
  const { slot, protector } = await freshSlot(t);
  const volume = await prepare(slot, protector);
  const aside = join(slot, 'aside');
  await rename(volume.path, aside);
  const cases: [string, string, () => Promise<void>, () => Promise<void>][] = [
    ['deleted', 'it is missing', async () => undefined, async () => undefined],
    ['replaced by a plain directory', 'it is not encrypted', () => mkdir(volume.path), () => rmdir(volume.path)],
    // A symlink to the real volume directory: following it would pass every policy check.
    ['replaced by a symlink to the real directory', 'it is not a directory \\(a symlink\\?\\)', () => symlink(aside, volume.path), () => rm(volume.path)],
  ];
  for (const [what, problem, plant, remove] of cases) {
    await plant();
    t.match(await failure(() => prepare(slot, protector)), { code: 'ERR_UNSAFE_PATH', message: new RegExp(`refusing to hand out ${volume.path}: ${problem}`) }, `${what}: prepare refuses`);
    t.match((await slotStatus(slot)).volume, { name: 'vol-1', problem: new RegExp(problem) }, `${what}: status shows the problem`);
    t.match((await reconcile(slot, protector)).warnings, [new RegExp(`vol-1 cannot be used: ${problem}`)], `${what}: reconcile warns`);
    const target = await newTarget();
    t.match(await failure(() => unlock(volume, protector, { path: target })), { code: 'ERR_UNSAFE_PATH' }, `${what}: unlock refuses`);
    t.notOk(existsSync(target), `${what}: nothing was mounted`);
    t.equal(await keyOf(slot, volume), 'absent', `${what}: no key was added`);
    await remove();
  }
  await rename(aside, volume.path);
  t.same(await prepare(slot, protector), volume, 'the real directory back: prepare hands it out');
  t.equal((await slotStatus(slot)).volume?.problem, undefined);
});

t.test('6: a directory that is not a mount point is never a slot', async (t) => {
  const fs = ext4(t);
  const { source } = await freshSlot(t); // a key source to try with
  const plain = join(fs.mountpoint, 'plain');
  await mkdir(plain);
  t.match(await failure(() => initSlot(plain, source)), { code: 'ERR_NOT_MOUNTPOINT', message: new RegExp(`'${plain}' is not a mount point.*mount the slot's disk at ${plain}`) });
  t.same(await readdir(plain), [], 'init-slot created nothing');

  // A slot whose disk is no longer mounted: its old state is still in the directory underneath.
  sh('mount', ['--bind', plain, plain]);
  let bound = true;
  t.teardown(() => {
    if (bound) sh('umount', [plain]);
  });
  await initSlot(plain, source);
  const protector = await openSlotProtector(plain, source);
  t.teardown(() => protector.close());
  const volume = await prepare(plain, protector);
  sh('umount', [plain]);
  bound = false;
  t.ok(existsSync(stateFile(plain)), 'the directory underneath holds a slot state');
  const before = await slotSnapshot(plain);
  for (const [name, call] of [
    ['initSlot', () => initSlot(plain, source)],
    ['prepare', () => prepare(plain, protector)],
    ['status', () => slotStatus(plain)],
    ['resolveVolume', () => resolveVolume(plain)],
    ['reconcile', () => reconcile(plain, protector)],
    ['unlock', async () => unlock(volume, protector, { path: await newTarget() })],
  ] as const) {
    t.match(await failure(call), { code: 'ERR_NOT_MOUNTPOINT', message: /is not a mount point/ }, `${name} refuses`);
  }
  t.same(await slotSnapshot(plain), before, 'nothing changed');
});

/**
 * Fills the filesystem of `dir` completely, root's reserved blocks included
 * (the tests run as root), inside `dir`/filler. ext4 gives back blocks it
 * had reserved for delayed allocation once the data is written out, so it
 * writes, syncs, and takes what came back, until nothing does.
 */
function fill(dir: string): string {
  const filler = join(dir, 'filler');
  mkdirSync(filler);
  const dd = (bs: string): void => {
    try {
      sh('dd', ['if=/dev/zero', `of=${join(filler, 'zeros')}`, `bs=${bs}`, 'oflag=append', 'conv=notrunc,fsync', 'status=none']);
    } catch {
      // ENOSPC: the point
    }
  };
  dd('1M');
  for (let round = 0; ; round++) {
    dd('4k');
    sh('sync', ['-f', dir]);
    let made = 0;
    for (; ; made++) {
      try {
        mkdirSync(join(filler, `d${round}-${made}`));
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOSPC') throw error;
        break;
      }
    }
    if (made === 0 && round > 0) return filler;
  }
}

t.test('8: recycle on a full slot: the erase is done, the next generation fails with ENOSPC, and a retry finishes it', async (t) => {
  const { slot, protector } = await freshSlot(t, { sizeMiB: 32 });
  const trash = new TrashCollector();
  const volume = await prepare(slot, protector);
  const target = await newTarget();
  await unlock(volume, protector, { path: target });
  await writeFile(join(target, 'data'), 'old tenant');
  await lock(volume, target);
  const filler = fill(slot);
  t.match(await failure(() => mkdir(join(slot, 'probe-dir'))), { code: 'ENOSPC' }, 'the slot is full');

  const error = await failure(() => recycle(volume, protector, { trash }));
  t.ok(error instanceof FscryptError, 'a FscryptError');
  t.match(error, {
    code: 'ENOSPC',
    message: new RegExp(`vol-1 of slot '${slot}' was crypto-erased, but preparing the next generation failed: .*ENOSPC.*fscrypt-local prepare ${slot}`),
  });
  t.equal(await keyOf(slot, volume), 'absent', 'the old key is out of the kernel');
  t.notOk(existsSync(policyFile(volume)), 'its wrapped key is destroyed');
  await t.rejects(protector.unwrapPolicyKey(volume.identifier), { name: 'FscryptError' }, 'nothing can unwrap it any more');
  const status = await slotStatus(slot);
  t.equal(status.volume, null, 'no half-made generation is left');
  t.equal(status.retiring, null, 'the erase is recorded as done');

  await rm(filler, { recursive: true });
  await trash.idle();
  const retried = await recycle(volume, protector, { trash });
  t.match(retried, { erased: 'vol-1', next: { name: 'vol-3', generation: 3 } }, 'the retry prepares the next generation (vol-2 went with the failed attempt: names are never reused)');
  t.match((await slotStatus(slot)).volume, { name: 'vol-3', phase: 'ready', key: 'absent' });
  t.same(await recycle(volume, protector, { trash }), retried, 'and again: the same answer');
  await trash.idle();
});

t.test('9: prepare gives the volume directory exactly the mode asked for; an invalid mode changes nothing', async (t) => {
  const { slot, protector } = await freshSlot(t);
  const umask = process.umask(0o022);
  t.teardown(() => void process.umask(umask));
  const before = await slotSnapshot(slot);
  for (const mode of [0o10000, 1.5, -1, Number.NaN]) {
    t.match(await failure(() => prepare(slot, protector, { mode })), { code: 'ERR_INVALID_ARG', message: /mode/ }, `mode ${mode} is refused`);
  }
  t.same(await slotSnapshot(slot), before, 'nothing changed');
  const volume = await prepare(slot, protector, { mode: 0o777 });
  t.equal(lstatSync(volume.path).mode & 0o7777, 0o777, '0777 under umask 022 is 0777');
  t.match(await failure(() => recycle(volume, protector, { mode: 0o10000 })), { code: 'ERR_INVALID_ARG' }, 'recycle refuses an invalid mode too');
  t.match((await slotStatus(slot)).volume, { name: 'vol-1', phase: 'ready' }, 'before erasing anything');
  const trash = new TrashCollector();
  const { next } = await recycle(volume, protector, { mode: 0o1770, trash });
  t.equal(lstatSync(next.path).mode & 0o7777, 0o1770, 'recycle: the sticky bit and 0770, exactly');
  await trash.idle();
});

t.test('14: a lock file that is a hard link, a symlink or a FIFO is refused by every hook', async (t) => {
  const { slot, source, protector } = await freshSlot(t);
  const volume = await prepare(slot, protector);
  const lockFile = join(slot, '.fscrypt-local', 'lock');
  const other = join(slot, 'other-file');
  await writeFile(other, 'precious content');
  const outside = join(dirname(slot), 'outside-file');
  await writeFile(outside, 'outside content');
  const target = await newTarget();
  const hooks: [string, () => Promise<unknown>][] = [
    ['initSlot', () => initSlot(slot, source)],
    ['prepare', () => prepare(slot, protector)],
    ['unlock', () => unlock(volume, protector, { path: target })],
    ['adminUnlock', () => adminUnlock(volume, protector)],
    ['lock', () => lock(volume, target)],
    ['adminLock', () => adminLock(volume)],
    ['erase', () => erase(volume)],
    ['recycle', () => recycle(volume, protector)],
    ['reconcile', () => reconcile(slot, protector)],
    ['rotateKeySource', () => rotateKeySource(slot, source, source)],
  ];
  const cases: [string, RegExp, () => Promise<void>][] = [
    ['a hard link to another file of the slot', /it has 2 hard links/, () => rm(lockFile).then(() => sh('ln', [other, lockFile])).then(() => undefined)],
    ['a symlink', /it is a symbolic link/, () => rm(lockFile).then(() => symlink(outside, lockFile))],
    ['a FIFO', /it is not a regular file/, () => rm(lockFile).then(() => void sh('mkfifo', [lockFile]))],
  ];
  for (const [what, why, plant] of cases) {
    await plant();
    const before = await slotSnapshot(slot);
    for (const [name, call] of hooks) {
      const error = await failure(call);
      t.match(error, { code: 'ERR_UNSAFE_PATH', message: new RegExp(`refusing to use the lock file ${lockFile}.*${why.source}`) }, `${what}: ${name} refuses`);
    }
    t.equal(await readFile(other, 'utf8'), 'precious content', `${what}: the other file is unchanged`);
    t.equal(await readFile(outside, 'utf8'), 'outside content', `${what}: so is the file outside the slot`);
    t.same(await slotSnapshot(slot), before, `${what}: nothing in the slot changed`);
    t.equal(await keyOf(slot, volume), 'absent', `${what}: no key was added`);
    t.notOk(existsSync(target), `${what}: nothing was mounted`);
  }
  await rm(lockFile);
  t.same(await unlock(volume, protector, { path: target }), { targets: 1 }, 'with the lock file removed, hooks work again');
  await lock(volume, target);
  t.equal(lstatSync(lockFile).nlink, 1, 'a fresh lock file was made');
});

t.test('15: a missing or planted slot.state: errors name the slot, with a code and a remedy, never a raw system error', async (t) => {
  const { slot, protector } = await freshSlot(t);
  const volume = await prepare(slot, protector);
  const file = stateFile(slot);
  const saved = join(slot, 'state-saved');
  await rename(file, saved);
  const parent = dirname(slot);
  let server: Server | undefined;
  t.teardown(() => server?.close());
  const cases: [string, RegExp, () => Promise<void>, () => Promise<void>][] = [
    ['missing', /^ERR_NOT_INITIALIZED$/, async () => undefined, async () => undefined],
    ['a FIFO', /^ERR_BAD_METADATA$/, async () => void sh('mkfifo', [file]), () => rm(file)],
    ['a symlink to a valid state', /^ERR_BAD_METADATA$/, () => symlink(saved, file), () => rm(file)],
    ['a directory', /^ERR_BAD_METADATA$/, () => mkdir(file), () => rmdir(file)],
    [
      'a unix socket',
      /^(ERR_BAD_METADATA|ENXIO)$/,
      async () => {
        server = createServer();
        await new Promise<void>((resolve) => server!.listen(file, resolve));
      },
      async () => {
        await new Promise((resolve) => server!.close(resolve));
        await rm(file, { force: true });
      },
    ],
  ];
  for (const [what, code, plant, remove] of cases) {
    await plant();
    for (const [name, call] of [
      ['resolveVolume', () => resolveVolume(slot)],
      ['status', () => slotStatus(slot)],
      ['prepare', () => prepare(slot, protector)],
    ] as const) {
      const error = await failure(call);
      t.ok(error instanceof FscryptError, `${what}: ${name} fails with a FscryptError`);
      t.match(error.code, code, `${what}: ${name}: ${String(error.code)}`);
      t.ok(error.message.includes(slot), `${what}: ${name} names the slot`);
      t.notOk(error.message.includes(`'${parent}'`), `${what}: ${name} does not take the slot's parent for the slot`);
      t.match(error.message, /To fix|run `fscrypt-local|Repair it|remove it/, `${what}: ${name} says what to do`);
    }
    await remove();
  }
  await rename(saved, file);
  t.same(await resolveVolume(slot), volume, 'restored: the slot works');

  // A read-only slot: the EROFS of a state write reaches the caller as a FscryptError with a remedy.
  t.teardown(() => {
    try {
      sh('mount', ['-o', 'remount,rw', slot]);
    } catch {
      // already read-write
    }
  });
  sh('mount', ['-o', 'remount,ro', slot]);
  for (const [name, call] of [
    ['adminUnlock', () => adminUnlock(volume, protector)],
    ['erase', () => erase(volume)],
    ['unlock', async () => unlock(volume, protector, { path: await newTarget() })],
  ] as const) {
    const error = await failure(call);
    t.ok(error instanceof FscryptError, `read-only: ${name} fails with a FscryptError`);
    t.match(error, { code: 'EROFS', message: /read-only.*To fix: check `dmesg`/ }, `read-only: ${name} says what to do`);
  }
  t.equal(await keyOf(slot, volume), 'absent', 'no key was left in the kernel');
  sh('mount', ['-o', 'remount,rw', slot]);
  t.same((await reconcile(slot, protector)).warnings, []);
});
