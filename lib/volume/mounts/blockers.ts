// Who keeps a directory busy: when removing a key reports files busy (or an
// unmount reports EBUSY), this names every process and mount that pins an
// inode under the directory, read from /proc.
//
// Paths are not compared as strings but as (filesystem, path from its root):
// a process that opened a file through a kubelet bind mount of the volume, or
// from inside a container's mount namespace, sees a path that shares nothing
// with the directory's, yet holds the same inodes. Under a locked encrypted
// directory the names below it are no-key names, but the directory's own path
// (in an unencrypted parent) stays stable, so a prefix test on it still works.
import { readdir, readFile, readlink, stat as fsStat } from 'node:fs/promises';
import { posix } from 'node:path';
import { isWithin, parseMountInfo, readMountInfo, type MountInfo } from '../../kernel/index.js';
import { locate, pathOnFilesystem, type FsLocation } from './mounts-location.js';

export type BlockerKind =
  /** A process has a file (or directory) under the directory open. */
  | 'open-file'
  /** A process's working directory is under it. */
  | 'cwd'
  /** A process is chrooted under it. */
  | 'root'
  /** A process has a file under it mapped in memory (a library, a mapped data file). */
  | 'mmap'
  /** A mount whose source lies under it (a bind mount of a subdirectory, e.g. a kubelet target). */
  | 'mount'
  /** Something mounted on a path under it. */
  | 'mount-point';

export interface Blocker {
  kind: BlockerKind;
  /** The process; for a mount, a process of the mount namespace it is in, when that is not ours. */
  pid?: number;
  /** The process's command name (/proc/<pid>/comm). */
  command?: string;
  /** As the process (or, for a mount, its mount namespace) sees it. */
  path: string;
  /** The open or mapped file was deleted; its inode is still held. */
  deleted?: true;
  /** For 'mount': the directory of the filesystem it shows; for 'mount-point': what is mounted there. */
  source?: string;
  /**
   * The file was opened through a mount since detached (`umount -l`): no
   * mount table places it any more, so it is only known to be on the
   * directory's filesystem, not that it is under the directory.
   */
  detached?: true;
}

/** A mount namespace's table, indexed for the lookups below. */
interface MountTable {
  mounts: MountInfo[];
  byId: Map<number, MountInfo>;
  /** The top mount at each mount point. */
  topAt: Map<string, MountInfo>;
  /** Whether any mount of the directory's filesystem is in this namespace. */
  hasTargetDevice: boolean;
  /** The first process seen in it (unset for our own namespace). */
  pid?: number;
  command?: string;
}

const PROCESS_CONCURRENCY = 16;
const IGNORED_ERRNOS = new Set(['ENOENT', 'ESRCH', 'EACCES', 'EPERM', 'ENAMETOOLONG']);

function isVanished(error: unknown): boolean {
  // A process that exited during the scan (ENOENT, ESRCH), one /proc hides
  // from us, or a link the kernel cannot write out (ENAMETOOLONG: a path
  // longer than a page, which any process on the node may hold).
  return IGNORED_ERRNOS.has((error as NodeJS.ErrnoException | undefined)?.code ?? '');
}

function indexMounts(mounts: MountInfo[], device: string): MountTable {
  const byId = new Map(mounts.map((m) => [m.id, m]));
  const atPoint = new Map<string, MountInfo[]>();
  for (const mount of mounts) atPoint.set(mount.mountPoint, [...(atPoint.get(mount.mountPoint) ?? []), mount]);
  const topAt = new Map<string, MountInfo>();
  for (const [point, stack] of atPoint) {
    // A mount stacked on another at the same point has that one as its parent: the top is nobody's parent there.
    topAt.set(point, stack.find((m) => !stack.some((other) => other.parentId === m.id)) ?? stack[stack.length - 1]!);
  }
  return { mounts, byId, topAt, hasTargetDevice: mounts.some((m) => m.device === device) };
}

/** The mount a path lies on, by its longest mount-point prefix. */
function mountOfPath(path: string, table: MountTable): MountInfo | undefined {
  for (let prefix = path; ; prefix = posix.dirname(prefix)) {
    const mount = table.topAt.get(prefix);
    if (mount !== undefined) return mount;
    if (prefix === '/' || prefix === '.' || prefix === '') return undefined;
  }
}

/** "major:minor" of a dev_t, as /proc/self/mountinfo writes it (glibc's encoding). */
function deviceName(dev: bigint): string {
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
  return `${major}:${minor}`;
}

/** readlink of /proc files: " (deleted)" marks an unlinked file. */
export function splitDeleted(link: string): { path: string; deleted: boolean } {
  return link.endsWith(' (deleted)') ? { path: link.slice(0, -' (deleted)'.length), deleted: true } : { path: link, deleted: false };
}

