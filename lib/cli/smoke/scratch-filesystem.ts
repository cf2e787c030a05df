// The scratch filesystem smoke runs on by default: an ext4 image made with
// the encrypt feature in a temporary directory, loop-mounted. `mount -o
// loop` sets autoclear, so unmounting also frees the loop device.
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { findMount } from '../../kernel/index.js';
import type { CleanupStack } from './cleanup.js';
import { runTool } from './tools.js';

export interface ScratchFilesystem {
  /** The image file: what is really on the disk. */
  image: string;
  mountpoint: string;
  /** The loop device. */
  device: string;
}

export async function makeScratchFilesystem(workdir: string, sizeMiB: number, cleanup: CleanupStack): Promise<ScratchFilesystem> {
  const dir = await mkdtemp(join(workdir, 'fscrypt-local-smoke-'));
  cleanup.push(`remove ${dir}`, () => rm(dir, { recursive: true, force: true }));
  const image = join(dir, 'ext4.img');
  const mountpoint = join(dir, 'mnt');
  await mkdir(mountpoint, { mode: 0o700 });
  await runTool('mkfs.ext4', ['-q', '-F', '-b', '4096', '-O', 'encrypt', image, `${sizeMiB}M`]);
  await runTool('mount', ['-o', 'loop', image, mountpoint]);
  cleanup.push(`unmount ${mountpoint}`, () => unmount(mountpoint));
  const mount = await findMount(mountpoint);
  return { image, mountpoint, device: mount?.source ?? 'a loop device' };
}

async function unmount(mountpoint: string): Promise<void> {
  try {
    await runTool('umount', [mountpoint]);
  } catch {
    // Something still holds it (a shell's cwd): detach it now, it goes when released.
    await runTool('umount', ['-l', mountpoint]);
  }
}
