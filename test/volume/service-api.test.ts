// The hooks as a long-running service drives them (the agent's CSI and
// reclaim loops): observers that throw, state writes that fail after a key
// went in, deadlines and cancellation while another hook holds the slot, an
// unpublish for a volume that is no longer current, and targets that would
// put a volume inside its own slot. Regression tests for the attacker's
// service-API findings (a)-(d), fixed in 23fdbf3.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { getKeyStatus, readMountInfo } from '../../lib/kernel/index.js';
import {
  adminLock,
  adminUnlock,
  erase,
  initSlot,
  lock,
  prepare,
  reconcile,
  recycle,
  slotStatus,
  TrashCollector,
  unlock,
  type HookOptions,
  type Volume,
} from '../../lib/volume/index.js';
import { readSlotState } from '../../lib/volume/slot/slot-state.js';
import { tmpfs } from '../fixtures/system/scratch-fs.js';
import { failure } from '../fixtures/helpers.js';
import { freshSlot } from '../fixtures/volume-slot.js';

const kubelet = tmpfs(t);
let targets = 0;
/** A kubelet-like target on the tmpfs: its parent (the pod directory) exists, the target does not. */
async function newTarget(): Promise<string> {
  const pod = join(kubelet.mountpoint, `pod-${targets++}`);
  await mkdir(pod);
  return join(pod, 'mount');
}