/**
 * splitDeleted for a blocker's report. A tenant may name a file
 * "x (deleted)": the kernel's text is then ambiguous, so the inode behind
 * the magic link `magic` decides. Still linked: the suffix is part of the
 * name (or another name of the file remains) and is kept. stat follows the
 * magic link without opening the file (no FIFO or device is opened).
 */
async function reportedPath(link: string, magic: string): Promise<{ path: string; deleted: boolean }> {
  const split = splitDeleted(link);
  if (!split.deleted) return split;
  const links = await fsStat(magic).then(
    (stat) => stat.nlink,
    () => 0,
  );
  return links === 0 ? split : { path: link, deleted: false };
}

/** /proc/<pid>/comm without its line end (not trimmed: a command name may start or end with spaces). */
async function commandOf(pid: number): Promise<string> {
  return (await readFile(`/proc/${pid}/comm`, 'utf8')).replace(/\n$/, '');
}

// The parsers of the /proc entries the scan reads, apart from the I/O so
// that test/fuzz/proc.test.ts can feed them anything.

/** The mount id in /proc/<pid>/fdinfo/<fd>, or NaN when there is none. */
export function mountIdOfFdinfo(text: string): number {
  return Number(/^mnt_id:\s*(\d+)$/m.exec(text)?.[1] ?? Number.NaN);
}

/**
 * The file mappings in /proc/<pid>/maps: each line's address range and its
 * pathname as the kernel wrote it ("address perms offset dev inode
 * pathname"; a newline in the name escaped as \012, " (deleted)" kept).
 * dotAll: a carriage return (or U+2028) in a name is no line end here, and
 * `.` must not stop at it, or a tenant hides a mapped program by its name.
 */
export function mappedEntries(text: string): { range: string; path: string }[] {
  const entries: { range: string; path: string }[] = [];
  for (const line of text.split('\n')) {
    const match = /^(\S+) \S+ \S+ \S+ \d+\s+(\/.*)$/s.exec(line);
    if (match) entries.push({ range: match[1]!, path: match[2]! });
  }
  return entries;
}

/** The file paths mapped in /proc/<pid>/maps, each once, in order, \012 read as a newline. */
export function mappedPaths(text: string): string[] {
  return [...new Set(mappedEntries(text).map((e) => e.path.replace(/\\012/g, '\n')))];
}

class BlockerScan {
  readonly blockers: Blocker[] = [];
  private readonly tables = new Map<string, Promise<MountTable>>();

  constructor(
    private readonly target: FsLocation,
    private readonly ownNamespace: string,
    ownTable: MountTable,
  ) {
    this.tables.set(ownNamespace, Promise.resolve(ownTable));
  }

  /** True if `path`, as a process with mount table `table` sees it, lies under the directory. */
  private isInside(path: string, table: MountTable, mountId?: number): boolean {
    if (!path.startsWith('/')) return false; // socket:[…], pipe:[…], anon_inode:…
    const mount = (mountId === undefined ? undefined : table.byId.get(mountId)) ?? mountOfPath(path, table);
    if (mount === undefined || mount.device !== this.target.device || !isWithin(path, mount.mountPoint)) return false;
    return isWithin(pathOnFilesystem(path, mount), this.target.fsPath);
  }

  private tableOf(namespace: string, pid: number, command: string): Promise<MountTable> {
    let table = this.tables.get(namespace);
    if (table === undefined) {
      table = readFile(`/proc/${pid}/mountinfo`, 'utf8').then((text) => ({
        ...indexMounts(parseMountInfo(text), this.target.device),
        pid,
        command,
      }));
      // If that process exited first, let the next process of the namespace read it.
      table.catch(() => this.tables.delete(namespace));
      this.tables.set(namespace, table);
    }
    return table;
  }

  async scanProcess(pid: number): Promise<void> {
    const namespace = await readlink(`/proc/${pid}/ns/mnt`);
    const command = await commandOf(pid);
    const table = await this.tableOf(namespace, pid, command);
    // No mount of the directory's filesystem in its namespace: nothing it sees can be inside.
    if (!table.hasTargetDevice) return;
    const found: Promise<Blocker>[] = [];
    const add = (kind: BlockerKind, link: string, magic: string): void => {
      found.push(reportedPath(link, magic).then(({ path, deleted }) => (deleted ? { kind, pid, command, path, deleted: true } : { kind, pid, command, path })));
    };

    for (const kind of ['cwd', 'root'] as const) {
      const link = await readlink(`/proc/${pid}/${kind}`).catch((error: unknown) => (isVanished(error) ? undefined : Promise.reject(error)));
      if (link !== undefined && this.isInside(splitDeleted(link).path, table)) add(kind, link, `/proc/${pid}/${kind}`);
    }
    await this.scanFds(pid, table, add);
    await this.scanMaps(pid, table, add);
    this.blockers.push(...(await Promise.all(found)));
  }

