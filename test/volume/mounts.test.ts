// Bind mounts on the real kernel, checked against /proc/self/mountinfo:
// bind, read-only bind, idempotent unmount, busy targets, stacked mounts,
// odd names, and directories that a path comparison would confuse.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { readMountInfo } from '../../lib/kernel/index.js';
import { bindMount, isBindOf, mountAt, unmount } from '../../lib/volume/mounts/mounts.js';
import { rejection } from '../fixtures/helpers.js';
import { ext4 } from '../fixtures/system/scratch-fs.js';

const fs = ext4(t);
const slot = fs.mountpoint;
const device = execFileSync('findmnt', ['-no', 'MAJ:MIN', '--mountpoint', slot], { encoding: 'utf8' }).trim();

// vol-1 and vol-10: a string-prefix comparison would confuse them.
const vol = join(slot, 'vol-1');
const sibling = join(slot, 'vol-10');
mkdirSync(vol);
mkdirSync(sibling);
writeFileSync(join(vol, 'data'), 'vol-1 data');

let targets = 0;
/** A fresh, empty target directory, unmounted (all layers) when the test ends. */
function newTarget(t: { teardown(fn: () => void): void }, name = `target-${++targets}`): string {
  const target = join(slot, 'targets', name);
  mkdirSync(target, { recursive: true });
  t.teardown(() => {
    for (let i = 0; i < 4; i++) {
      try {
        execFileSync('umount', [target], { stdio: 'ignore' });
      } catch {
        return;
      }
    }
  });
  return target;
}

async function mountsAt(path: string): Promise<number> {
  return (await readMountInfo()).filter((m) => m.mountPoint === path).length;
}

t.test('a bind mount is found exactly at its target and recognised as a bind of its source', async (t) => {
  const target = newTarget(t);
  t.equal(await mountAt(target), undefined, 'nothing mounted yet');
  t.notOk(await isBindOf(target, vol));

  t.equal(await bindMount(vol, target), true);
  t.match(await mountAt(target), { mountPoint: target, device, root: '/vol-1', fsType: 'ext4' });
  t.equal(await isBindOf(target, vol), true);
  t.equal(await isBindOf(target, vol, { readonly: false }), true);
  t.equal(await isBindOf(target, vol, { readonly: true }), false, 'it is not read-only');
  t.equal(await isBindOf(target, sibling), false, 'vol-10 is another directory of the same filesystem');
  t.equal(await isBindOf(target, slot), false, 'nor is the filesystem root');
  t.equal(await isBindOf(target, join(slot, 'missing')), false);
  t.equal(await isBindOf(sibling, vol), false, 'a directory that is not a mount point');
  t.equal(await mountAt(join(target, 'data')), undefined, 'below a mount point is not a mount point');

  await writeFile(join(target, 'written-through-target'), 'hello');
  t.equal(readFileSync(join(vol, 'written-through-target'), 'utf8'), 'hello', 'writes go to the source');

  t.equal(await bindMount(vol, target), false, 'binding again is a no-op');
  t.equal(await mountsAt(target), 1, 'nothing was stacked');
  const other = await rejection(bindMount(sibling, target));
  t.match(other, { code: 'ERR_FOREIGN_MOUNT', path: target });
  t.match(other.message, /already has a mount/);

  t.equal(await unmount(target), true);
  t.equal(await mountAt(target), undefined);
  t.equal(await unmount(target), false, 'unmounting again is fine');
  t.equal(await unmount(join(slot, 'no-such-target')), false, 'so is a target that does not exist');
  t.notOk(await isBindOf(target, vol));
});

t.test('a read-only bind mount is really read-only, and its source stays writable', async (t) => {
  const target = newTarget(t);
  t.equal(await bindMount(vol, target, { readonly: true }), true);
  const mount = await mountAt(target);
  t.ok(mount?.options.includes('ro'), `per-mount options: ${mount?.options.join(',')}`);
  t.equal(await isBindOf(target, vol, { readonly: true }), true);
  t.equal(await isBindOf(target, vol, { readonly: false }), false);
  t.match(await rejection(writeFile(join(target, 'nope'), 'x')), { code: 'EROFS' });
  t.match(await rejection(writeFile(join(target, 'data'), 'overwrite')), { code: 'EROFS' });
  await writeFile(join(vol, 'still-writable'), 'yes');
  t.equal(readFileSync(join(target, 'still-writable'), 'utf8'), 'yes');
  t.equal(await bindMount(vol, target, { readonly: false }).catch((e: Error) => e.message), `'${target}' already has a mount (${fs.device} /vol-1, ro); unmount it before binding '${vol}' there`);
  t.equal(await unmount(target), true);
});

