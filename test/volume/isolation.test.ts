// One slot cannot stall another (DESIGN invariant 9): with slot A's
// filesystem frozen (fsfreeze -f: every open for writing, write, rename,
// mkdir... on it blocks until the thaw), a hook on A waits, and meanwhile
// slot B's hooks complete, its status answers, and the event loop stays
// responsive; a second call on A gives up at its deadline. After the thaw,
// A's hook completes as if nothing had happened.
//
// A frozen filesystem must never outlive this file: every test thaws in a
// finally and in a teardown, the process thaws on exit and on SIGINT/SIGTERM
// before the scratch fixture unmounts, and a detached watchdog process thaws
// after WATCHDOG_S even if this process is killed -9 or its event loop is
// blocked (as it was when hooks made synchronous calls: then the watchdog's
// thaw is what lets the test go on, and fail).
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { getKeyStatus } from '../../lib/kernel/index.js';
import { LIBUV_DEFAULT_THREADPOOL_SIZE, lock, prepare, SERVICE_THREADPOOL_SIZE, slotStatus, threadPoolSize, threadPoolWarning, unlock, type Volume } from '../../lib/volume/index.js';
import { checkLoop, freeze, loopWatch, requireFsfreeze, sleep, track, within, type Tracked } from '../fixtures/system/freeze.js';
import { rejection } from '../fixtures/helpers.js';
import { freshSlot, podTargets } from '../fixtures/volume-slot.js';

requireFsfreeze();

const newTarget = podTargets(t);

/** On slot B: prepare, publish, write and read a file, status, lock. */
async function lifecycleOnB(t: Test, b: Awaited<ReturnType<typeof freshSlot>>): Promise<Volume> {
  const volume = await within(prepare(b.slot, b.protector), 'prepare on B');
  const target = await newTarget();
  t.same(await within(unlock(volume, b.protector, { path: target }), 'unlock on B'), { targets: 1 }, 'B: unlocked to a target');
  await within(writeFile(join(target, 'data'), 'tenant B'), 'a write on B');
  t.equal(await within(readFile(join(target, 'data'), 'utf8'), 'a read on B'), 'tenant B', 'B: a file written and read back');
  const status = await within(slotStatus(b.slot), 'slotStatus on B');
  t.same(status.volume?.targets.map((x) => x.path), [target], 'B: status answers');
  t.match(await within(lock(volume, target), 'lock on B'), { locked: true, targets: [] }, 'B: locked');
  t.equal((await getKeyStatus(b.slot, volume.identifier)).status, 'absent', 'B: the key is out');
  return volume;
}


t.test('a hook waiting on a frozen slot stalls neither another slot nor the event loop', { timeout: 90_000 }, async (t) => {
  const a = await freshSlot(t);
  const b = await freshSlot(t);
  const thaw = freeze(t, a.slot);
  let hookOnA: Tracked<Volume>;
  try {
    const watch = await loopWatch();
    // prepare on an empty slot must write: the slot lock's open for writing is its first wait.
    hookOnA = track(prepare(a.slot, a.protector));
    await lifecycleOnB(t, b);
    const stats = watch.stop();
    checkLoop(t, stats);
    t.notOk(hookOnA.settled(), 'the hook on A is still waiting for its disk');
  } finally {
    thaw();
  }
  const volume = await within(hookOnA.promise, 'prepare on A after the thaw');
  t.match(volume, { slot: a.slot, name: 'vol-1', generation: 1 }, 'A: the pending prepare completed after the thaw');
  const status = await within(slotStatus(a.slot), 'slotStatus on A');
  t.match(status.volume, { name: 'vol-1', phase: 'ready' }, 'A: its volume is ready');
  t.equal((await getKeyStatus(a.slot, volume.identifier)).status, 'absent', 'A: and locked');
});

t.test('a second call on a frozen slot gives up at its deadline while another slot works', { timeout: 90_000 }, async (t) => {
  const a = await freshSlot(t);
  const b = await freshSlot(t);
  const volumeA = await prepare(a.slot, a.protector);
  const targetA = await newTarget();
  const thaw = freeze(t, a.slot);
  let hookOnA: Tracked<unknown>;
  try {
    const watch = await loopWatch();
    hookOnA = track(unlock(volumeA, a.protector, { path: targetA }));
    await sleep(100); // the unlock holds A's turn, waiting for its disk
    const started = Date.now();
    const second = lock(volumeA, targetA, { signal: AbortSignal.timeout(300) });
    const [error] = await Promise.all([within(rejection(second), 'the second call on A'), lifecycleOnB(t, b)]);
    t.match(error, { code: 'ERR_ABORTED', message: /abandoned before it changed anything: its deadline passed/ }, 'the second call on A: ERR_ABORTED');
    t.ok(Date.now() - started < 5_000, 'and at its deadline, not at the thaw');
    const stats = watch.stop();
    checkLoop(t, stats);
    t.notOk(hookOnA.settled(), 'the unlock on A is still waiting for its disk');
  } finally {
    thaw();
  }
  t.same(await within(hookOnA.promise, 'unlock on A after the thaw'), { targets: 1 }, 'A: the pending unlock completed after the thaw');
  await writeFile(join(targetA, 'data'), 'tenant A');
  t.equal(await readFile(join(targetA, 'data'), 'utf8'), 'tenant A', 'A: its volume is published and usable');
  t.match(await within(lock(volumeA, targetA), 'lock on A'), { locked: true, targets: [] }, 'A: locked again');
});

t.test('the thread-pool size a service runs with, read as libuv reads UV_THREADPOOL_SIZE', async (t) => {
  t.equal(threadPoolSize({}), LIBUV_DEFAULT_THREADPOOL_SIZE, 'unset: libuv default');
  t.equal(threadPoolSize({ UV_THREADPOOL_SIZE: '64' }), 64);
  t.equal(threadPoolSize({ UV_THREADPOOL_SIZE: ' 12abc' }), 12, 'atoi: leading digits');
  t.equal(threadPoolSize({ UV_THREADPOOL_SIZE: '0' }), 1, '0 becomes 1');
  t.equal(threadPoolSize({ UV_THREADPOOL_SIZE: 'many' }), 1, 'not a number: atoi gives 0, so 1');
  t.equal(threadPoolSize({ UV_THREADPOOL_SIZE: '5000' }), 1024, 'at most 1024');
  t.equal(threadPoolSize({ UV_THREADPOOL_SIZE: '-1' }), 1024, 'a negative value wraps (unsigned)');
  t.equal(threadPoolWarning({ UV_THREADPOOL_SIZE: String(SERVICE_THREADPOOL_SIZE) }), undefined, 'large enough: no warning');
  t.match(threadPoolWarning({}), new RegExp(`4 threads \\(UV_THREADPOOL_SIZE unset\\).*UV_THREADPOOL_SIZE=${SERVICE_THREADPOOL_SIZE}`));
  t.match(threadPoolWarning({ UV_THREADPOOL_SIZE: '8' }), /8 threads \(UV_THREADPOOL_SIZE '8'\)/);
});
