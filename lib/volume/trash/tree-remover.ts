// Deletes a directory tree (a retired generation in a slot's trash) without
// ever touching anything outside it (DESIGN invariant 7), whatever the tree
// holds: tenant symlinks, hard links, mount points, deep or wide trees, names
// in any bytes, or no-key names of a locked encrypted directory.
//
// Node has no openat()/unlinkat(), so the walk gets their semantics from
// procfs: every directory is opened with O_DIRECTORY|O_NOFOLLOW and its
// children are addressed as /proc/self/fd/<fd>/<name>. The magic link pins
// the opened directory whatever is renamed or swapped meanwhile, and the last
// component is never followed by lstat, unlink, rmdir or an O_NOFOLLOW open.
// Only the current directory (plus the root and the root's parent) is open at
// any time: the walk climbs back through `..` of a verified fd and checks the
// inode it reaches against the one it remembered, so a depth of 10,000 costs
// no more descriptors than a depth of 1. Nothing is remembered between runs:
// a half-deleted tree (after an abort or a crash) is just a smaller tree.
//
// What a concurrent writer can and cannot do: a symlink or a mount swapped in
// is never followed or crossed; a directory moved out of the tree while the
// walk is inside it is noticed at the next `..` check (before each rescan and
// each climb), and the walk then restarts from the root without acting
// through the new parent. Until then it may finish emptying that directory,
// as openat-based rm(1) would: only someone with write access to the tree can
// move things, and they could delete those entries themselves. The trash is
// the agent's own (0700), so in practice nobody else writes there.
import { constants } from 'node:fs';
import { lstat, open, opendir, rmdir, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import { FscryptError } from '../../kernel/index.js';
import { mountIdOfFd } from '../mounts/mounts-location.js';

export interface RemoveProgress {
  /** Non-directories removed so far (files, symlinks, devices, sockets, FIFOs). */
  files: number;
  /** Directories removed so far. */
  dirs: number;
}

export interface RemoveTreeOptions {
  /** Called after each directory and every 1,024 files; must not throw. */
  onProgress?(progress: RemoveProgress): void;
  /** Stops the walk between two operations; calling removeTree again resumes. */
  signal?: AbortSignal;
  /** Unlinks in flight within one directory (default 32). */
  concurrency?: number;
}

export interface RemoveTreeResult extends RemoveProgress {
  /**
   * Mount points found in the tree (or the root itself, if it is one). They
   * are neither crossed nor removed, and neither are the directories above
   * them: the tree is then only partly removed and `root` still exists.
   */
  skippedMounts: string[];
}

const DIRECTORY_FLAGS = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;
// Subdirectory names remembered per level; the rest are found by a rescan.
const MAX_PENDING = 4096;
// How often the tree may be seen changing under the walk before giving up.
const MAX_RESTARTS = 16;
const PROGRESS_EVERY = 1024;

/** One directory on the path from the root to where the walk is. */
interface Level {
  /** Its name in the parent ('' for the root). */
  name: string;
  ino: bigint;
  /** Subdirectories seen by the last scan and not visited yet. */
  pending: string[];
  /** Entries that stay (mount points, or directories above one). */
  kept: Set<string>;
  /** A scan saw every entry and nothing since suggests a new one: no rescan needed. */
  complete: boolean;
  /** Scans so far (a rescan first checks the directory is still in the tree). */
  scans: number;
}

function newLevel(name: string, ino: bigint): Level {
  return { name, ino, pending: [], kept: new Set(), complete: false, scans: 0 };
}

// Names are kept as latin1 strings: one char per byte, so a name that is
// not UTF-8 (any bytes but '/' and NUL are a valid name) reaches unlink and
// rmdir as the very bytes readdir returned. Decoded as UTF-8, its invalid
// bytes would become U+FFFD, unlink would answer ENOENT for a name that
// still exists, and the walk would rescan that directory forever.
const NAME_ENCODING = 'latin1';

/** A directory's magic link, or a child of it (a name in NAME_ENCODING) as the exact bytes. */
function fdPath(handle: FileHandle): string;
function fdPath(handle: FileHandle, name: string): Buffer;
function fdPath(handle: FileHandle, name?: string): string | Buffer {
  const dir = `/proc/self/fd/${handle.fd}`;
  return name === undefined ? dir : Buffer.concat([Buffer.from(`${dir}/`), Buffer.from(name, NAME_ENCODING)]);
}

/** A name as NAME_ENCODING keeps it, shown as text (invalid UTF-8 bytes as U+FFFD): for reports only. */
function shown(name: string): string {
  return Buffer.from(name, NAME_ENCODING).toString('utf8');
}

function errnoOf(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code;
}

function assertSafeName(name: string, whereLazily: () => string): void {
  if (name === '' || name === '.' || name === '..' || name.includes('/') || name.includes('\0')) {
    const where = whereLazily();
    throw new FscryptError(`readdir returned the unsafe name ${JSON.stringify(shown(name))} in '${where}'; refusing to continue`, {
      code: 'ERR_UNSAFE_PATH',
      path: where,
    });
  }
}

/** Runs at most `limit` tasks at once; the first failure is rethrown by run() or drain(). */
class TaskPool {
  private readonly running = new Set<Promise<void>>();
  private failure: { error: unknown } | undefined;

  constructor(private readonly limit: number) {}

  async run(task: () => Promise<void>): Promise<void> {
    this.rethrow();
    while (this.running.size >= this.limit) {
      await Promise.race(this.running);
      this.rethrow();
    }
    const promise: Promise<void> = task().then(
      () => {
        this.running.delete(promise);
      },
      (error: unknown) => {
        this.running.delete(promise);
        this.failure ??= { error };
      },
    );
    this.running.add(promise);
  }

  async drain(): Promise<void> {
    await Promise.all(this.running);
    this.rethrow();
  }

  private rethrow(): void {
    if (this.failure) throw this.failure.error;
  }
}

class TreeWalk {
  private readonly progress: RemoveProgress = { files: 0, dirs: 0 };
  private readonly skippedMounts = new Set<string>();
  private readonly stack: Level[];
  /** The directory at the top of the stack (the root handle when at the root). */
  private current: FileHandle;
  private restarts = 0;
  private readonly concurrency: number;

  constructor(
    private readonly root: string,
    private readonly rootHandle: FileHandle,
    private readonly rootLevel: Level,
    private readonly rootDev: bigint,
    private readonly rootMountId: number,
    private readonly options: RemoveTreeOptions,
  ) {
    this.stack = [rootLevel];
    this.current = rootHandle;
    this.concurrency = Math.max(1, options.concurrency ?? 32);
  }

  /** Empties the root; true if nothing was kept in it. */
  async run(): Promise<boolean> {
    try {
      for (;;) {
        this.options.signal?.throwIfAborted();
        const level = this.top();
        if (level.pending.length === 0 && !level.complete) {
          // Moved out of the tree since we entered it? Then its contents are no longer ours.
          if (level.scans > 0 && !(await this.stillInTree())) continue;
          await this.scan(level);
          this.options.signal?.throwIfAborted();
        }
        if (level.pending.length === 0) {
          // Empty but for kept entries: this directory is done.
          if (this.stack.length === 1) return level.kept.size === 0;
          await this.ascend();
          continue;
        }
        await this.descend(level.pending.pop()!);
      }
    } finally {
      if (this.current !== this.rootHandle) await this.current.close();
    }
  }

  result(): RemoveTreeResult {
    return { ...this.progress, skippedMounts: [...this.skippedMounts] };
  }

  countDir(): void {
    this.progress.dirs++;
    this.report();
  }

  private top(): Level {
    return this.stack[this.stack.length - 1]!;
  }

  private report(): void {
    this.options.onProgress?.({ ...this.progress });
  }

  /** The path of `name` in the current directory, for reports and errors only. */
  private pathOf(name?: string): string {
    const names = this.stack.slice(1).map((level) => level.name);
    if (name !== undefined) names.push(name);
    return names.length === 0 ? this.root : `${this.root}/${shown(names.join('/'))}`;
  }

  private visitLater(level: Level, name: string): void {
    if (level.pending.length < MAX_PENDING) level.pending.push(name);
    else level.complete = false; // the next scan finds the rest
  }

  private keepMount(level: Level, name: string): void {
    level.kept.add(name);
    this.skippedMounts.add(this.pathOf(name));
  }

  /** Unlinks every non-directory of the current directory, and notes its subdirectories. */
  private async scan(level: Level): Promise<void> {
    const handle = this.current;
    const pool = new TaskPool(this.concurrency);
    level.scans++;
    level.complete = true;
    const dir = await opendir(fdPath(handle), { bufferSize: 256, encoding: NAME_ENCODING });
    // The async iterator closes `dir` when the loop ends, however it ends.
    try {
      for await (const entry of dir) {
        const name = entry.name;
        assertSafeName(name, () => this.pathOf());
        if (level.kept.has(name)) continue;
        if (entry.isDirectory()) {
          this.visitLater(level, name);
          continue;
        }
        if (this.options.signal?.aborted) break;
        await pool.run(() => this.unlinkEntry(handle, level, name));
      }
    } finally {
      await pool.drain();
    }
  }

  private async unlinkEntry(handle: FileHandle, level: Level, name: string): Promise<void> {
    try {
      await unlink(fdPath(handle, name));
    } catch (error) {
      switch (errnoOf(error)) {
        case 'ENOENT':
          return;
        case 'EISDIR': // d_type was unknown, or a directory took the name meanwhile
          this.visitLater(level, name);
          return;
        case 'EBUSY': // a file bind-mounted over, or a mount point in this namespace
          this.keepMount(level, name);
          return;
        default:
          throw this.failure(error, 'unlink', name);
      }
    }
    if (++this.progress.files % PROGRESS_EVERY === 0) this.report();
  }

  private async descend(name: string): Promise<void> {
    const level = this.top();
    const childPath = fdPath(this.current, name);
    let seen;
    try {
      seen = await lstat(childPath, { bigint: true });
    } catch (error) {
      if (errnoOf(error) === 'ENOENT') return;
      throw this.failure(error, 'lstat', name);
    }
    if (!seen.isDirectory()) {
      // Swapped for a symlink or a file since the scan: unlinking a name is always safe.
      await this.unlinkEntry(this.current, level, name);
      return;
    }
    // A mount of another filesystem shows its own st_dev through lstat.
    if (seen.dev !== this.rootDev) {
      this.keepMount(level, name);
      return;
    }
    let child: FileHandle;
    try {
      child = await open(childPath, DIRECTORY_FLAGS);
    } catch (error) {
      const code = errnoOf(error);
      if (code === 'ENOENT') return;
      if (code === 'ELOOP' || code === 'ENOTDIR') {
        // Swapped between lstat and open: the next scan sees what it is now.
        level.complete = false;
        return;
      }
      throw this.failure(error, 'open', name);
    }
    let entered = false;
    try {
      const opened = await child.stat({ bigint: true });
      if (opened.dev !== seen.dev || opened.ino !== seen.ino || !opened.isDirectory()) {
        this.noteChange(`'${this.pathOf(name)}' changed between lstat and open`);
        level.pending.push(name);
        return;
      }
      // A bind mount of this same filesystem has the same st_dev: only the mount id tells.
      if (mountIdOfFd(child.fd) !== this.rootMountId) {
        this.keepMount(level, name);
        return;
      }
      this.stack.push(newLevel(name, opened.ino));
      if (this.current !== this.rootHandle) await this.current.close();
      this.current = child;
      entered = true;
    } finally {
      if (!entered) await child.close();
    }
  }

  /**
   * Opens `..` of the current directory if it is still the parent remembered
   * on the way down. If not, the current directory was moved (perhaps out of
   * the tree): the walk starts over from the root and undefined is returned.
   */
  private async openParent(): Promise<FileHandle | undefined> {
    const parentLevel = this.stack[this.stack.length - 2]!;
    let handle: FileHandle | undefined;
    try {
      handle = await open(fdPath(this.current, '..'), DIRECTORY_FLAGS);
      const reached = await handle.stat({ bigint: true });
      if (reached.dev === this.rootDev && reached.ino === parentLevel.ino) {
        if (parentLevel !== this.rootLevel) return handle;
        await handle.close();
        return this.rootHandle;
      }
    } catch {
      // A directory that vanished meanwhile is handled like a moved one.
    }
    await handle?.close();
    const moved = this.pathOf();
    await this.current.close();
    this.current = this.rootHandle;
    this.restart(`'${moved}' was moved during the walk`);
    return undefined;
  }

  /** True if the current directory is still where the walk entered it. */
  private async stillInTree(): Promise<boolean> {
    if (this.stack.length === 1) return true;
    const parent = await this.openParent();
    if (parent === undefined) return false;
    if (parent !== this.rootHandle) await parent.close();
    return true;
  }

  /** Back to the parent through a verified `..`, then removes the child. */
  private async ascend(): Promise<void> {
    const parent = await this.openParent();
    if (parent === undefined) return;
    const child = this.stack.pop()!;
    const parentLevel = this.top();
    await this.current.close();
    this.current = parent;
    if (child.kept.size > 0) {
      parentLevel.kept.add(child.name);
      return;
    }
    try {
      await rmdir(fdPath(parent, child.name));
    } catch (error) {
      switch (errnoOf(error)) {
        case 'ENOENT':
          return;
        case 'ENOTEMPTY': // refilled meanwhile: the parent's next scan finds it again
          // Counted like a restart: a writer refilling a directory as fast as
          // it is emptied must not keep the process-wide trash collector (one
          // tree at a time) on this tree forever, stalling every other slot.
          this.noteChange(`'${this.pathOf(child.name)}' was refilled while it was removed`);
          parentLevel.complete = false;
          return;
        case 'ENOTDIR': // swapped for a symlink or file: the next scan unlinks it
          parentLevel.complete = false;
          return;
        case 'EBUSY':
          this.keepMount(parentLevel, child.name);
          return;
        default:
          throw this.failure(error, 'rmdir', child.name);
      }
    }
    this.countDir();
  }

  restart(reason: string): void {
    this.noteChange(reason);
    this.stack.length = 1;
    Object.assign(this.rootLevel, newLevel('', this.rootLevel.ino));
    this.skippedMounts.clear();
  }

  private noteChange(reason: string): void {
    if (++this.restarts > MAX_RESTARTS) {
      throw new FscryptError(`the tree '${this.root}' keeps changing while it is removed (${reason}); stop whatever writes to it and retry`, {
        code: 'ERR_UNSAFE_PATH',
        path: this.root,
      });
    }
  }

  private failure(error: unknown, syscall: string, name: string): FscryptError {
    const code = errnoOf(error) ?? 'ERR_CLEANUP';
    const path = this.pathOf(name);
    return new FscryptError(`${code}: cannot ${syscall} '${path}' while removing '${this.root}'`, { code, syscall, path, cause: error });
  }
}

/** Opens a directory without following a symlink as its last component. */
async function openDirectory(path: string | Buffer, shownPath = String(path)): Promise<FileHandle> {
  try {
    return await open(path, DIRECTORY_FLAGS);
  } catch (error) {
    const code = errnoOf(error);
    if (code === 'ELOOP' || code === 'ENOTDIR') {
      throw new FscryptError(`'${shownPath}' is not a directory (a symlink is never followed)`, { code: 'ERR_UNSAFE_PATH', path: shownPath, cause: error });
    }
    throw error;
  }
}

/**
 * Deletes the directory tree at `root` and then `root` itself, never
 * following a symlink and never crossing into another mount (mount points are
 * reported in `skippedMounts` and left in place with their parents). `root`
 * must be a real directory: a symlink is refused, not followed. Works the same
 * on locked encrypted trees, whose names are no-key names.
 */
export async function removeTree(root: string, options: RemoveTreeOptions = {}): Promise<RemoveTreeResult> {
  if (typeof root !== 'string' || !root.startsWith('/')) {
    throw FscryptError.invalidArgument(`root must be an absolute path, got ${JSON.stringify(root)}`);
  }
  const absolute = resolve(root);
  if (absolute === '/') throw FscryptError.invalidArgument('refusing to remove /', absolute);
  options.signal?.throwIfAborted();

  // The root is opened and finally removed through its parent's fd, so its
  // last component is never followed and the final rmdir hits the same name.
  const parent = await openDirectory(dirname(absolute));
  const name = Buffer.from(basename(absolute)).toString(NAME_ENCODING);
  let rootHandle: FileHandle | undefined;
  try {
    rootHandle = await openDirectory(fdPath(parent, name), absolute);
    const rootStat = await rootHandle.stat({ bigint: true });
    const parentStat = await parent.stat({ bigint: true });
    const rootMountId = mountIdOfFd(rootHandle.fd);
    // Something mounted on the root itself: its contents are not ours to delete.
    if (rootStat.dev !== parentStat.dev || rootMountId !== mountIdOfFd(parent.fd)) {
      return { files: 0, dirs: 0, skippedMounts: [absolute] };
    }

    const walk = new TreeWalk(absolute, rootHandle, newLevel('', rootStat.ino), rootStat.dev, rootMountId, options);
    for (;;) {
      if (!(await walk.run())) return walk.result();
      // Remove the root only if its name still is the directory just emptied.
      const now = await lstat(fdPath(parent, name), { bigint: true }).catch(() => undefined);
      if (now === undefined || now.dev !== rootStat.dev || now.ino !== rootStat.ino) return walk.result();
      try {
        await rmdir(fdPath(parent, name));
        walk.countDir();
        return walk.result();
      } catch (error) {
        const code = errnoOf(error);
        if (code === 'ENOENT') return walk.result();
        if (code !== 'ENOTEMPTY') {
          throw new FscryptError(`${code ?? 'ERR_CLEANUP'}: cannot remove '${absolute}' after emptying it`, {
            code: code ?? 'ERR_CLEANUP',
            path: absolute,
            cause: error,
          });
        }
        walk.restart(`'${absolute}' was refilled while it was removed`);
      }
    }
  } finally {
    await rootHandle?.close();
    await parent.close();
  }
}
