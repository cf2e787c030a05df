// Where a caller of the socket may have a volume mounted: only under
// kubelet's pods directory (<kubelet dir>/pods/<pod uid>/volumes/...), with
// the symlinks of the target's parent resolved first, so that neither a path
// with '..' nor a symlink under pods/ pointing elsewhere can mount a volume
// anywhere else on the node (DESIGN invariant 7). The target itself is the
// directory this driver creates: if something is already there, it must be a
// directory, never a symlink (mount(8) would follow it).
//
// The check resolves the parent once and hands the resolved path on, so the
// hook mounts exactly the directory that was checked. A race that swaps a
// directory of the pods tree for a symlink in between needs write access to
// that tree, which only root and kubelet have.
import { lstat, realpath } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { CsiError } from './errors.js';

/** Linux PATH_MAX. */
const MAX_PATH_BYTES = 4096;

function errnoOf(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code;
}

function inside(path: string, dir: string): boolean {
  return path.startsWith(dir.endsWith('/') ? dir : `${dir}/`);
}

/** A clean absolute path: no empty, '.' or '..' component, no NUL, no trailing '/'. */
function checkForm(field: string, path: string): void {
  const clean =
    path.startsWith('/') &&
    path.length > 1 &&
    !path.includes('\0') &&
    Buffer.byteLength(path) <= MAX_PATH_BYTES &&
    path
      .slice(1)
      .split('/')
      .every((part) => part !== '' && part !== '.' && part !== '..');
  if (!clean) throw new CsiError('INVALID_ARGUMENT', `${field} must be a clean absolute path (no '.', '..' or empty component), got ${JSON.stringify(path.slice(0, 300))}`);
}

async function podsDir(kubeletDir: string): Promise<string> {
  try {
    return await realpath(join(kubeletDir, 'pods'));
  } catch (error) {
    throw new CsiError(
      'FAILED_PRECONDITION',
      `kubelet's pods directory ${join(kubeletDir, 'pods')} cannot be reached on this node (${errnoOf(error) ?? String(error)}): is the agent's --kubelet-dir right, and is that directory mounted into its container?`,
    );
  }
}

function outside(field: string, target: string, resolved: string, kubeletDir: string): CsiError {
  const shown = resolved === target ? '' : ` (${resolved} once symlinks are resolved)`;
  return new CsiError(
    'INVALID_ARGUMENT',
    `${field} ${target}${shown} is not under ${join(kubeletDir, 'pods')}/: this driver mounts volumes only into pods' directories (the agent's --kubelet-dir is ${kubeletDir})`,
  );
}

/** What sits at a resolved target: nothing, or a directory (anything else is refused). */
async function checkEntry(field: string, resolved: string): Promise<void> {
  let stat;
  try {
    stat = await lstat(resolved);
  } catch (error) {
    if (errnoOf(error) === 'ENOENT') return;
    throw error;
  }
  if (stat.isSymbolicLink()) throw new CsiError('INVALID_ARGUMENT', `${field} ${resolved} is a symbolic link; the target must be a directory (or not exist yet)`);
  if (!stat.isDirectory()) throw new CsiError('INVALID_ARGUMENT', `${field} ${resolved} exists and is not a directory; this driver publishes mount volumes onto directories only`);
}

/** The target in its resolved parent: the parent must lie under the pods directory, the entry be nothing or a directory. */
async function underPods(kubeletDir: string, pods: string, field: string, target: string, parent: string): Promise<string> {
  const resolved = `${parent}/${posix.basename(target)}`;
  if (!inside(parent, pods)) throw outside(field, target, resolved, kubeletDir);
  await checkEntry(field, resolved);
  return resolved;
}

/**
 * The target of a NodePublishVolume, with its parent's symlinks resolved:
 * the parent must exist (kubelet makes it) and lie under <kubeletDir>/pods/.
 */
export async function publishTarget(kubeletDir: string, target: string, field = 'target_path'): Promise<string> {
  checkForm(field, target);
  const pods = await podsDir(kubeletDir);
  let parent: string;
  try {
    parent = await realpath(posix.dirname(target));
  } catch (error) {
    if (errnoOf(error) === 'ENOENT' || errnoOf(error) === 'ENOTDIR') {
      throw new CsiError('FAILED_PRECONDITION', `the parent directory of ${field} ${target} does not exist; kubelet creates it before it publishes a volume there`);
    }
    throw error;
  }
  return underPods(kubeletDir, pods, field, target, parent);
}

/**
 * The target of a NodeUnpublishVolume, resolved as for a publish. A target
 * whose parent is gone too (kubelet removed it after an earlier success) is
 * returned as it is, if it is under the pods directory by name: nothing is
 * there to unmount, but the volume's key may still have to go.
 */
export async function unpublishTarget(kubeletDir: string, target: string, field = 'target_path'): Promise<string> {
  checkForm(field, target);
  const pods = await podsDir(kubeletDir);
  let parent: string;
  try {
    parent = await realpath(posix.dirname(target));
  } catch (error) {
    if (errnoOf(error) !== 'ENOENT' && errnoOf(error) !== 'ENOTDIR') throw error;
    if (!inside(target, join(kubeletDir, 'pods')) && !inside(target, pods)) throw outside(field, target, target, kubeletDir);
    return target;
  }
  return underPods(kubeletDir, pods, field, target, parent);
}
