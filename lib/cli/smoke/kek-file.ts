// The KEK smoke's slot is initialized with: 32 fresh random bytes in a 0600
// file in a 0700 temporary directory, overwritten and deleted afterwards.
// The bytes live in a Buffer only until they are written, then are wiped.
import { randomFillSync } from 'node:crypto';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { allocSecret, wipe } from '../../keys/index.js';
import type { CleanupStack } from './cleanup.js';

const KEK_SIZE = 32;

export async function makeKekFile(workdir: string, cleanup: CleanupStack): Promise<string> {
  const dir = await mkdtemp(join(workdir, 'fscrypt-local-smoke-kek-'));
  const path = join(dir, 'kek');
  cleanup.push(`remove the KEK file ${path}`, () => destroyKekFile(path, dir));
  const kek = allocSecret(KEK_SIZE);
  try {
    randomFillSync(kek);
    const handle = await open(path, 'wx', 0o600);
    try {
      await handle.writeFile(kek);
      await handle.sync();
    } finally {
      await handle.close();
    }
  } finally {
    wipe(kek);
  }
  return path;
}

async function destroyKekFile(path: string, dir: string): Promise<void> {
  const handle = await open(path, 'r+').catch(() => undefined);
  if (handle) {
    try {
      await handle.write(Buffer.alloc(KEK_SIZE), 0, KEK_SIZE, 0);
      await handle.sync();
    } finally {
      await handle.close();
    }
  }
  await rm(dir, { recursive: true, force: true });
}