  private async scanFds(pid: number, table: MountTable, add: (kind: BlockerKind, link: string, magic: string) => void): Promise<void> {
    let fds: string[];
    try {
      fds = await readdir(`/proc/${pid}/fd`);
    } catch (error) {
      if (isVanished(error)) return;
      throw error;
    }
    for (const fd of fds) {
      let link: string;
      try {
        link = await readlink(`/proc/${pid}/fd/${fd}`);
      } catch (error) {
        if (isVanished(error)) continue;
        throw error;
      }
      const { path } = splitDeleted(link);
      // The path's mount first (cheap); the fd's exact mount (fdinfo) only for files on the right filesystem.
      if (!path.startsWith('/') || mountOfPath(path, table)?.device !== this.target.device) continue;
      const mountId = await readFile(`/proc/${pid}/fdinfo/${fd}`, 'utf8').then(mountIdOfFdinfo, () => Number.NaN);
      if (this.isInside(path, table, Number.isNaN(mountId) ? undefined : mountId)) add('open-file', link, `/proc/${pid}/fd/${fd}`);
    }
  }

  private async scanMaps(pid: number, table: MountTable, add: (kind: BlockerKind, link: string, magic: string) => void): Promise<void> {
    let maps: string;
    try {
      maps = await readFile(`/proc/${pid}/maps`, 'utf8');
    } catch (error) {
      if (isVanished(error)) return;
      throw error;
    }
    const seen = new Set<string>();
    for (const { range, path } of mappedEntries(maps)) {
      const magic = `/proc/${pid}/map_files/${range}`;
      // The kernel writes a newline in a name as \012 but leaves a backslash
      // alone, so a name holding "\012" itself is ambiguous: the mapping's own
      // magic link (root only) has the exact name.
      const link = path.includes('\\012') ? await readlink(magic).catch(() => path.replace(/\\012/g, '\n')) : path;
      if (seen.has(link)) continue;
      seen.add(link);
      if (this.isInside(splitDeleted(link).path, table)) add('mmap', link, magic);
    }
  }

  /**
   * Open files of `pid` on the directory's filesystem reached through a
   * detached mount (their mount id is in no table). Only worth the extra
   * fdinfo and stat calls when the precise scan found nothing.
   */
  async scanDetached(pid: number): Promise<void> {
    const namespace = await readlink(`/proc/${pid}/ns/mnt`);
    const command = await commandOf(pid);
    const table = await this.tableOf(namespace, pid, command);
    for (const fd of await readdir(`/proc/${pid}/fd`)) {
      const mountId = mountIdOfFdinfo(await readFile(`/proc/${pid}/fdinfo/${fd}`, 'utf8').catch(() => ''));
      if (Number.isNaN(mountId) || table.byId.has(mountId)) continue;
      const stat = await fsStat(`/proc/${pid}/fd/${fd}`, { bigint: true }).catch(() => undefined);
      if (stat === undefined || deviceName(stat.dev) !== this.target.device) continue;
      // One descriptor closed meanwhile skips that descriptor, not the process's others.
      const link = await readlink(`/proc/${pid}/fd/${fd}`).catch((error: unknown) => (isVanished(error) ? undefined : Promise.reject(error)));
      if (link === undefined) continue;
      const { path, deleted } = splitDeleted(link);
      this.blockers.push({ kind: 'open-file', pid, command, path, detached: true, ...(deleted ? { deleted: true as const } : {}) });
    }
  }

  /** Mounts, in every namespace seen, whose source is under the directory or that are mounted on a path under it. */
  async scanMounts(): Promise<void> {
    for (const [namespace, tablePromise] of this.tables) {
      const table = await tablePromise.catch(() => undefined);
      if (table === undefined || !table.hasTargetDevice) continue;
      const owner = namespace === this.ownNamespace || table.pid === undefined ? {} : { pid: table.pid, ...(table.command === undefined ? {} : { command: table.command }) };
      for (const mount of table.mounts) {
        // The mount the directory itself was found through does not pin it.
        if (namespace === this.ownNamespace && mount.id === this.target.mount.id) continue;
        if (mount.device === this.target.device && isWithin(mount.root, this.target.fsPath)) {
          this.blockers.push({ kind: 'mount', ...owner, path: mount.mountPoint, source: mount.root });
          continue;
        }
        const parent = table.byId.get(mount.parentId);
        if (parent === undefined || parent.id === mount.id || parent.device !== this.target.device) continue;
        if (!isWithin(mount.mountPoint, parent.mountPoint)) continue;
        if (isWithin(pathOnFilesystem(mount.mountPoint, parent), this.target.fsPath)) {
          this.blockers.push({ kind: 'mount-point', ...owner, path: mount.mountPoint, source: mount.source });
        }
      }
    }
  }
}

