// /proc/self/mountinfo (proc(5)): the kernel's own account of what is mounted
// where. Used to name the filesystem and device of a path, and by the volume
// layer to find bind mounts without trusting its own memory.
import { readFile, realpath } from 'node:fs/promises';

export interface MountInfo {
  id: number;
  parentId: number;
  /** "major:minor" of the filesystem */
  device: string;
  /** Directory of the filesystem mounted here (a subdirectory for bind mounts). */
  root: string;
  mountPoint: string;
  /** Per-mount options, e.g. ["rw", "relatime"]. */
  options: string[];
  fsType: string;
  source: string;
  superOptions: string[];
}

// Mount names escape space, tab, newline and backslash as octal.
function unescape(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

export function parseMountInfo(text: string): MountInfo[] {
  const mounts: MountInfo[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const fields = line.split(' ');
    const separator = fields.indexOf('-', 6);
    // The three fields after the separator must be there: a line cut short
    // with optional fields passed a length check of 10 and then threw on
    // the missing source (found by test/fuzz/mountinfo.test.ts).
    if (separator < 0 || fields.length < separator + 4) continue;
    mounts.push({
      id: Number(fields[0]),
      parentId: Number(fields[1]),
      device: fields[2]!,
      root: unescape(fields[3]!),
      mountPoint: unescape(fields[4]!),
      options: fields[5]!.split(','),
      // The kernel escapes the type as it does names (a FUSE subtype may hold a space).
      fsType: unescape(fields[separator + 1]!),
      source: unescape(fields[separator + 2]!),
      superOptions: fields[separator + 3]!.split(','),
    });
  }
  return mounts;
}

export async function readMountInfo(): Promise<MountInfo[]> {
  return parseMountInfo(await readFile('/proc/self/mountinfo', 'utf8'));
}

/** True if `path` is `dir` or lies below it (both absolute and normalized). */
export function isWithin(path: string, dir: string): boolean {
  return path === dir || dir === '/' || path.startsWith(dir.endsWith('/') ? dir : `${dir}/`);
}

/** The mount that holds `path`: the last-mounted one with the longest mount point above it. */
export async function findMount(path: string, mounts?: MountInfo[]): Promise<MountInfo | undefined> {
  const resolved = await realpath(path);
  let best: MountInfo | undefined;
  for (const mount of mounts ?? (await readMountInfo())) {
    if (isWithin(resolved, mount.mountPoint) && (best === undefined || mount.mountPoint.length >= best.mountPoint.length)) {
      best = mount;
    }
  }
  return best;
}