t.test('the source is compared as a directory of its filesystem, wherever that filesystem is mounted', async (t) => {
  // The filesystem is also visible at `alt`, showing its subdirectory /deep.
  mkdirSync(join(slot, 'deep', 'inner'), { recursive: true });
  mkdirSync(join(slot, 'inner'), { recursive: true });
  const alt = newTarget(t, 'alt');
  execFileSync('mount', ['--bind', join(slot, 'deep'), alt]);
  const target = newTarget(t);

  t.equal(await bindMount(join(alt, 'inner'), target), true);
  t.match(await mountAt(target), { root: '/deep/inner', device });
  t.equal(await isBindOf(target, join(alt, 'inner')), true);
  t.equal(await isBindOf(target, join(slot, 'deep', 'inner')), true, 'the same directory through the other mount');
  t.equal(await isBindOf(target, join(slot, 'inner')), false, '/inner is not /deep/inner, though both are "inner" below a mount point');
  t.equal(await isBindOf(target, alt), false);
  t.equal(await unmount(target), true);
  t.equal(await unmount(alt), true);
});

t.test('stacked mounts: mountAt is the top one, unmount removes only it', async (t) => {
  const target = newTarget(t);
  await bindMount(vol, target);
  execFileSync('mount', ['--bind', sibling, target]);
  t.equal(await mountsAt(target), 2);
  t.match(await mountAt(target), { root: '/vol-10' });
  t.equal(await isBindOf(target, sibling), true);
  t.equal(await isBindOf(target, vol), false, 'the hidden mount below does not count');
  t.equal(await unmount(target), true);
  t.equal(await isBindOf(target, vol), true, 'the one below is visible again');
  t.equal(await unmount(target), true);
  t.equal(await mountsAt(target), 0);
});

t.test('names with spaces, tabs, newlines and backslashes (octal-escaped in mountinfo)', async (t) => {
  const source = join(slot, 'src with space\tand\\backslash\nnewline');
  mkdirSync(source);
  writeFileSync(join(source, 'f'), 'odd');
  const target = newTarget(t, 'target with space\tand\\backslash\nnewline');
  t.equal(await bindMount(source, target, { readonly: true }), true);
  t.match(await mountAt(target), { mountPoint: target, root: '/src with space\tand\\backslash\nnewline' });
  t.equal(await isBindOf(target, source, { readonly: true }), true);
  t.equal(readFileSync(join(target, 'f'), 'utf8'), 'odd');
  t.equal(await unmount(target), true);
  t.equal(await unmount(target), false);
});

t.test('a busy target is an EBUSY error naming what holds it', async (t) => {
  const target = newTarget(t);
  await bindMount(vol, target);
  const handle = await open(join(target, 'data'), 'r');
  try {
    const busy = await rejection(unmount(target));
    t.match(busy, { name: 'FscryptError', code: 'EBUSY', path: target });
    t.match(busy.message, `pid ${process.pid} (node) has ${join(target, 'data')} open`);
    t.ok(await isBindOf(target, vol), 'still mounted');
  } finally {
    await handle.close();
  }
  t.equal(await unmount(target), true);
});

t.test('busy for a moment only because of this process (a concurrent status holds the target): the unmount waits it out', async (t) => {
  const target = newTarget(t);
  await bindMount(vol, target);
  const handle = await open(join(target, 'data'), 'r');
  const unmounted = unmount(target);
  // Released while the unmount is retrying: the umount(8) run alone takes longer than this.
  setTimeout(() => void handle.close(), 50);
  t.equal(await unmounted, true, 'unmounted once the moment passed');
  t.equal(await mountsAt(target), 0, 'nothing left at the target');
});

t.test('symlinks in a target path are resolved as mount(2) resolves them', async (t) => {
  const target = newTarget(t);
  const link = join(slot, 'targets', 'link-to-target');
  symlinkSync(target, link);
  t.equal(await bindMount(vol, link), true);
  t.match(await mountAt(target), { root: '/vol-1' }, 'mounted on the real directory');
  t.equal(await isBindOf(link, vol), true);
  t.equal(await unmount(link), true);
  t.equal(await mountAt(target), undefined);
});

t.test('bad arguments', async (t) => {
  const target = newTarget(t);
  t.match(await rejection(bindMount(join(slot, 'missing'), target)), { code: 'ENOENT', path: join(slot, 'missing') });
  t.match(await rejection(bindMount(vol, join(slot, 'missing-target'))), { code: 'ENOENT', message: /create it first/ });
  t.match(await rejection(bindMount('relative', target)), { code: 'ERR_INVALID_ARG' });
  t.match(await rejection(unmount('relative')), { code: 'ERR_INVALID_ARG' });
  t.match(await rejection(mountAt('relative')), { code: 'ERR_INVALID_ARG' });
  t.equal(await mountAt(join(slot, 'missing')), undefined);
  t.equal(await mountAt(join(vol, 'data', 'below-a-file')), undefined);
});
