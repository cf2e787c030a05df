// Bind mounts of volume directories at kubelet targets, checked against the
// kernel's own mount table (/proc/self/mountinfo) rather than our memory or
// st_dev, which cannot tell a bind mount from its parent on one filesystem.
// Mounting shells out to util-linux mount/umount: only crypto must stay in
// process.
import { execFile } from 'node:child_process';
import { realpath } from 'node:fs/promises';
import { FscryptError, readMountInfo, type MountInfo } from '../../kernel/index.js';
import { describeBlockers, findBlockers } from './blockers.js';
import { locate } from './mounts-location.js';

export interface BindOptions {
  /** Read-only for everyone using the target; the source stays writable. */
  readonly?: boolean;
}

interface CommandResult {
  ok: boolean;
  stderr: string;
}

function run(command: string, args: string[]): Promise<CommandResult> {
  return new Promise((resolve) => {
    // LC_ALL=C: the messages are matched below.
    execFile(command, args, { encoding: 'utf8', env: { ...process.env, LC_ALL: 'C' } }, (error, _stdout, stderr) => {
      resolve({ ok: error === null, stderr: stderr.trim() || (error?.message ?? '') });
    });
  });
}

function assertAbsolute(path: unknown, what: string): asserts path is string {
  if (typeof path !== 'string' || !path.startsWith('/') || path.includes('\0')) {
    throw FscryptError.invalidArgument(`${what} must be an absolute path, got ${JSON.stringify(path)}`);
  }
}

function errnoOf(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code;
}

/** The path with symlinks resolved, or undefined if it does not exist. */
async function existing(path: string): Promise<string | undefined> {
  try {
    return await realpath(path);
  } catch (error) {
    if (errnoOf(error) === 'ENOENT') return undefined;
    throw error;
  }
}

/**
 * What is mounted exactly at `target` (the top one, if mounts are stacked
 * there), or undefined if `target` is not a mount point or does not exist.
 * Symlinks in `target` are resolved, as mount(2) resolves them.
 */
export async function mountAt(target: string, mounts?: MountInfo[]): Promise<MountInfo | undefined> {
  assertAbsolute(target, 'target');
  try {
    // The kernel's path walk ends on the top mount of a mount point.
    const location = await locate(target, mounts);
    return location.mount.mountPoint === location.path ? location.mount : undefined;
  } catch (error) {
    if (errnoOf(error) === 'ENOENT' || errnoOf(error) === 'ENOTDIR') return undefined;
    throw error;
  }
}

/**
 * True if `target` is a bind mount of exactly the directory (or file)
 * `source`: the same filesystem (major:minor) and the same directory of it
 * (the mount's root against the source's path from its filesystem's root),
 * so it holds wherever that filesystem is mounted and never confuses two
 * directories of one filesystem. With `readonly`, the mount's own ro/rw
 * option must match too.
 */
export async function isBindOf(target: string, source: string, options: BindOptions = {}): Promise<boolean> {
  assertAbsolute(source, 'source');
  const mounts = await readMountInfo();
  const mount = await mountAt(target, mounts);
  if (mount === undefined) return false;
  let location;
  try {
    location = await locate(source, mounts);
  } catch (error) {
    if (errnoOf(error) === 'ENOENT' || errnoOf(error) === 'ENOTDIR') return false;
    throw error;
  }
  if (mount.device !== location.device || mount.root !== location.fsPath) return false;
  return options.readonly === undefined || mount.options.includes('ro') === options.readonly;
}

/**
 * Bind-mounts `source` at `target` (which must exist), read-only if asked:
 * MS_BIND, then MS_REMOUNT|MS_BIND|MS_RDONLY, since the kernel ignores ro on
 * the first call. Checked against mountinfo afterwards. Returns false if
 * exactly this mount is already there; ERR_FOREIGN_MOUNT if another is.
 */
