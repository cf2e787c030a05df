// Regressions of what the soak (test/agent/soak.test.ts) found, each with its
// fault injected on its own, so that it fails in seconds rather than once in
// a minute-long run:
//  - an unpublish's umount failed EBUSY while a status read held the target
//    (slotStatus' isBindOf keeps an O_PATH fd on it for a few thread-pool
//    round trips; the agent's census and NodeGetVolumeStats call it any time);
//  - the CSI server printed MaxListenersExceededWarning with more than ten
//    calls in flight (each listens on the server's stop signal);
//  - reconciles failed ERR_MOUNT_TABLE when a mount id named in a table read
//    a moment earlier had been handed to a new mount since;
//  - the CSI service's volume resolver kept every generation it ever
//    resolved (the agent's heap grew with the cycles).
import { execFileSync, spawn } from 'node:child_process';
import { pbkdf2 } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import t from 'tap';
import { OPEN_FLAGS, readMountInfo } from '../../lib/kernel/index.js';
import { VolumeResolver } from '../../lib/agent/csi/volumes.js';
import { prepare, recycle, threadPoolSize } from '../../lib/volume/index.js';
import { bindMount, isBindOf, mountAt, unmount } from '../../lib/volume/mounts/mounts.js';
import { handleOf, kubeletTree, mountCapability, NODE, slotTable, startServer } from '../fixtures/agent/csi.js';
import { failure } from '../fixtures/helpers.js';
import { tmpfs } from '../fixtures/system/scratch-fs.js';
import { freshSlot } from '../fixtures/volume-slot.js';

function boundPair(t: Parameters<typeof tmpfs>[0]): { source: string; target: string } {
  const fs = tmpfs(t);
  const source = join(fs.mountpoint, 'volume');
  const target = join(fs.mountpoint, 'target');
  mkdirSync(source);
  mkdirSync(target);
  return { source, target };
}

t.test('unmount outlasts a passing pin of the target (an O_PATH fd, as a status read holds it)', async (t) => {
  const { source, target } = boundPair(t);
  t.ok(await bindMount(source, target), 'bound');
  // The status read's hold: an O_PATH fd on the target, let go a moment later.
  const pin = await open(target, OPEN_FLAGS.O_PATH);
  const released = new Promise<void>((resolve) => setTimeout(() => void pin.close().then(resolve), 150));
  t.equal(await unmount(target), true, 'the unmount succeeded once the pin was let go');
  await released;
  t.equal(await mountAt(target), undefined, 'nothing is mounted at the target');
});

t.test('a target a process really holds is still EBUSY after the retries, with the holder named', async (t) => {
  const { source, target } = boundPair(t);
  t.ok(await bindMount(source, target), 'bound');
  const holder = spawn('sleep', ['600'], { cwd: target, stdio: 'ignore' });
  const gone = new Promise((resolve) => holder.on('exit', resolve));
  t.teardown(async () => {
    holder.kill('SIGKILL');
    await gone;
    await unmount(target).catch(() => undefined);
  });
  await new Promise((resolve) => holder.on('spawn', resolve));
  const error = await failure(() => unmount(target));
  t.equal(error.code, 'EBUSY', 'EBUSY');
  t.match(error.message, new RegExp(`held by:[\\s\\S]*${holder.pid}`), 'naming the process that holds it');
  t.ok(await mountAt(target), 'and the target is still mounted');
});

t.test('more than ten CSI calls in flight raise no MaxListenersExceededWarning', async (t) => {
  const warnings: Error[] = [];
  const onWarning = (warning: Error): void => void warnings.push(warning);
  process.on('warning', onWarning);
  t.teardown(() => void process.off('warning', onWarning));
  const kubelet = kubeletTree(t);
  mkdirSync(kubelet.pods, { recursive: true });
  const { client } = await startServer(t, { slots: slotTable(), kubeletDir: kubelet.root });
  const targets = await Promise.all(Array.from({ length: 24 }, () => kubelet.newTarget()));
  // Every pool thread busy for a while: each call's first file system lookup (its target's realpath) waits,
  // so all of them are in flight, listening on the stop signal, at once.
  const busy = Array.from({ length: threadPoolSize() }, () => new Promise((resolve) => pbkdf2('x', 'y', 300_000, 64, 'sha512', resolve)));
  const calls = await Promise.all(
    targets.map((target) =>
      failure(() => client.node('NodePublishVolume', { volume_id: 'v1.00000000.0000000000000000.1.0000000000000000', target_path: target, volume_capability: mountCapability() })),
    ),
  );
  await Promise.all(busy);
  t.ok(
    calls.every((c) => c.code === 5),
    'every call was answered (NOT_FOUND: no such slot)',
  );
  t.same(
    warnings.filter((w) => w.name === 'MaxListenersExceededWarning').map((w) => w.message),
    [],
    'no MaxListenersExceededWarning',
  );
});

t.test('a mount table read before a mount id was reused still locates a target (as pods churn)', async (t) => {
  const { source, target } = boundPair(t);
  t.ok(await bindMount(source, target), 'bound');
  const fresh = await readMountInfo();
  const bound = fresh.find((m) => m.mountPoint === target)!;
  // The fault: the table was read while the target's mount id still belonged to another, since unmounted, target.
  const stale = fresh.map((m) => (m.id === bound.id ? { ...m, mountPoint: join(dirname(target), 'gone-pod', 'mount') } : m));
  t.same(await mountAt(target, stale), bound, 'the mount at the target, from a fresh read');
  t.ok(await isBindOf(target, source), 'and it is recognised as the bind mount of the volume');
  t.ok(await unmount(target), 'unmounted');
});

t.test('the CSI service remembers one volume per slot, however many generations it served', async (t) => {
  const { slot, protector } = await freshSlot(t);
  let volume = await prepare(slot, protector);
  const resolver = new VolumeResolver(slotTable({ slot, protector }), NODE);
  const generations = 5;
  for (let i = 0; i < generations; i++) {
    await resolver.resolve(handleOf(volume, protector));
    // The fault: the next tenant, a new generation with a new handle, as every reclaim makes.
    volume = (await recycle(volume, protector)).next;
  }
  await resolver.resolve(handleOf(volume, protector));
  t.equal(resolver.remembered, 1, `one remembered volume after ${generations + 1} generations`);
  // What it remembers the volume for still works: an unpublish of the current generation once the slot's disk is gone.
  execFileSync('umount', ['-l', slot]);
  const { volume: found } = await resolver.resolve(handleOf(volume, protector), { unpublish: true });
  t.equal(found.generation, volume.generation, 'the current generation is still found for an unpublish');
});
