// The v2 key identifier, computed in userspace exactly as fs/crypto/keyring.c
// does, so an identifier can be known before the key is added and the
// kernel's answer can be checked.
import { hkdfSync } from 'node:crypto';
import { KEY_IDENTIFIER_SIZE } from './constants.js';
import { assertKey } from './validate.js';

const HKDF_SALT = Buffer.alloc(64); // fscrypt uses an all-zero salt
// "fscrypt\0" followed by HKDF_CONTEXT_KEY_IDENTIFIER (1).
const HKDF_INFO_KEY_IDENTIFIER = Buffer.from('fscrypt\0\x01', 'latin1');

/** HKDF-SHA512(key, salt = 64 zero bytes, info = "fscrypt\0" || 0x01), 16 bytes, as hex. */
export function keyIdentifier(key: Uint8Array): string {
  assertKey(key);
  return Buffer.from(hkdfSync('sha512', key, HKDF_SALT, HKDF_INFO_KEY_IDENTIFIER, KEY_IDENTIFIER_SIZE)).toString('hex');
}