export async function bindMount(source: string, target: string, options: BindOptions = {}): Promise<boolean> {
  assertAbsolute(source, 'source');
  assertAbsolute(target, 'target');
  const readonly = options.readonly === true;
  const from = await existing(source);
  if (from === undefined) throw new FscryptError(`cannot bind-mount '${source}': it does not exist`, { code: 'ENOENT', path: source });
  const at = await existing(target);
  if (at === undefined) throw new FscryptError(`cannot bind-mount at '${target}': it does not exist (create it first)`, { code: 'ENOENT', path: target });

  const present = await mountAt(at);
  if (present !== undefined) {
    if (await isBindOf(at, from, { readonly })) return false;
    throw new FscryptError(
      `'${at}' already has a mount (${present.source} ${present.root}, ${present.options.includes('ro') ? 'ro' : 'rw'}); unmount it before binding '${from}' there`,
      { code: 'ERR_FOREIGN_MOUNT', path: at },
    );
  }

  const bound = await run('mount', ['--bind', from, at]);
  if (!bound.ok) throw new FscryptError(`mount --bind '${from}' '${at}' failed: ${bound.stderr}`, { code: 'ERR_MOUNT_FAILED', path: at });
  try {
    if (readonly) {
      const remounted = await run('mount', ['-o', 'remount,bind,ro', at]);
      if (!remounted.ok) throw new FscryptError(`making the bind mount at '${at}' read-only failed: ${remounted.stderr}`, { code: 'ERR_MOUNT_FAILED', path: at });
    }
    if (!(await isBindOf(at, from, { readonly }))) {
      throw new FscryptError(`after mount --bind '${from}' '${at}', mountinfo does not show that bind mount${readonly ? ' read-only' : ''}`, {
        code: 'ERR_MOUNT_FAILED',
        path: at,
      });
    }
  } catch (error) {
    // Never leave a writable or wrong mount behind.
    await run('umount', [at]);
    throw error;
  }
  return true;
}

/**
 * Unmounts the top mount at `target`. Returns false if nothing is mounted
 * there or `target` does not exist (so it can be repeated). A busy target is
 * an EBUSY error that names what holds it.
 */
export async function unmount(target: string): Promise<boolean> {
  assertAbsolute(target, 'target');
  const at = await existing(target);
  if (at === undefined) return false;
  if ((await mountAt(at)) === undefined) return false;
  for (let attempt = 0; ; attempt++) {
    const result = await run('umount', [at]);
    if (result.ok) return true;
    if (/not mounted/i.test(result.stderr)) return false;
    if (!/busy/i.test(result.stderr)) throw new FscryptError(`umount '${at}' failed: ${result.stderr}`, { code: 'ERR_MOUNT_FAILED', path: at });
    const blockers = await findBlockers(at).catch(() => []);
    // Busy with no other process holding it is this process itself, for a
    // moment: any lookup of the target pins its mount while it lasts
    // (slotStatus' isBindOf holds an O_PATH fd on it for a few thread-pool
    // round trips, and the agent's census and NodeGetVolumeStats call it at
    // any time: the soak, test/agent/soak.test.ts, failed unpublishes on it).
    // That passes in moments; a tenant's process does not, and is reported
    // at once.
    const others = blockers.filter((b) => b.pid !== process.pid);
    if (others.length === 0 && attempt < TRANSIENT_BUSY_RETRIES_MS.length) {
      await new Promise((resolve) => setTimeout(resolve, TRANSIENT_BUSY_RETRIES_MS[attempt]));
      continue;
    }
    const held = blockers.length > 0 ? `; held by:\n${describeBlockers(blockers)}` : '';
    throw new FscryptError(`EBUSY: cannot unmount '${at}': target is busy${held}`, { code: 'EBUSY', path: at });
  }
}

/** Waits before each new umount of a target busy only because of this process (about 1.5 s in all). */
const TRANSIENT_BUSY_RETRIES_MS = [20, 50, 100, 200, 400, 800];
