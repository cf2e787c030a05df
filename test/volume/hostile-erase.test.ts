// Hostile tenant trees through the real erase (recycle, then the background
// deletion of the retired generation) on the real kernel: whatever a tenant
// leaves (names in any bytes, FIFOs, sockets, device nodes, symlinks out,
// hard links, chains deeper than PATH_MAX, a mount inside), the erase
// removes exactly the tree, opens none of its special files, and never
// touches what lies outside it.
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, linkSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { addKey, getKeyStatus, removeKey } from '../../lib/kernel/index.js';
import { describeBlockers, lock, prepare, recycle, slotStatus, TrashCollector, unlock, type Volume } from '../../lib/volume/index.js';
import { recordFigure } from '../fixtures/campaign/campaign.js';
import { blockedOnFifo, buildHostileTree, canaryBlockDevice, canaryFacts, countEntries, makeCanary } from '../fixtures/campaign/hostile-tree.js';
import { failure } from '../fixtures/helpers.js';
import { scratchDir } from '../fixtures/system/scratch-fs.js';
import { freshSlot, podTargets } from '../fixtures/volume-slot.js';

const COMMAND = 'npx tap test/volume/hostile-erase.test.ts';
const newTarget = podTargets(t);

/** Fails (rather than hangs) if `promise` has not settled in `ms`: a FIFO opened for reading would block forever. */
async function bounded<T>(what: string, promise: Promise<T>, ms = 120_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const hung = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms: something blocked (a FIFO or device opened?)`)), ms);
  });
  try {
    return await Promise.race([promise, hung]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * True if `pid` is alive (not a zombie) and holds no descriptor of a FIFO:
 * a writer blocked opening one. Its open completes the instant a reader
 * opens the FIFO, so this is never a matter of timing.
 */
function waitingToOpen(pid: number): boolean {
  const state = readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '')[0];
  if (state !== 'S' && state !== 'D') return false;
  return readdirSync(`/proc/${pid}/fd`).every((fd) => !readlinkSync(`/proc/${pid}/fd/${fd}`).includes('fifo'));
}

function umountQuietly(path: string): void {
  try {
    execFileSync('umount', ['-l', path], { stdio: 'ignore' });
  } catch {
    // not mounted
  }
}

t.test('recycle erases a hostile tree completely, opens none of its special files, and touches nothing outside', async (t) => {
  const { slot, protector } = await freshSlot(t, { sizeMiB: 160, mkfsArgs: ['-N', '60000'] });
  const scratch = scratchDir(t);
  const canary = makeCanary(join(scratch, 'canary'));
  const blockDevice = canaryBlockDevice(t, scratch);
  const volume = await prepare(slot, protector);

  // The tenant's view: the published target. It fills its volume as root in a privileged pod could.
  const target = await newTarget();
  await unlock(volume, protector, { path: target });
  buildHostileTree(target, { outside: canary.dir, outsideFile: canary.file, blockDevice: blockDevice.numbers });

  // Hard links out of the volume, on the slot's filesystem. Into the volume, the
  // kernel refuses an unencrypted file (so no tenant can pin an outside inode
  // that way); out of it, only someone with the slot root (not a tenant) can
  // link a volume file, and then the erase must only drop the name inside.
  const outsideLinks = join(slot, 'outside-links');
  mkdirSync(outsideLinks);
  writeFileSync(join(outsideLinks, 'plain'), 'unencrypted, outside');
  t.throws(() => linkSync(join(outsideLinks, 'plain'), join(volume.path, 'plain-link')), { code: 'EXDEV' }, 'an outside file cannot be linked into the volume');
  writeFileSync(join(volume.path, 'shared'), 'a volume file also linked from outside');
  linkSync(join(volume.path, 'shared'), join(outsideLinks, 'shared'));
  const sharedBefore = lstatSync(join(outsideLinks, 'shared'));
  const key = await protector.unwrapPolicyKey(volume.identifier);
  t.teardown(() => key.fill(0));

  const entries = countEntries(volume.path);
  const canaryBefore = canaryFacts(canary.dir);
  const plainBefore = canaryFacts(join(outsideLinks, 'plain'));
  const deviceBefore = blockDevice.sha256();
  await lock(volume, target);

  const collector = new TrashCollector();
  const result = await bounded('recycle', recycle(volume, protector, { trash: collector }));
  await bounded('the background deletion', collector.idle());

  const status = collector.status();
  t.same(status.failures, [], 'the deletion did not fail');
  t.same(status.skippedMounts, []);
  t.same(status.removed, { trees: 1, files: status.removed.files, dirs: status.removed.dirs });
  t.equal(status.removed.files + status.removed.dirs, entries + 1, `every one of the ${entries} entries and the root was removed`);
  t.same(readdirSync(join(slot, '.fscrypt-local', 'trash')), [], 'the trash is empty');
  t.notOk(existsSync(volume.path), 'the old generation is gone');
  t.equal(result.next.name, 'vol-2');
  t.same(readdirSync(result.next.path), [], 'the next tenant starts from nothing');

  t.same(canaryFacts(canary.dir), canaryBefore, 'the symlink targets outside: content, times, links, inode numbers intact');
  t.same(canaryFacts(join(outsideLinks, 'plain')), plainBefore);
  t.equal(blockDevice.sha256(), deviceBefore, 'the block device behind a device node was never written');
  const shared = lstatSync(join(outsideLinks, 'shared'));
  t.same(
    { ino: shared.ino, size: shared.size, mtimeMs: shared.mtimeMs, nlink: shared.nlink },
    { ino: sharedBefore.ino, size: sharedBefore.size, mtimeMs: sharedBefore.mtimeMs, nlink: sharedBefore.nlink - 1 },
    'the hard-linked inode outside lost only its name inside: not truncated, not rewritten',
  );
  // The erased key is gone from the slot; the copy this test kept proves the outside inode's bytes are intact.
  t.equal((await getKeyStatus(slot, volume.identifier)).status, 'absent');
  await addKey(slot, key);
  try {
    t.equal(readFileSync(join(outsideLinks, 'shared'), 'utf8'), 'a volume file also linked from outside', 'its content decrypts as written');
  } finally {
    await removeKey(slot, volume.identifier, { allUsers: true });
  }
  recordFigure({ area: 'hostile fs', name: 'erase of a hostile tree (odd names, FIFO, socket, devices, links, 5,000 deep, > PATH_MAX): entries removed', value: entries, command: COMMAND });
});

t.test('a mount inside a volume: the erase refuses and names it, the mounted files survive, and it completes once unmounted', async (t) => {
  const { slot, protector } = await freshSlot(t);
  const kubelet = scratchDir(t);
  const volume: Volume = await prepare(slot, protector);
  const target = await newTarget();
  await unlock(volume, protector, { path: target });
  writeFileSync(join(target, 'data'), 'tenant data');
  mkdirSync(join(target, 'mnt'));
  mkdirSync(join(target, 'sub', 'path'), { recursive: true });
  writeFileSync(join(target, 'sub', 'path', 'file'), 'seen through a subPath');

  // Left behind at release: a filesystem mounted under the volume directory
  // (a tenant's mount propagated to the host), and a kubelet subPath-like
  // bind mount of a directory inside it that was never cleaned up.
  const mounted = join(volume.path, 'mnt');
  const subPath = join(kubelet, 'volume-subpaths', 'pvc', 'container', '0');
  mkdirSync(subPath, { recursive: true });
  execFileSync('mount', ['-t', 'tmpfs', 'tenant-tmpfs', mounted]);
  writeFileSync(join(mounted, 'on-tmpfs'), 'not the volume');
  execFileSync('mount', ['--bind', join(volume.path, 'sub', 'path'), subPath]);
  t.teardown(() => {
    umountQuietly(subPath);
    umountQuietly(mounted);
  });

  const locked = await failure(() => lock(volume, target, { busyTimeoutMs: 100 }));
  t.match(locked, { code: 'ERR_FILES_BUSY' }, 'the unpublish cannot take the key out: the mounts pin the directory');
  const status = await slotStatus(slot);
  t.match(status.volume, { key: 'incompletely-removed', pendingLock: { blockers: [] } });
  const held = status.volume!.pendingLock!.blockers;
  t.match(held, [
    { kind: 'mount', path: subPath, source: '/vol-1/sub/path' },
    { kind: 'mount-point', path: mounted, source: 'tenant-tmpfs' },
  ]);
  t.equal(held.length, 2, 'the status names both mounts, and nothing else');

  const collector = new TrashCollector();
  const refused = await failure(() => recycle(volume, protector, { trash: collector, busyTimeoutMs: 100 }));
  t.match(refused, { code: 'ERR_FILES_BUSY' });
  t.match(refused.message, `tenant-tmpfs is mounted on ${mounted}`, 'the erase names the mount inside');
  t.match(refused.message, `the mount at ${subPath} has its source inside (/vol-1/sub/path on the filesystem)`, 'and the bind mount from inside');
  t.equal(readFileSync(join(mounted, 'on-tmpfs'), 'utf8'), 'not the volume', 'the mounted filesystem was not touched');
  t.ok(lstatSync(join(subPath, 'file')).isFile(), 'nor the files behind the bind mount');
  t.match((await slotStatus(slot)).volume, { name: 'vol-1', phase: 'ready' }, 'the volume is still the current one: nothing was erased');
  t.equal(collector.status().removed.trees, 0, 'nothing was queued for deletion');

  execFileSync('umount', [subPath]);
  execFileSync('umount', [mounted]);
  const erased = await recycle(volume, protector, { trash: collector });
  await collector.idle();
  t.equal(erased.erased, 'vol-1');
  t.match(collector.status(), { failures: [], skippedMounts: [], removed: { trees: 1 } });
  t.notOk(existsSync(volume.path));
  t.same(describeBlockers(held).split('\n').length, 2, 'one line per mount');
});

t.test('a mount placed in a retired tree before its deletion is neither crossed nor removed, and the collector reports it', async (t) => {
  const { slot } = await freshSlot(t);
  const scratch = scratchDir(t);
  const canary = makeCanary(join(scratch, 'canary'));
  const before = canaryFacts(canary.dir);
  const tree = join(slot, '.fscrypt-local', 'trash', 'vol-9');
  mkdirSync(join(tree, 'a', 'b'), { recursive: true });
  writeFileSync(join(tree, 'a', 'f'), 'x');
  execFileSync('mount', ['--bind', canary.dir, join(tree, 'a', 'b')]);
  t.teardown(() => umountQuietly(join(tree, 'a', 'b')));

  const collector = new TrashCollector();
  t.same(await collector.resume(join(slot, '.fscrypt-local', 'trash')), [tree]);
  await bounded('the background deletion', collector.idle());
  t.match(collector.status(), { failures: [], skippedMounts: [join(tree, 'a', 'b')], removed: { trees: 1, files: 1, dirs: 0 } });
  t.same(canaryFacts(canary.dir), before, 'the bind-mounted directory was not crossed');
  t.same(readdirSync(join(tree, 'a')), ['b'], 'only the way to the mount is left');

  execFileSync('umount', [join(tree, 'a', 'b')]);
  const second = new TrashCollector();
  await second.resume(join(slot, '.fscrypt-local', 'trash'));
  await second.idle();
  t.match(second.status(), { failures: [], skippedMounts: [], removed: { trees: 1, dirs: 3 } });
  t.same(canaryFacts(canary.dir), before);
});

t.test('a FIFO with a writer waiting for a reader: the erase neither hangs nor opens it', async (t) => {
  // Outside a volume's encryption (a waiting writer pins the inode, which
  // would keep a volume's key busy): the tree remover itself, on the slot's
  // filesystem. The writer is released only if someone opens the FIFO to read.
  const { slot } = await freshSlot(t);
  const tree = join(slot, '.fscrypt-local', 'trash', 'vol-5');
  mkdirSync(join(tree, 'pipes'), { recursive: true });
  const fifos = ['fifo', 'new\nline-fifo', '-fifo'].map((name) => join(tree, 'pipes', name));
  const writers = fifos.map((fifo) => {
    execFileSync('mkfifo', [fifo]);
    const writer = spawn('sh', ['-c', 'echo data > "$1" && echo opened', 'sh', fifo], { stdio: ['ignore', 'pipe', 'inherit'] });
    let output = '';
    writer.stdout.on('data', (chunk) => (output += String(chunk)));
    t.teardown(async () => {
      if (writer.exitCode === null && writer.signalCode === null) {
        writer.kill('SIGKILL');
        await once(writer, 'exit');
      }
    });
    return { writer, output: () => output };
  });
  for (const { writer } of writers) t.ok(await blockedOnFifo(writer.pid!), `writer ${writer.pid} waits for a reader`);
  const collector = new TrashCollector();
  await collector.resume(join(slot, '.fscrypt-local', 'trash'));
  await bounded('the background deletion', collector.idle());
  t.match(collector.status(), { failures: [], removed: { trees: 1, files: 3, dirs: 2 } });
  t.notOk(existsSync(tree));
  for (const { writer, output } of writers) {
    t.ok(waitingToOpen(writer.pid!), `writer ${writer.pid} still waits in open(): nobody opened its FIFO for reading`);
    t.equal(output(), '');
  }
});

t.test('names that are not UTF-8, in a tree the key does not hide (plaintext names): removed, not rescanned forever', async (t) => {
  // Regression: names were read as UTF-8, so an invalid byte came back as
  // U+FFFD, unlink answered ENOENT for a name that was still there, and the
  // walk rescanned the directory forever (stalling the one collector every
  // slot's deletions queue behind).
  const { slot } = await freshSlot(t, { mkfsArgs: ['-N', '40000'] });
  const scratch = scratchDir(t);
  const canary = makeCanary(join(scratch, 'canary'));
  const tree = join(slot, '.fscrypt-local', 'trash', 'vol-3');
  mkdirSync(tree);
  buildHostileTree(tree, { outside: canary.dir, outsideFile: canary.file, depth: 300, wide: 100 });
  const before = canaryFacts(canary.dir);
  const entries = countEntries(tree);
  const collector = new TrashCollector();
  await collector.resume(join(slot, '.fscrypt-local', 'trash'));
  await bounded('the background deletion', collector.idle(), 60_000);
  t.same(collector.status().failures, []);
  t.equal(collector.status().removed.files + collector.status().removed.dirs, entries + 1, `all ${entries} entries and the root removed`);
  t.notOk(existsSync(tree));
  t.same(canaryFacts(canary.dir), before);
  recordFigure({ area: 'hostile fs', name: 'trash deletion of a plaintext hostile tree (names not UTF-8, > PATH_MAX): entries removed', value: entries, command: COMMAND });
});
