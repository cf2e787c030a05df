// The `file` key source: a 32-byte KEK in a file (typically a mounted
// Kubernetes Secret) makes a `raw_key` protector, the exact protector the
// stock tool unlocks with `fscrypt unlock DIR --key=FILE`.
import { FscryptError } from '../../kernel/index.js';
import type { ProtectorData } from '../metadata-format.js';
import { readSecretFile, wipe } from '../secret.js';
import type { KeysWarningHandler } from '../warnings.js';
import { unwrapKey, WRAPPING_KEY_SIZE, wrapKey } from '../wrap.js';
import type { KeySourceProvider, ProtectorRecord } from './provider.js';

/** How to make a KEK file: the remedy of every refusal. */
const MAKE_ONE = 'Make one with `head -c 32 /dev/urandom > kek; chmod 600 kek`';
const RULE = `a KEK is exactly ${WRAPPING_KEY_SIZE} raw bytes, not text. ${MAKE_ONE}`;

/**
 * True when the bytes are text: printable ASCII, tab, CR or LF only. A KEK
 * written as hex, base64 or a password (`openssl rand -hex 16 > kek` writes
 * 32 such bytes) has at most 6 bits of entropy per byte, or far fewer; 32
 * random bytes are all text with probability (98/256)^32, about 4e-14.
 */
function isText(bytes: Uint8Array): boolean {
  return bytes.every((b) => (b >= 0x20 && b <= 0x7e) || b === 0x09 || b === 0x0a || b === 0x0d);
}

/**
 * Reads a KEK file: exactly 32 raw bytes, as `fscrypt --key=FILE` requires,
 * in a file only root (or this user) can change (readSecretFile).
 *
 * `purpose` is 'seal' for a new protector (create, or the target of a
 * rotation): a text KEK is refused. Opening ('unseal') an existing protector
 * with one only warns: it was accepted before, and refusing it would lock the
 * slot, when the fix is to rotate to a proper KEK, which needs it to open.
 */
export async function readKekFile(path: string, purpose: 'seal' | 'unseal' = 'unseal', warn?: KeysWarningHandler): Promise<Buffer> {
  // Up to 96 bytes are read, to tell a hex or base64 text from other sizes.
  const kek = await readSecretFile(path, { what: 'KEK file', maxBytes: WRAPPING_KEY_SIZE + 64, rule: RULE }, warn);
  if (kek.length !== WRAPPING_KEY_SIZE) {
    const size = kek.length;
    const text = size > 0 && isText(kek);
    wipe(kek);
    throw new FscryptError(`the KEK file '${path}' holds ${size} bytes${text ? ' of text (hex, base64 or a password?)' : ''}; ${RULE}`, { code: 'ERR_KEY_SOURCE', path });
  }
  if (isText(kek)) {
    if (purpose === 'seal') {
      wipe(kek);
      throw new FscryptError(
        `the KEK file '${path}' holds 32 bytes of text (hex, base64 or a password?), not 32 random bytes: as a KEK it is far weaker than it looks. ${MAKE_ONE}`,
        { code: 'ERR_KEY_SOURCE', path },
      );
    }
    warn?.({
      code: 'FSCRYPT_LOCAL_TEXT_KEK',
      path,
      message: `the KEK file '${path}' holds 32 bytes of text, not 32 random bytes; new protectors refuse such a KEK. ${MAKE_ONE}, then rotate the slot to it (fscrypt-local rotate SLOT --key-source file:${path} --new-key-source file:NEW)`,
    });
  }
  return kek;
}

export class FileKeySource implements KeySourceProvider {
  readonly kind = 'file';
  readonly source = 'raw_key';
  readonly description: string;

  constructor(
    readonly path: string,
    private readonly warn?: KeysWarningHandler,
  ) {
    this.description = `the KEK file '${path}'`;
  }

  async seal(protectorKey: Buffer, meta: { descriptor: string; name: string }): Promise<ProtectorRecord> {
    const kek = await readKekFile(this.path, 'seal', this.warn);
    try {
      const data: ProtectorData = { descriptor: meta.descriptor, source: 'raw_key', name: meta.name, uid: 0, wrappedKey: wrapKey(kek, protectorKey) };
      return { storage: 'fscrypt', data };
    } finally {
      wipe(kek);
    }
  }

  async unseal(record: ProtectorRecord): Promise<Buffer | null> {
    if (record.storage !== 'fscrypt' || record.data.source !== 'raw_key') return null;
    const kek = await readKekFile(this.path, 'unseal', this.warn);
    try {
      return unwrapKey(kek, record.data.wrappedKey);
    } finally {
      wipe(kek);
    }
  }

  close(): void {}
}
