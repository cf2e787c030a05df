// removeTree and TrashCollector on the real kernel: whatever a tenant left in
// a retired generation (symlinks and hard links out of the slot, swapped
// directories, odd names, mounts, very deep or very large trees, a locked
// encrypted tree), deletion stays inside the tree, and it resumes after an abort.
import { execFileSync } from 'node:child_process';
import {
  closeSync,
  constants,
  linkSync,
  openSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { addKey, defaultPolicy, getKeyStatus, removeKey, setPolicy } from '../../lib/kernel/index.js';
import { removeTree, type RemoveProgress } from '../../lib/volume/trash/tree-remover.js';
import { TrashCollector } from '../../lib/volume/trash/tree-remover-trash.js';
import { randomKey, rejection } from '../fixtures/helpers.js';
import { ext4 } from '../fixtures/system/scratch-fs.js';

// Room for the 100k-file tree next to everything else.
const fs = ext4(t, { sizeMiB: 512, mkfsArgs: ['-N', '200000'] });
const slot = fs.mountpoint;
const trash = join(slot, '.trash');
mkdirSync(trash);

/** Every entry below `dir` with its type and content (files) or target (symlinks), without following anything. */
function snapshot(dir: string): string[] {
  const out: string[] = [];
  const walk = (path: string, rel: string): void => {
    for (const name of readdirSync(path).sort()) {
      const full = join(path, name);
      const relName = `${rel}/${name}`;
      const st = lstatSync(full);
      if (st.isDirectory()) {
        out.push(`d ${relName}`);
        walk(full, relName);
      } else if (st.isSymbolicLink()) {
        out.push(`l ${relName} -> ${readlinkSync(full)}`);
      } else if (st.isFile()) {
        out.push(`f ${relName} ${readFileSync(full, 'utf8')}`);
      } else {
        out.push(`o ${relName}`);
      }
    }
  };
  walk(dir, '');
  return out;
}

/** A directory outside every tree, with content a wrong deletion would destroy. */
function outsideDir(name: string): { dir: string; file: string; before: string[] } {
  const dir = join(slot, 'outside', name);
  mkdirSync(join(dir, 'sub'), { recursive: true });
  writeFileSync(join(dir, 'precious'), `precious ${name}`);
  writeFileSync(join(dir, 'sub', 'nested'), `nested ${name}`);
  return { dir, file: join(dir, 'precious'), before: snapshot(dir) };
}

/** How many names are below `dir` (find's count, which does not mind newlines in names). */
function countEntries(dir: string): number {
  return execFileSync('find', [dir, '-mindepth', '1', '-printf', 'x'], { encoding: 'utf8' }).length;
}

/** `depth` nested directories `d`, each with a file `f`: deeper than one path may be, so built in steps through /proc/self/fd. */
function makeChain(root: string, depth: number): void {
  const step = 500;
  let base = openSync(root, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    for (let made = 0; made < depth; made += step) {
      const levels = Math.min(step, depth - made);
      let rel = '';
      for (let i = 0; i < levels; i++) {
        rel += 'd/';
        mkdirSync(`/proc/self/fd/${base}/${rel}`);
        writeFileSync(`/proc/self/fd/${base}/${rel}f`, '');
      }
      const next = openSync(`/proc/self/fd/${base}/${rel}`, constants.O_RDONLY | constants.O_DIRECTORY);
      closeSync(base);
      base = next;
    }
  } finally {
    closeSync(base);
  }
}

/** umount that does not mind what is already unmounted. */
function umountQuietly(path: string): void {
  try {
    execFileSync('umount', ['-l', path], { stdio: 'ignore' });
  } catch {
    /* not mounted */
  }
}

function openFds(): number {
  return readdirSync('/proc/self/fd').length;
}

function exists(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

t.test('symlinks and hard links out of the tree are unlinked, never followed; odd names are removed', async (t) => {
  const out = outsideDir('links');
  const tree = join(trash, 'links');
  mkdirSync(join(tree, 'a', 'b'), { recursive: true });
  symlinkSync(out.dir, join(tree, 'abs-dir-link'));
  symlinkSync('../../outside/links', join(tree, 'a', 'rel-dir-link'));
  symlinkSync(out.file, join(tree, 'a', 'b', 'file-link'));
  symlinkSync('/nonexistent/target', join(tree, 'dangling'));
  linkSync(out.file, join(tree, 'a', 'hard-link'));
  const odd = ['new\nline', 'back\\slash', ' spaces  around ', '-dash', 'tab\there', 'ü-ñ-😀', 'x'.repeat(255), '\\012', '..a', '.hidden'];
  for (const name of odd) writeFileSync(join(tree, 'a', name), name);
  mkdirSync(join(tree, 'dir with\nnewline'));
  writeFileSync(join(tree, 'dir with\nnewline', 'f'), 'x');
  execFileSync('mkfifo', [join(tree, 'a', 'fifo')]);
  mkdirSync(join(tree, 'locked-down'), { mode: 0o000 });
  writeFileSync(join(tree, 'locked-down', 'f'), 'x', { mode: 0o000 });
  const entries = countEntries(tree);

  const result = await removeTree(tree);

  t.notOk(exists(tree), 'the tree is gone');
  t.same(snapshot(out.dir), out.before, 'everything outside survived, content included');
  t.equal(readFileSync(out.file, 'utf8'), 'precious links', 'the hard-linked file outside keeps its content');
  t.equal(lstatSync(out.file).nlink, 1, 'only the link inside the tree was removed');
  t.same(result.skippedMounts, []);
  t.equal(result.files + result.dirs, entries + 1, 'every entry and the root are counted');
});

t.test('a directory swapped for a symlink to outside during the walk is unlinked, not followed', async (t) => {
  const victim = outsideDir('victim');
  const tree = join(trash, 'swapped');
  const names = Array.from({ length: 8 }, (_, i) => `d${i}`);
  for (const name of names) {
    mkdirSync(join(tree, name, 'inner'), { recursive: true });
    for (let i = 0; i < 20; i++) writeFileSync(join(tree, name, 'inner', `f${i}`), `${name} ${i}`);
  }
  const heldAside = join(slot, 'outside', 'held-aside');
  mkdirSync(heldAside);
  let swapped: string[] = [];
  const asideBefore = new Map<string, string[]>();

  const result = await removeTree(tree, {
    onProgress(p) {
      // Right after the first directory is removed: every d<i> still there
      // (unvisited, or the one being walked) is moved out of the tree and
      // replaced by a symlink to the victim.
      if (p.dirs !== 1 || swapped.length > 0) return;
      swapped = readdirSync(tree);
      for (const name of swapped) {
        renameSync(join(tree, name), join(heldAside, name));
        symlinkSync(victim.dir, join(tree, name));
        asideBefore.set(name, snapshot(join(heldAside, name)));
      }
    },
  });

  t.ok(swapped.length >= 7, `swapped ${swapped.length} directories mid-walk`);
  t.notOk(exists(tree), 'the tree is gone');
  t.same(snapshot(victim.dir), victim.before, 'the symlink target outside is intact');
  for (const [name, before] of asideBefore) {
    t.same(snapshot(join(heldAside, name)), before, `${name}, moved out of the tree mid-walk, was not touched afterwards`);
  }
  t.same(result.skippedMounts, []);
});

t.test('a directory moved out of the tree under the walk: its new parent is never taken for the old one', async (t) => {
  const tree = join(trash, 'moved');
  mkdirSync(join(tree, 'top', 'mid', 'leaf'), { recursive: true });
  for (let i = 0; i < 5; i++) writeFileSync(join(tree, 'top', 'mid', 'leaf', `f${i}`), 'x');
  for (const name of ['other1', 'other2', 'other3']) {
    mkdirSync(join(tree, 'top', name));
    writeFileSync(join(tree, 'top', name, 'f'), 'x');
  }
  // Where `mid` goes: it holds decoys named like top's other children.
  const decoys = join(slot, 'outside', 'decoys');
  for (const name of ['other1', 'other2', 'other3']) {
    mkdirSync(join(decoys, name), { recursive: true });
    writeFileSync(join(decoys, name, 'precious'), `decoy ${name}`);
  }
  let moved = false;
  const result = await removeTree(tree, {
    onProgress() {
      // Right after `leaf` is removed, the walk stands in `mid`: move `mid` away.
      if (moved || exists(join(tree, 'top', 'mid', 'leaf')) || !exists(join(tree, 'top', 'mid'))) return;
      renameSync(join(tree, 'top', 'mid'), join(decoys, 'mid'));
      moved = true;
    },
  });
  t.ok(moved, 'mid was moved while the walk was inside it');
  t.notOk(exists(tree), 'the rest of the tree is gone');
  t.ok(exists(join(decoys, 'mid')), 'the moved directory was not removed from its new parent');
  for (const name of ['other1', 'other2', 'other3']) {
    t.equal(readFileSync(join(decoys, name, 'precious'), 'utf8'), `decoy ${name}`, `decoy ${name} intact`);
  }
  t.same(result.skippedMounts, []);
});

t.test('a chain 6,000 directories deep is removed with a bounded number of open descriptors', async (t) => {
  const tree = join(trash, 'deep');
  const depth = 6000;
  mkdirSync(tree);
  makeChain(tree, depth);
  const before = openFds();
  let maxFds = 0;
  const result = await removeTree(tree, {
    onProgress() {
      maxFds = Math.max(maxFds, openFds());
    },
  });
  t.notOk(exists(tree));
  t.same(result, { files: depth, dirs: depth + 1, skippedMounts: [] });
  t.ok(maxFds > 0 && maxFds - before <= 8, `at most 8 more descriptors open while walking (saw ${maxFds - before})`);
  t.equal(openFds(), before, 'no descriptor leaked');
});

t.test('100,000 files are removed in the background while another directory of the slot stays usable', async (t) => {
  const tree = join(trash, 'big');
  mkdirSync(tree);
  const started = Date.now();
  execFileSync('sh', ['-c', 'cd "$1" && for d in $(seq 0 99); do mkdir $d && (cd $d && seq 1000 | xargs touch); done', 'sh', tree]);
  t.comment(`created 100,000 files in ${Date.now() - started} ms`);
  const live = join(slot, 'vol-2');
  await mkdir(live);

  let progress: RemoveProgress = { files: 0, dirs: 0 };
  let running!: () => void;
  const isRunning = new Promise<void>((resolve) => (running = resolve));
  let finished = false;
  const removal = removeTree(tree, {
    onProgress(p) {
      progress = p;
      if (p.files >= 1024) running();
    },
  }).finally(() => (finished = true));

  await isRunning;
  // Work in the new generation while the old one is being deleted.
  for (let i = 0; i < 50; i++) {
    await writeFile(join(live, `file-${i}`), `data ${i}`);
  }
  await mkdir(join(live, 'sub'));
  await rename(join(live, 'file-0'), join(live, 'sub', 'file-0'));
  t.equal(await readFile(join(live, 'sub', 'file-0'), 'utf8'), 'data 0');
  t.equal((await readdir(live)).length, 50);
  const midway = { finished, files: progress.files };

  const removeStarted = Date.now();
  const result = await removal;
  t.comment(`removeTree: 100,000 files in ${Date.now() - removeStarted} ms after the usability check (${Date.now() - started} ms total incl. creation)`);
  t.notOk(midway.finished, `the other directory was used while the removal ran (at ${midway.files} files)`);
  t.same(result, { files: 100_000, dirs: 101, skippedMounts: [] });
  t.notOk(exists(tree));
  t.equal((await readdir(live)).length, 50, 'the other directory is untouched');
  await rm(live, { recursive: true });
});

t.test('mounts inside the tree are neither crossed nor removed, and are reported', async (t) => {
  const out = outsideDir('mounted');
  const tree = join(trash, 'mounts');
  mkdirSync(join(tree, 'a', 'bind-same-fs'), { recursive: true });
  mkdirSync(join(tree, 'b', 'tmpfs'), { recursive: true });
  mkdirSync(join(tree, 'c'), { recursive: true });
  mkdirSync(join(tree, 'd', 'e'), { recursive: true });
  writeFileSync(join(tree, 'c', 'file-mount'), 'covered');
  for (const dir of ['a', 'b', 'c', 'd/e']) writeFileSync(join(tree, dir, 'plain'), 'x');
  const mounts = [join(tree, 'a', 'bind-same-fs'), join(tree, 'b', 'tmpfs'), join(tree, 'c', 'file-mount')];
  execFileSync('mount', ['--bind', out.dir, mounts[0]!]);
  execFileSync('mount', ['-t', 'tmpfs', 'tmpfs', mounts[1]!]);
  writeFileSync(join(mounts[1]!, 'on-tmpfs'), 'tmpfs data');
  execFileSync('mount', ['--bind', out.file, mounts[2]!]);
  t.teardown(() => {
    for (const mount of mounts) umountQuietly(mount);
  });

  const result = await removeTree(tree);

  t.same([...result.skippedMounts].sort(), [...mounts].sort(), 'each mount is reported');
  t.same(snapshot(out.dir), out.before, 'the same-filesystem bind mount was not crossed');
  t.equal(readFileSync(join(mounts[1]!, 'on-tmpfs'), 'utf8'), 'tmpfs data', 'the tmpfs was not crossed');
  t.ok(exists(tree), 'the root stays, since mounts are below it');
  t.notOk(exists(join(tree, 'd')), 'a subtree without mounts is removed');
  t.notOk(exists(join(tree, 'a', 'plain')), 'files next to a mount are removed');
  t.same(readdirSync(tree).sort(), ['a', 'b', 'c'], 'only the directories above mounts stay');

  // Once unmounted, a second run removes the rest.
  for (const mount of mounts) execFileSync('umount', [mount]);
  const rest = await removeTree(tree);
  t.notOk(exists(tree));
  t.same(rest.skippedMounts, []);
  t.same(snapshot(out.dir), out.before);
});

t.test('a root that is itself a mount point is left alone', async (t) => {
  const out = outsideDir('root-mount');
  const tree = join(trash, 'mounted-root');
  mkdirSync(tree);
  execFileSync('mount', ['--bind', out.dir, tree]);
  t.teardown(() => umountQuietly(tree));
  const result = await removeTree(tree);
  t.same(result, { files: 0, dirs: 0, skippedMounts: [tree] });
  t.same(snapshot(out.dir), out.before);
  execFileSync('umount', [tree]);
  t.same(await removeTree(tree), { files: 0, dirs: 1, skippedMounts: [] });
});

t.test('a locked encrypted tree (no-key names) is removed like any other', async (t) => {
  const key = randomKey();
  const id = await addKey(slot, key);
  const vol = join(slot, 'vol-locked');
  await mkdir(vol);
  await setPolicy(vol, defaultPolicy(id));
  const plainNames = ['short', 'x'.repeat(200), 'with space', 'new\nline'];
  mkdirSync(join(vol, 'dir', 'deeper'), { recursive: true });
  for (const name of plainNames) {
    writeFileSync(join(vol, name), `secret ${name}`);
    writeFileSync(join(vol, 'dir', 'deeper', name), 'secret');
  }
  symlinkSync('/etc/passwd', join(vol, 'dir', 'link'));
  linkSync(join(vol, 'short'), join(vol, 'dir', 'hard'));
  const entries = countEntries(vol);

  t.same(await removeKey(slot, id, { allUsers: true }), { filesBusy: false, otherUsers: false });
  t.equal((await getKeyStatus(slot, id)).status, 'absent');
  // What erase does: retire the generation into the trash while locked.
  const retired = join(trash, 'vol-locked');
  await rename(vol, retired);
  const seen = readdirSync(retired);
  t.equal(seen.length, plainNames.length + 1);
  t.notOk(seen.some((name) => plainNames.includes(name)), 'only no-key names are visible');

  const result = await removeTree(retired);
  t.notOk(exists(retired));
  t.equal(result.files + result.dirs, entries + 1);
  t.ok(exists('/etc/passwd'));
});

t.test('an aborted removal leaves a smaller tree, and running again completes it', async (t) => {
  const tree = join(trash, 'resumable');
  mkdirSync(tree);
  execFileSync('sh', ['-c', 'cd "$1" && for d in $(seq 0 9); do mkdir -p $d/x/y && (cd $d && seq 500 | xargs touch && cd x/y && seq 50 | xargs touch); done', 'sh', tree]);
  const total = countEntries(tree);
  const before = openFds();
  const controller = new AbortController();
  const aborted = await rejection(
    removeTree(tree, {
      signal: controller.signal,
      onProgress(p) {
        if (p.files >= 1024) controller.abort();
      },
    }),
  );
  t.equal(aborted.name, 'AbortError');
  t.equal(openFds(), before, 'no descriptor leaked by the abort');
  const left = countEntries(tree);
  t.ok(left > 0 && left < total, `partly removed: ${total - left} of ${total} entries gone`);

  const result = await removeTree(tree);
  t.notOk(exists(tree));
  t.equal(result.files + result.dirs, left + 1, 'the second run removed exactly what was left, and the root');

  const neverStarted = new AbortController();
  neverStarted.abort();
  t.equal((await rejection(removeTree(join(trash, 'whatever'), { signal: neverStarted.signal }))).name, 'AbortError');
});

t.test('bad roots are refused before anything is deleted', async (t) => {
  const out = outsideDir('bad-roots');
  const link = join(trash, 'link-root');
  symlinkSync(out.dir, link);
  t.match(await rejection(removeTree(link)), { code: 'ERR_UNSAFE_PATH' });
  t.same(snapshot(out.dir), out.before, 'a symlink root is not followed');
  t.match(await rejection(removeTree(join(trash, 'link-root', 'sub'))), { code: 'ERR_UNSAFE_PATH' }, 'nor a symlink in its parent');
  t.match(await rejection(removeTree('relative/path')), { code: 'ERR_INVALID_ARG' });
  t.match(await rejection(removeTree('/')), { code: 'ERR_INVALID_ARG' });
  t.match(await rejection(removeTree(join(trash, 'missing'))), { code: 'ENOENT' });
  writeFileSync(join(trash, 'a-file'), 'x');
  t.match(await rejection(removeTree(join(trash, 'a-file'))), { code: 'ERR_UNSAFE_PATH' });
  await rm(join(trash, 'a-file'));
  await rm(link);
});

t.test('TrashCollector resumes what a previous run left, one tree at a time, and can be closed mid-tree', async (t) => {
  const out = outsideDir('collector');
  const left = ['gen-1', 'gen-2'];
  for (const name of left) {
    mkdirSync(join(trash, name, 'sub'), { recursive: true });
    execFileSync('sh', ['-c', 'cd "$1" && seq 300 | xargs touch', 'sh', join(trash, name, 'sub')]);
  }
  symlinkSync(out.dir, join(trash, 'stray-link'));
  writeFileSync(join(trash, 'stray-file'), 'x');

  const seen = new Set<string>();
  const collector = new TrashCollector({ onProgress: (tree) => seen.add(tree) });
  const queued = await collector.resume(trash);
  t.same(queued, ['gen-1', 'gen-2', 'stray-file', 'stray-link'].map((name) => join(trash, name)));
  await collector.idle();
  t.same(readdirSync(trash), [], 'the trash is empty');
  t.same(snapshot(out.dir), out.before, 'a symlink in the trash is unlinked, its target kept');
  t.match(collector.status(), { queued: [], removed: { trees: 4, files: 602, dirs: 4 }, failures: [], skippedMounts: [] });
  t.notOk(collector.status().current);
  t.same([...seen].sort(), left.map((name) => join(trash, name)));
  t.same(await new TrashCollector().resume(join(slot, 'no-trash-here')), [], 'a missing trash holds nothing');

  // A collector closed mid-tree leaves the rest; the next one finishes it.
  mkdirSync(join(trash, 'gen-3'));
  execFileSync('sh', ['-c', 'cd "$1" && for d in $(seq 0 9); do mkdir $d && (cd $d && seq 500 | xargs touch); done', 'sh', join(trash, 'gen-3')]);
  let closing: Promise<void> | undefined;
  const first = new TrashCollector({
    onProgress(_tree, p) {
      if (p.files >= 1024) closing ??= first.close();
    },
  });
  first.add(join(trash, 'gen-3'));
  await first.idle();
  await closing;
  t.same(first.status().failures, [], 'closing is not a failure');
  t.ok(exists(join(trash, 'gen-3')), 'the tree is still there after close');
  t.throws(() => first.add(join(trash, 'gen-3')), { code: 'ERR_CLOSED' });
  const second = new TrashCollector();
  t.same(await second.resume(trash), [join(trash, 'gen-3')]);
  await second.idle();
  t.same(readdirSync(trash), []);
});

t.test('TrashCollector reports a tree it cannot delete and goes on with the next', async (t) => {
  const errors: string[] = [];
  const collector = new TrashCollector({ onError: (tree) => errors.push(tree) });
  const bad = join(trash, 'immutable');
  mkdirSync(bad);
  writeFileSync(join(bad, 'pinned'), 'x');
  execFileSync('chattr', ['+i', join(bad, 'pinned')]);
  t.teardown(() => {
    if (exists(join(bad, 'pinned'))) execFileSync('chattr', ['-i', join(bad, 'pinned')]);
  });
  mkdirSync(join(trash, 'fine'));
  collector.add(bad);
  collector.add(join(trash, 'fine'));
  collector.add(bad);
  await collector.idle();
  t.same(errors, [bad]);
  t.match(collector.status().failures, [{ tree: bad, error: { code: 'EPERM', path: join(bad, 'pinned') } }]);
  t.notOk(exists(join(trash, 'fine')), 'the next tree was deleted');
  execFileSync('chattr', ['-i', join(bad, 'pinned')]);
  collector.add(bad);
  await collector.idle();
  t.notOk(exists(bad));
});
