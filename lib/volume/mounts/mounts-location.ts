// Where a path really is, as the kernel resolves it: which mount it lies on
// and which directory of which filesystem that is. Comparing (device, path on
// the filesystem) instead of path strings is what makes a bind mount of
// <slot>/vol-1 at a kubelet target recognisable as vol-1, wherever the slot's
// filesystem is mounted, and keeps vol-1 apart from vol-10 on the same disk.
import { constants, readFileSync } from 'node:fs';
import { open, readlink } from 'node:fs/promises';
import { posix } from 'node:path';
import { FscryptError, isWithin, OPEN_FLAGS, readMountInfo, type MountInfo } from '../../kernel/index.js';

export interface FsLocation {
  /** The kernel's canonical path (symlinks resolved, as mount(2) resolves them). */
  path: string;
  /** The mount the path lies on: for a mount point, the top mount there. */
  mount: MountInfo;
  /** "major:minor" of the filesystem. */
  device: string;
  /** The path from the root of that filesystem, comparable with a mount's `root` field. */
  fsPath: string;
}

/** The mount an open file lies on (/proc/self/fdinfo; exact where path prefixes are not, e.g. under overmounts). */
export function mountIdOfFd(fd: number): number {
  // procfs never waits for a disk: a synchronous read is cheaper than a thread-pool round trip.
  const match = /^mnt_id:\s*(\d+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
  if (!match) throw new FscryptError('/proc/self/fdinfo has no mnt_id (Linux 3.15 or later is needed)', { code: 'ERR_NOT_SUPPORTED' });
  return Number(match[1]);
}

/** `path` as seen from the root of the filesystem mounted as `mount` (`path` must lie on that mount). */
export function pathOnFilesystem(path: string, mount: MountInfo): string {
  if (!isWithin(path, mount.mountPoint)) {
    throw new FscryptError(`'${path}' is not under the mount point '${mount.mountPoint}' (the mount table changed while it was read; retry)`, { code: 'ERR_MOUNT_TABLE', path });
  }
  // No normalising join: a root of a deleted directory ends in "//deleted", which must not become "/deleted".
  const relative = posix.relative(mount.mountPoint, path);
  if (relative === '') return mount.root;
  return mount.root.endsWith('/') ? `${mount.root}${relative}` : `${mount.root}/${relative}`;
}

/**
 * Resolves `path` the way the kernel does and tells which mount and which
 * directory of which filesystem it is. ENOENT if it does not exist.
 */
export async function locate(path: string, mounts?: MountInfo[]): Promise<FsLocation> {
  // O_PATH opens the name without opening the file (no ENOKEY on a locked
  // encrypted file, no blocking on a FIFO); fs.constants lacks it.
  const handle = await open(path, OPEN_FLAGS.O_PATH);
  try {
    const resolved = await readlink(`/proc/self/fd/${handle.fd}`);
    const id = mountIdOfFd(handle.fd);
    let mount = (mounts ?? (await readMountInfo())).find((m) => m.id === id);
    // A mount made after `mounts` was read: read the table again. Also when
    // the id is there but elsewhere: the kernel hands a freed mount id to the
    // next mount, so a table read before an unmount and a mount (kubelet
    // churning pods) can name another mount point under this id; the soak
    // (test/agent/soak.test.ts) met it as failed reconciles. The open fd
    // pins its mount, so a table read now has the right entry.
    if ((mount === undefined || !isWithin(resolved, mount.mountPoint)) && mounts !== undefined) mount = (await readMountInfo()).find((m) => m.id === id);
    if (mount === undefined) {
      throw new FscryptError(`mount ${id} of '${path}' is not in /proc/self/mountinfo (the mount table changed while it was read; retry)`, { code: 'ERR_MOUNT_TABLE', path });
    }
    return { path: resolved, mount, device: mount.device, fsPath: pathOnFilesystem(resolved, mount) };
  } finally {
    await handle.close();
  }
}

/**
 * True if `path` (a directory, not a symlink) is a mount point: it lies on
 * another mount than its parent. The two opens are lookups on the slot's
 * filesystem, which can wait for its disk: through the pool, together (their
 * order does not matter); the mount ids come from procfs.
 */
export async function isMountPoint(path: string): Promise<boolean> {
  if (path === '/') return true;
  const [own, parent] = await Promise.allSettled(
    [path, posix.join(path, '..')].map(async (p) => {
      const handle = await open(p, OPEN_FLAGS.O_PATH | constants.O_NOFOLLOW);
      try {
        return mountIdOfFd(handle.fd);
      } finally {
        await handle.close();
      }
    }),
  );
  // The path's own error first, as when the parent was only opened after it.
  if (own!.status === 'rejected') throw own!.reason;
  if (parent!.status === 'rejected') throw parent!.reason;
  return own!.value !== parent!.value;
}
