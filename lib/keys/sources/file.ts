// The `file` key source: a 32-byte KEK in a file (typically a mounted
// Kubernetes Secret) makes a `raw_key` protector, the exact protector the
// stock tool unlocks with `fscrypt unlock DIR --key=FILE`.
import { FscryptError } from '../../kernel/index.js';
import type { ProtectorData } from '../metadata-format.js';
import { readSecretFile, wipe } from '../secret.js';
import { unwrapKey, WRAPPING_KEY_SIZE, wrapKey } from '../wrap.js';
import type { KeySourceProvider, ProtectorRecord } from './provider.js';

/** Reads a KEK file: exactly 32 raw bytes, as `fscrypt --key=FILE` requires. */
export async function readKekFile(path: string): Promise<Buffer> {
  const kek = await readSecretFile(path, { what: 'KEK file', maxBytes: WRAPPING_KEY_SIZE });
  if (kek.length !== WRAPPING_KEY_SIZE) {
    const size = kek.length;
    wipe(kek);
    throw new FscryptError(
      `the KEK file '${path}' holds ${size} bytes; it must hold exactly ${WRAPPING_KEY_SIZE} raw bytes ` +
        '(make one with `head -c 32 /dev/urandom > FILE`; a base64 or hex text is not accepted)',
      { code: 'ERR_KEY_SOURCE', path },
    );
  }
  return kek;
}

export class FileKeySource implements KeySourceProvider {
  readonly kind = 'file';
  readonly source = 'raw_key';
  readonly description: string;

  constructor(readonly path: string) {
    this.description = `the KEK file '${path}'`;
  }

  async seal(protectorKey: Buffer, meta: { descriptor: string; name: string }): Promise<ProtectorRecord> {
    const kek = await readKekFile(this.path);
    try {
      const data: ProtectorData = { descriptor: meta.descriptor, source: 'raw_key', name: meta.name, uid: 0, wrappedKey: wrapKey(kek, protectorKey) };
      return { storage: 'fscrypt', data };
    } finally {
      wipe(kek);
    }
  }

  async unseal(record: ProtectorRecord): Promise<Buffer | null> {
    if (record.storage !== 'fscrypt' || record.data.source !== 'raw_key') return null;
    const kek = await readKekFile(this.path);
    try {
      return unwrapKey(kek, record.data.wrappedKey);
    } finally {
      wipe(kek);
    }
  }

  close(): void {}
}
