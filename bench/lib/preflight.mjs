// Checks a benchmark makes before touching anything, each failing with a
// message that says what to do.
import { existsSync } from 'node:fs';
import { spawnSync } from 'node:child_process';

/** A failed precondition: printed as one message, exit status 2, no stack. */
export class PreconditionError extends Error {}

export function requireRoot(bench) {
  if (process.getuid?.() !== 0) {
    throw new PreconditionError(`${bench} must run as root: it mounts a scratch filesystem and adds keys to its keyring (try sudo)`);
  }
}

export function requireExt4Encryption() {
  if (!existsSync('/sys/fs/ext4/features/encryption')) {
    throw new PreconditionError('this kernel has no ext4 encryption (/sys/fs/ext4/features/encryption is missing); boot a kernel with CONFIG_FS_ENCRYPTION=y');
  }
}

/** True if `command` can be run (found on PATH). */
export function hasCommand(command) {
  return spawnSync('sh', ['-c', 'command -v "$1"', 'sh', command], { stdio: 'ignore' }).status === 0;
}

export function requireCommand(command, debianPackage) {
  if (!hasCommand(command)) {
    throw new PreconditionError(`${command} is not installed (apt-get install ${debianPackage})`);
  }
}
