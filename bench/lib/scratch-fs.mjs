// A scratch ext4 filesystem with the encrypt feature on a loop device, in a
// fresh temp directory, made the way the tests make theirs
// (test/fixtures/system/scratch-fs.ts). Nothing outside that directory is touched,
// and it is unmounted and deleted on exit or on a signal. Keys added to it
// vanish with the unmount.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { onCleanup } from './cleanup.mjs';

function run(command, args) {
  return execFileSync(command, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function isMountpoint(path) {
  try {
    run('findmnt', ['--mountpoint', path]);
    return true;
  } catch {
    return false;
  }
}

/** Makes and mounts the filesystem. Returns { mountpoint, dir, cleanup }. */
export function makeScratchExt4({ sizeMiB = 256, mkfsArgs = [] } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'fscrypt-local-bench-'));
  const image = join(dir, 'fs.img');
  const mountpoint = join(dir, 'mnt');
  mkdirSync(mountpoint);
  const cleanup = onCleanup(() => {
    if (isMountpoint(mountpoint)) {
      try {
        run('umount', [mountpoint]);
      } catch {
        run('umount', ['-l', mountpoint]); // still busy: detach now, freed when idle
      }
    }
    // Never recurse into a filesystem that is still mounted.
    if (isMountpoint(mountpoint)) {
      process.stderr.write(`bench: ${mountpoint} is still mounted; left ${dir} in place\n`);
      return;
    }
    rmSync(dir, { recursive: true, force: true });
  });
  run('mkfs.ext4', ['-q', '-F', '-b', '4096', '-O', 'encrypt', ...mkfsArgs, image, `${sizeMiB}M`]);
  run('mount', ['-o', 'loop', image, mountpoint]);
  return { mountpoint, dir, cleanup };
}
