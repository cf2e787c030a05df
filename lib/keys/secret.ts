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
// store never moves (test/keys-memory.test.ts finds the difference).
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { FscryptError } from '../kernel/index.js';

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
}

/**
 * Reads a small secret file (a KEK or a passphrase, typically a mounted
 * Kubernetes Secret, whose path is a symlink chain: symlinks are followed)
 * straight into a secret Buffer. The size is checked before and during the
 * read, so a huge or growing file is refused without being read. Errors name
 * the file and never contain its bytes.
 */
export async function readSecretFile(path: string, limits: SecretFileLimits): Promise<Buffer> {
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
    if (stat.size > limits.maxBytes) {
      throw new FscryptError(`the ${limits.what} '${path}' holds ${stat.size} bytes; at most ${limits.maxBytes} are accepted`, {
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
        throw new FscryptError(`the ${limits.what} '${path}' holds more than ${limits.maxBytes} bytes`, { code: 'ERR_KEY_SOURCE', path });
      }
    }
    const result = copySecret(buffer.subarray(0, length));
    return result;
  } finally {
    wipe(buffer);
    await handle.close();
  }
}
