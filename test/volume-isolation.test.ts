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
import { execFileSync, spawn } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import t, { type Test } from 'tap';
import { getKeyStatus } from '../lib/kernel/index.js';
import { LIBUV_DEFAULT_THREADPOOL_SIZE, lock, prepare, SERVICE_THREADPOOL_SIZE, slotStatus, threadPoolSize, threadPoolWarning, unlock, type Volume } from '../lib/volume/index.js';
import { tmpfs } from './fixtures/scratch-fs.js';
import { rejection } from './fixtures/helpers.js';
import { freshSlot } from './fixtures/volume-slot.js';

// How long any awaited call may take before the test fails instead of waiting (liveness, not timing).
const CALL_LIMIT_MS = 20_000;
// The event loop's longest stall allowed while A is frozen: generous, a liveness bound.
const MAX_LOOP_DELAY_MS = 1_000;
// The watchdog thaws this long after a freeze, whatever happens to this process.
const WATCHDOG_S = 15;

try {
  execFileSync('fsfreeze', ['--help'], { stdio: 'ignore' });
} catch {
  throw new Error('this test needs fsfreeze (util-linux). To fix: apt-get install util-linux');
}

const kubelet = tmpfs(t);
let targets = 0;
async function newTarget(): Promise<string> {
  const pod = join(kubelet.mountpoint, `pod-${targets++}`);
  await mkdir(pod);
  return join(pod, 'mount');
}

/** Rejects with a clear message unless `promise` settles within `ms`. */
function within<T>(promise: Promise<T>, what: string, ms = CALL_LIMIT_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
  });
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const frozen = new Set<string>();

function thawSync(mountpoint: string): void {
  if (!frozen.delete(mountpoint)) return;
  try {
    execFileSync('fsfreeze', ['-u', mountpoint], { stdio: 'ignore', timeout: 10_000 });
  } catch {
    // Not frozen any more (the watchdog thawed it).
  }
}

function thawAll(): void {
  for (const mountpoint of [...frozen]) thawSync(mountpoint);
}

// Before the scratch fixture's own handlers, which unmount: a frozen
// filesystem must be thawed first.
process.prependListener('exit', thawAll);
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.prependListener(signal, thawAll);

/** Freezes a scratch filesystem; the returned function thaws it (idempotent), as the teardown does. */
function freeze(t: Test, mountpoint: string): () => void {
  // Detached, so that it outlives this process: thaws after WATCHDOG_S, then exits.
  const watchdog = spawn('sh', ['-c', `sleep ${WATCHDOG_S}; exec fsfreeze -u "$0" 2>/dev/null`, mountpoint], { detached: true, stdio: 'ignore' });
  watchdog.unref();
  execFileSync('fsfreeze', ['-f', mountpoint], { timeout: 10_000 });
  frozen.add(mountpoint);
  const thaw = (): void => {
    thawSync(mountpoint);
    try {
      process.kill(-watchdog.pid!, 'SIGKILL');
    } catch {
      // already gone
    }
  };
  t.teardown(thaw);
  return thaw;
}

/** Watches the event loop: its longest stall, and a timer that must keep ticking. */
async function loopWatch() {
  const delay = monitorEventLoopDelay({ resolution: 10 });
  delay.enable();
  // The histogram records a stall only once its timer has fired before it:
  // a stall right after enable() would go unseen.
  await sleep(50);
  let ticks = 0;
  const interval = setInterval(() => ticks++, 20);
  const started = Date.now();
  return {
    stop() {
      delay.disable();
      clearInterval(interval);
      return { maxDelayMs: delay.max / 1e6, ticks, elapsedMs: Date.now() - started };
    },
  };
}

interface Tracked<T> {
  promise: Promise<T>;
  settled(): boolean;
}

/** Tracks whether a promise has settled, without awaiting it (and without an unhandled rejection). */
function track<T>(promise: Promise<T>): Tracked<T> {
  let settled = false;
  promise.then(
    () => (settled = true),
    () => (settled = true),
  );
  return { promise, settled: () => settled };
}

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

function checkLoop(t: Test, watch: { maxDelayMs: number; ticks: number; elapsedMs: number }): void {
  t.ok(watch.maxDelayMs < MAX_LOOP_DELAY_MS, `the event loop never stalled for ${MAX_LOOP_DELAY_MS} ms while A was frozen (longest: ${Math.round(watch.maxDelayMs)} ms)`);
  // A 20 ms interval over the whole section: at least a quarter of its ticks (liveness, not timing).
  t.ok(watch.ticks >= Math.floor(watch.elapsedMs / 20 / 4), `a timer kept ticking (${watch.ticks} ticks in ${watch.elapsedMs} ms)`);
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