function sh(command: string, args: string[]): string {
  return execFileSync(command, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

async function mountedAt(path: string): Promise<boolean> {
  return (await readMountInfo()).some((m) => m.mountPoint === path);
}

async function keyOf(volume: Volume): Promise<string> {
  return (await getKeyStatus(volume.slot, volume.identifier)).status;
}

const stateFile = (slot: string): string => join(slot, '.fscrypt-local', 'slot.state');

t.test('a: observers that throw never break a hook, and never leave a key unaccounted for', async (t) => {
  const { slot, protector } = await freshSlot(t);
  const volume = await prepare(slot, protector);
  const target = await newTarget();

  // At every step: what the kernel, the mount table and the persisted state say.
  const seen: { step: string; key: string; mounted: boolean; recorded: boolean }[] = [];
  const progress: string[] = [];
  const hostile: HookOptions = {
    onProgress(event) {
      progress.push(event.kind);
      throw new Error('a progress observer that throws');
    },
    async onStep(step) {
      const state = await readSlotState(slot);
      seen.push({ step, key: await keyOf(volume), mounted: await mountedAt(target), recorded: state.volume?.targets.some((x) => x.path === target) ?? false });
      throw new Error('a step observer that rejects'); // an async observer: a rejected promise (a synchronous throw is below)
    },
  };

  const unlocked = await failure(() => unlock(volume, protector, { path: target }, hostile));
  t.equal(unlocked.code, 'NO_ERROR', 'unlock succeeds whatever its observers throw');
  t.same(
    seen.map((s) => s.step),
    ['unlock:target-recorded', 'unlock:key-added', 'unlock:mounted'],
    'every step was reported, each observer call threw',
  );
  t.ok(seen.filter((s) => s.key === 'present').every((s) => s.recorded), 'while the key is in the kernel, the state records the target');
  t.ok(progress.length >= 3, 'progress observers were called (and threw) too');
  t.equal(await keyOf(volume), 'present', 'the key is in while the target is mounted');
  t.ok(await mountedAt(target), 'the target is mounted');

  seen.length = 0;
  const locked = await failure(() => lock(volume, target, hostile));
  t.equal(locked.code, 'NO_ERROR', 'lock succeeds whatever its observers throw');
  t.same(
    seen.map((s) => s.step),
    ['lock:unmounted', 'lock:key-removed', 'lock:recorded'],
  );
  t.ok(seen.filter((s) => s.key === 'present').every((s) => s.recorded), 'while the key is in the kernel, the state records the target');
  t.equal(await keyOf(volume), 'absent', 'the key is out once the target is gone');
  t.notOk(await mountedAt(target));

  // A step observer that throws synchronously.
  const syncThrower: HookOptions = {
    onStep() {
      throw new Error('a step observer that throws synchronously');
    },
  };
  const again = await newTarget();
  t.same(await unlock(volume, protector, { path: again }, syncThrower), { targets: 1 });
  t.same(await lock(volume, again, syncThrower), { locked: true, targets: [] });
  t.equal(await keyOf(volume), 'absent');
});

t.test('a: a state write that fails leaves no key in the kernel and nothing mounted', async (t) => {
  const { slot, protector } = await freshSlot(t);
  const volume = await prepare(slot, protector);
  const file = stateFile(slot);
  const mutable = (): void => {
    try {
      sh('chattr', ['-i', file]);
    } catch {
      // not immutable
    }
  };
  t.teardown(mutable);

  // ext4's immutable flag: every open of the file for writing fails with EPERM.
  sh('chattr', ['+i', file]);
  const admin = await failure(() => adminUnlock(volume, protector));
  t.match(admin, { name: 'FscryptError', code: 'EPERM' }, 'an admin unlock whose record cannot be written fails');
  t.equal(await keyOf(volume), 'absent', 'and leaves no key in the kernel');
  const target = await newTarget();
  const published = await failure(() => unlock(volume, protector, { path: target }));
  t.match(published, { name: 'FscryptError', code: 'EPERM' }, 'so does a publish');
  t.equal(await keyOf(volume), 'absent', 'no key in the kernel');
  t.notOk(existsSync(target), 'nothing mounted, nothing created');
  mutable();

  // The key is in, then the state becomes unwritable and the mount fails:
  // the rollback must take the key out even though it cannot record that.
  const noParent = join(kubelet.mountpoint, 'no-such-pod', 'mount');
  const late = await failure(() =>
    unlock(volume, protector, { path: noParent }, {
      onStep(step) {
        if (step === 'unlock:key-added') sh('chattr', ['+i', file]);
      },
    }),
  );
  t.match(late, { name: 'FscryptError', code: 'ENOENT' }, 'the publish fails');
  t.equal(await keyOf(volume), 'absent', 'the key was taken out again');
  t.notOk(await mountedAt(noParent), 'nothing is mounted');
  mutable();
  t.same((await reconcile(slot, protector)).actions, [`forgot 1 target(s) no longer mounted: ${noParent}`], 'reconcile forgets the target the rollback could not');
  t.match((await slotStatus(slot)).volume, { key: 'absent', targets: [], adminUnlocked: false });
});

t.test('b: a deadline or a cancel ends the wait for a slot another process holds', async (t) => {
  const { slot, protector } = await freshSlot(t);
  const volume = await prepare(slot, protector);
  const child = spawn(process.execPath, [...process.execArgv, new URL('../fixtures/children/slot-lock-child.ts', import.meta.url).pathname, slot], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  t.teardown(() => child.kill('SIGKILL'));
  await new Promise((resolve) => child.stdout.once('data', resolve));

  // A bound far below the lock timeout: only the signal can end the wait this soon.
  const bounded = <T>(promise: Promise<T>): Promise<T | 'still waiting'> =>
    Promise.race([promise, new Promise<'still waiting'>((resolve) => setTimeout(() => resolve('still waiting'), 30_000).unref())]);
  const target = await newTarget();
  const aborted = await bounded(failure(() => unlock(volume, protector, { path: target }, { signal: AbortSignal.timeout(200), lockTimeoutMs: 120_000 })));
  t.match(aborted, { name: 'FscryptError', code: 'ERR_ABORTED', message: /abandoned before it changed anything: its deadline passed/ }, 'the deadline ends the wait');
  const controller = new AbortController();
  setTimeout(() => controller.abort(), 100);
  const cancelled = await bounded(failure(() => erase(volume, { signal: controller.signal, lockTimeoutMs: 120_000 })));
  t.match(cancelled, { code: 'ERR_ABORTED', message: /it was cancelled/ }, 'so does a cancel');
  t.match(await failure(() => reconcile(slot, protector, { signal: AbortSignal.abort() })), { code: 'ERR_ABORTED' }, 'an aborted signal fails at once');
  t.match(await failure(() => prepare(slot, protector, { lockTimeoutMs: 300 })), { code: 'ERR_SLOT_LOCKED', message: new RegExp(`pid ${child.pid} on .* holds`) });
  t.equal(await keyOf(volume), 'absent', 'nothing was unlocked');
  t.notOk(existsSync(target), 'nothing was mounted');
  t.match((await slotStatus(slot)).volume, { name: 'vol-1', phase: 'ready' }, 'nothing was erased');

  child.kill('SIGKILL');
  await new Promise((resolve) => child.once('exit', resolve));
  t.same(await unlock(volume, protector, { path: target }), { targets: 1 }, 'the slot works once the holder is gone');
  await lock(volume, target);
});

t.test('b: the wait is bounded from the call, queued behind this process\'s own hooks too, and a caller that gave up blocks no one', async (t) => {
  const { slot, protector } = await freshSlot(t);
  const volume = await prepare(slot, protector);
  await adminUnlock(volume, protector);
  const held = join(volume.path, 'held');
  await writeFile(held, 'in use');
  const holder = spawn('sh', ['-c', `exec 3<'${held}'; echo ready; exec sleep 60`], { stdio: ['ignore', 'pipe', 'ignore'] });
  t.teardown(() => holder.kill('SIGKILL'));
  await new Promise((resolve) => holder.stdout.once('data', resolve));

  const order: string[] = [];
  /** The call's result or its error, noting the order in which the calls settle. */
  const settle = (name: string, promise: Promise<unknown>): Promise<unknown> =>
    promise.then(
      (value) => (order.push(name), value),
      (error: unknown) => (order.push(name), error),
    );
  const target = await newTarget();
  // first holds the slot for seconds, waiting for the busy file; the others queue behind it, in call order.
  const first = settle('first', adminLock(volume, { busyTimeoutMs: 5_000 }));
  const second = settle('second', adminUnlock(volume, protector, { signal: AbortSignal.timeout(300) }));
  const third = settle('third', unlock(volume, protector, { path: target }, { lockTimeoutMs: 600 }));
  const fourth = settle('fourth', adminUnlock(volume, protector));

  t.match(await second, { code: 'ERR_ABORTED' }, 'the second call gives up when its signal fires');
  t.match(await third, { code: 'ERR_SLOT_LOCKED', message: /an earlier hook of this process is still running/ }, 'the third call times out while still queued');
  t.same(order, ['second', 'third'], 'both while the first call still holds the slot');
  t.match(await first, { code: 'ERR_FILES_BUSY' }, 'the first call fails on the busy file');
  t.match(await fourth, { targets: 0 }, 'the fourth call, queued behind the two that gave up, still gets its turn');
  t.same(order, ['second', 'third', 'first', 'fourth']);
  t.notOk(existsSync(target), 'the call that timed out never ran');

  holder.kill('SIGKILL');
  await new Promise((resolve) => holder.once('exit', resolve));
  t.same(await adminLock(volume), { locked: true, targets: [] });
  t.equal(await keyOf(volume), 'absent');
});

t.test('c: unpublishing a volume that is no longer current still unmounts its target', async (t) => {
  t.test('its slot state was lost and the slot given a new generation while it was published', async (t) => {
    const { slot, source, protector } = await freshSlot(t);
    const old = await prepare(slot, protector);
    const target = await newTarget();
    await unlock(old, protector, { path: target });
    await rm(stateFile(slot));
    await initSlot(slot, source);
    const current = await prepare(slot, protector);
    t.equal(current.name, 'vol-2');

    t.same(await lock(old, target), { locked: true, targets: [] }, 'the old generation is locked');
    t.notOk(await mountedAt(target), 'its target is unmounted');
    t.notOk(existsSync(target), 'and removed');
    t.equal(await keyOf(old), 'absent', 'its key is out of the kernel');
    t.same(await lock(old, target), { locked: true, targets: [] }, 'a second lock of the same target is fine');
    t.match((await slotStatus(slot)).volume, { name: 'vol-2', phase: 'ready', key: 'absent' }, 'the current volume is untouched');
  });

  t.test('it was force-locked and recycled before kubelet unpublished it', async (t) => {
    const { slot, protector } = await freshSlot(t);
    const trash = new TrashCollector();
    const old = await prepare(slot, protector);
    const target = await newTarget();
    await unlock(old, protector, { path: target });
    await adminLock(old, { force: true });
    const { next } = await recycle(old, protector, { trash });
    const nextTarget = await newTarget();
    await unlock(next, protector, { path: nextTarget });

    t.same(await lock(old, target), { locked: true, targets: [] }, "kubelet's unpublish of the old generation succeeds");
    t.same(await lock(old, target), { locked: true, targets: [] }, 'and again');
    t.equal(await keyOf(old), 'absent');
    t.ok(await mountedAt(nextTarget), 'the current volume stays published');
    t.equal(await keyOf(next), 'present', 'with its key');
    // A stale claim naming the current volume's target, or its key, touches neither.
    t.match(await failure(() => lock(old, nextTarget)), { code: 'ERR_FOREIGN_MOUNT' }, "a stale claim cannot unmount the current volume's target");
    t.same(await lock({ ...old, identifier: next.identifier }, await newTarget()), { locked: true, targets: [] });
    t.ok(await mountedAt(nextTarget), 'still published');
    t.equal(await keyOf(next), 'present', 'the current key stays');
    await lock(next, nextTarget);
    await trash.idle();
  });
});

t.test('d: a target inside the slot is refused before anything changes', async (t) => {
  const { slot, protector } = await freshSlot(t);
  const volume = await prepare(slot, protector);
  const link = join(kubelet.mountpoint, 'into-the-slot');
  await symlink(join(slot, '.fscrypt-local'), link);
  const inside = [
    volume.path,
    join(volume.path, 'sub'),
    join(slot, '.fscrypt-local', 'trash', 'x'),
    join(slot, '.fscrypt'),
    slot,
    `${volume.path}/../.fscrypt-local/trash/y`,
    join(link, 'x'),
  ];
  for (const target of inside) {
    t.match(await failure(() => unlock(volume, protector, { path: target })), { code: 'ERR_INVALID_ARG', message: /lies inside the slot/ }, `${target} is refused`);
  }
  t.same(
    (await readMountInfo()).filter((m) => m.mountPoint.startsWith(`${slot}/`)).map((m) => m.mountPoint),
    [],
    'nothing is mounted in the slot',
  );
  t.equal(await keyOf(volume), 'absent', 'no key was added');
  t.same((await readSlotState(slot)).volume?.targets, [], 'no target was recorded');
  t.notOk(existsSync(join(slot, '.fscrypt-local', 'trash', 'x')), 'no target directory was created');
});
