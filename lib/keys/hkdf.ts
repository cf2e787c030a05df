// HKDF (RFC 5869) written out with HMAC, for keys that must not linger.
//
// crypto.hkdfSync copies its input key into a KeyObject, which keeps the key
// in native memory until the garbage collector happens to free the object
// (test/keys/memory.test.ts found a KEK, a protector key and a policy key
// there after close()). An Hmac frees its state, cleansed by OpenSSL, as soon
// as digest() returns, and every intermediate value here is a secret Buffer
// that is wiped before returning. The output is a secret Buffer the caller
// wipes.
import { createHmac } from 'node:crypto';
import { allocSecret, copySecret, wipe } from './secret.js';

type HashName = 'sha256' | 'sha512';
const HASH_SIZE: Readonly<Record<HashName, number>> = { sha256: 32, sha512: 64 };

/** HMAC of the concatenated parts, into a secret Buffer of our own. */
function hmac(hash: HashName, key: Uint8Array, parts: Uint8Array[]): Buffer {
  const h = createHmac(hash, key);
  for (const part of parts) h.update(part);
  const digest = h.digest();
  try {
    return copySecret(digest);
  } finally {
    wipe(digest);
  }
}

/** HKDF-Extract then HKDF-Expand: `length` bytes (at most 255 hash blocks). */
export function hkdf(hash: HashName, ikm: Uint8Array, salt: Uint8Array, info: Uint8Array, length: number): Buffer {
  const size = HASH_SIZE[hash];
  if (!Number.isInteger(length) || length < 1 || length > 255 * size) throw new RangeError(`HKDF cannot produce ${length} bytes`);
  // An absent salt is a zero salt of the hash's length.
  const prk = hmac(hash, salt.length > 0 ? salt : allocSecret(size), [ikm]);
  const out = allocSecret(length);
  let previous: Buffer | undefined;
  try {
    for (let block = 1, done = 0; done < length; block++) {
      const next = hmac(hash, prk, previous === undefined ? [info, Uint8Array.of(block)] : [previous, info, Uint8Array.of(block)]);
      wipe(previous);
      previous = next;
      next.copy(out, done, 0, Math.min(size, length - done));
      done += size;
    }
    return out;
  } catch (error) {
    wipe(out);
    throw error;
  } finally {
    wipe(prk, previous);
  }
}

// fscrypt's key identifier: HKDF-SHA512(key, salt = 64 zero bytes,
// info = "fscrypt\0" || HKDF_CONTEXT_KEY_IDENTIFIER (1)), 16 bytes. The same
// value as lib/kernel's keyIdentifier (test/keys/format.test.ts checks), for
// the paths in lib/keys that hold a policy key.
const IDENTIFIER_INFO = Buffer.from('fscrypt\0\x01', 'latin1');
const IDENTIFIER_SALT = Buffer.alloc(64);

export function policyKeyIdentifier(key: Uint8Array): string {
  const out = hkdf('sha512', key, IDENTIFIER_SALT, IDENTIFIER_INFO, 16);
  try {
    return out.toString('hex');
  } finally {
    wipe(out);
  }
}
