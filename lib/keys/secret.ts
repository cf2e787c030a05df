// Secret bytes: where they live and how they die. Every key, KEK and
// passphrase in lib/keys is held in a Buffer from allocSecret(), which has its
// own ArrayBuffer (never a slice of Node's shared 8 KiB pool, where a copy
// could outlive the wipe), and is zeroed in a `finally` by its owner.
//
// That ArrayBuffer is made explicitly, outside the V8 heap. A typed array of
// up to 64 bytes created by length (`new Uint8Array(32)`, and so
// Buffer.allocUnsafeSlow(32)) keeps its bytes *inside* the V8 heap: the
// garbage collector copies it whenever it moves the object, and the first
// time native code needs its address V8 copies it out again; every such copy
// left behind is unreachable and cannot be wiped. An ArrayBuffer's backing
// store never moves (test/keys/memory.test.ts finds the difference).
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { FscryptError } from '../kernel/index.js';
import type { KeysWarningHandler } from './warnings.js';

/** A zero-filled Buffer with its own memory, outside Node's Buffer pool. */
export function allocSecret(size: number): Buffer {
  return Buffer.from(new ArrayBuffer(size)); // zero-filled by V8
}

/** A copy of `bytes` in a fresh secret Buffer. */
export function copySecret(bytes: Uint8Array): Buffer {
  const copy = allocSecret(bytes.length);
  copy.set(bytes);
  return copy;
}

/** Zeroes every given buffer (undefined and null are skipped). */
export function wipe(...buffers: (Uint8Array | ArrayBuffer | undefined | null)[]): void {
  for (const b of buffers) {
    if (b === undefined || b === null) continue;
    if (b instanceof ArrayBuffer) new Uint8Array(b).fill(0);
    else b.fill(0);
  }
}

export interface SecretFileLimits {
  /** What the file holds, for error messages ("KEK file", "passphrase file"). */
  what: string;
  /** Largest accepted size in bytes. */
  maxBytes: number;
  /** What a larger file is told (default: the largest size accepted). */
  rule?: string;
}

function trustedOwner(uid: number): boolean {
  return uid === 0 || uid === process.geteuid?.();
}

/**
 * Reads a small secret file (a KEK or a passphrase, typically a mounted
 * Kubernetes Secret, whose path is a symlink chain: symlinks are followed)
 * straight into a secret Buffer. The size is checked before and during the
 * read, so a huge or growing file is refused without being read. Errors name
 * the file and never contain its bytes.
 *
 * Whoever can write the file chooses the key: a file owned by another user
 * (who can chmod it at will) or writable by group or others is refused, for
 * reading as much as for creating, since a KEK an attacker planted wraps a
 * new protector key under a key the attacker knows. A file every user can
 * read is a leaked key waiting to happen, but is what a Kubernetes Secret
 * volume gives without `defaultMode`: a warning, not a refusal.
 */
export async function readSecretFile(path: string, limits: SecretFileLimits, warn?: KeysWarningHandler): Promise<Buffer> {
  let handle;
  try {
    // O_NONBLOCK: a FIFO given as the path must not hang a hook holding the slot lock.
    // (Symlinks are followed: Kubernetes mounts Secret files as symlinks.)
    handle = await open(path, constants.O_RDONLY | constants.O_NOCTTY | constants.O_NONBLOCK);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'EIO';
    throw new FscryptError(`cannot read the ${limits.what} '${path}': ${code}`, { code: 'ERR_KEY_SOURCE', path, cause: error });
  }
  let buffer: Buffer | undefined;
  try {
    const stat = await handle.stat();
    if (!stat.isFile()) {
      throw new FscryptError(`the ${limits.what} '${path}' is not a regular file`, { code: 'ERR_KEY_SOURCE', path });
    }
    const mode = (stat.mode & 0o7777).toString(8).padStart(4, '0');
    if (!trustedOwner(stat.uid)) {
      throw new FscryptError(
        `refusing the ${limits.what} '${path}': it is owned by uid ${stat.uid}, who can change the key in it. To fix: chown root:root '${path}'; chmod 600 '${path}'`,
        { code: 'ERR_KEY_SOURCE', path },
      );
    }
    if (stat.mode & 0o022) {
      throw new FscryptError(
        `refusing the ${limits.what} '${path}': other users can write to it (mode ${mode}) and so choose the key. To fix: chmod 600 '${path}'`,
        { code: 'ERR_KEY_SOURCE', path },
      );
    }
    if (stat.mode & 0o004 && warn !== undefined) {
      warn({
        code: 'FSCRYPT_LOCAL_SECRET_FILE_READABLE',
        path,
        message: `the ${limits.what} '${path}' can be read by every user on this host (mode ${mode}). To fix: chmod 600 '${path}' (a Kubernetes Secret volume: defaultMode: 0400)`,
      });
    }
    if (stat.size > limits.maxBytes) {
      throw new FscryptError(`the ${limits.what} '${path}' holds ${stat.size} bytes; ${limits.rule ?? `at most ${limits.maxBytes} are accepted`}`, {
        code: 'ERR_KEY_SOURCE',
        path,
      });
    }
    // One spare byte detects a file that grew after fstat.
    buffer = allocSecret(limits.maxBytes + 1);
    let length = 0;
    for (;;) {
      const { bytesRead } = await handle.read(buffer, length, buffer.length - length, length);
      if (bytesRead === 0) break;
      length += bytesRead;
      if (length > limits.maxBytes) {
        throw new FscryptError(`the ${limits.what} '${path}' holds more than ${limits.maxBytes} bytes; ${limits.rule ?? 'it grew while being read'}`, {
          code: 'ERR_KEY_SOURCE',
          path,
        });
      }
    }
    const result = copySecret(buffer.subarray(0, length));
    return result;
  } finally {
    wipe(buffer);
    await handle.close();
  }
}