async function forEachLimited<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

const KIND_ORDER: BlockerKind[] = ['mount', 'mount-point', 'cwd', 'root', 'open-file', 'mmap'];

/**
 * Every process and mount that keeps `dir` busy: open files, working and
 * root directories, file mappings (from /proc/<pid>/{fd,cwd,root,maps}, in
 * whatever mount namespace the process lives), and mounts whose source is
 * under `dir` or that are mounted on a path under it (in every mount
 * namespace seen). Processes that exit during the scan are skipped.
 */
export async function findBlockers(dir: string): Promise<Blocker[]> {
  const ownMounts = await readMountInfo();
  const target = await locate(dir, ownMounts);
  const ownNamespace = await readlink('/proc/self/ns/mnt');
  const scan = new BlockerScan(target, ownNamespace, indexMounts(ownMounts, target.device));
  const pids = (await readdir('/proc')).filter((name) => /^\d+$/.test(name)).map(Number);
  await forEachLimited(pids, PROCESS_CONCURRENCY, async (pid) => {
    try {
      await scan.scanProcess(pid);
    } catch (error) {
      if (!isVanished(error)) throw error;
    }
  });
  await scan.scanMounts();
  if (scan.blockers.length === 0) {
    await forEachLimited(pids, PROCESS_CONCURRENCY, async (pid) => {
      try {
        await scan.scanDetached(pid);
      } catch (error) {
        if (!isVanished(error)) throw error;
      }
    });
  }
  return scan.blockers.sort(
    (a, b) => KIND_ORDER.indexOf(a.kind) - KIND_ORDER.indexOf(b.kind) || (a.pid ?? 0) - (b.pid ?? 0) || (a.path < b.path ? -1 : a.path > b.path ? 1 : 0),
  );
}

// Beyond JSON's escapes (C0 controls, quotes, backslashes): DEL, the C1
// controls (0x9b starts a terminal escape as ESC [ does), the Unicode line
// separators and the bidirectional overrides and isolates.
const UNPRINTABLE = /[\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/gu;

/**
 * A name a process chose, as one line's worth of text. Not only paths: a
 * tenant sets its command name (prctl PR_SET_NAME, or the name of the file
 * it runs) and names its mounts' sources, and these lines go into errors,
 * Events (`kubectl describe`) and `status`: none of it may start a line of
 * its own or drive a terminal.
 */
function escaped(text: string): string {
  return JSON.stringify(text)
    .slice(1, -1)
    .replace(UNPRINTABLE, (c) => `\\u${c.codePointAt(0)!.toString(16).padStart(4, '0')}`);
}

function describeOne(blocker: Blocker): string {
  const who = blocker.pid === undefined ? '' : `pid ${blocker.pid}${blocker.command === undefined ? '' : ` (${escaped(blocker.command)})`}`;
  const path = `${escaped(blocker.path)}${blocker.deleted ? ' (deleted)' : ''}`;
  switch (blocker.kind) {
    case 'open-file':
      return blocker.detached
        ? `${who} has ${path} open through a detached (lazily unmounted) mount of this filesystem`
        : `${who} has ${path} open`;
    case 'cwd':
      return `${who} has its working directory at ${path}`;
    case 'root':
      return `${who} has its root directory at ${path}`;
    case 'mmap':
      return `${who} has ${path} mapped in memory`;
    case 'mount':
      return `the mount at ${path} has its source inside (${escaped(blocker.source ?? '?')} on the filesystem)${who === '' ? '' : `, in the mount namespace of ${who}`}`;
    case 'mount-point':
      return `${escaped(blocker.source ?? 'a filesystem')} is mounted on ${path}${who === '' ? '' : `, in the mount namespace of ${who}`}`;
  }
}

/**
 * One line per blocker, for error messages, e.g. "pid 1234 (postgres) has
 * /x/y open". Past `limit` lines, the rest are counted.
 */
export function describeBlockers(blockers: readonly Blocker[], limit = 20): string {
  const lines = blockers.slice(0, limit).map(describeOne);
  if (blockers.length > limit) lines.push(`… and ${blockers.length - limit} more`);
  return lines.join('\n');
}
