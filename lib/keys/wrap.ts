// Key wrapping and descriptors, bit for bit as google/fscrypt does them
// (crypto/crypto.go), so that the stock `fscrypt` tool and this library can
// unwrap each other's keys:
//   HKDF-SHA256(IKM = 32-byte wrapping key, no salt, no info) -> 64 bytes:
//     bytes 0..31 = AES-256-CTR key, bytes 32..63 = HMAC-SHA256 key;
//   a random 16-byte IV is the initial big-endian 128-bit counter;
//   hmac = HMAC-SHA256(authKey, IV || ciphertext), checked before decrypting.
import { createCipheriv, createDecipheriv, createHmac, hash, randomFillSync, timingSafeEqual } from 'node:crypto';
import { FscryptError } from '../kernel/index.js';
import { hkdf } from './hkdf.js';
import { allocSecret, copySecret, wipe } from './secret.js';

export const WRAPPING_KEY_SIZE = 32;
export const IV_SIZE = 16;
export const HMAC_SIZE = 32;
/** Size of a protector key (fscrypt's "internal key"). */
export const PROTECTOR_KEY_SIZE = 32;
/** Size of a policy key (the filesystem master key). */
export const POLICY_KEY_SIZE = 64;
export const SALT_SIZE = 16;

export interface WrappedKeyData {
  iv: Uint8Array;
  encryptedKey: Uint8Array;
  hmac: Uint8Array;
}

const EMPTY = Buffer.alloc(0);

/**
 * Splits a wrapping key into fscrypt's encryption and authentication keys:
 * HKDF-SHA256(IKM = wrapping key, no salt, no info) -> 64 bytes (hkdf.ts,
 * which, unlike crypto.hkdfSync, leaves no copy of the key behind).
 */
function stretch(wrappingKey: Uint8Array): { encKey: Buffer; authKey: Buffer } {
  if (wrappingKey.length !== WRAPPING_KEY_SIZE) {
    throw FscryptError.invalidArgument(`a wrapping key must be ${WRAPPING_KEY_SIZE} bytes, got ${wrappingKey.length}`);
  }
  const derived = hkdf('sha256', wrappingKey, EMPTY, EMPTY, 2 * WRAPPING_KEY_SIZE);
  try {
    return { encKey: copySecret(derived.subarray(0, 32)), authKey: copySecret(derived.subarray(32, 64)) };
  } finally {
    wipe(derived);
  }
}

function mac(authKey: Buffer, iv: Uint8Array, ciphertext: Uint8Array): Buffer {
  return createHmac('sha256', authKey).update(iv).update(ciphertext).digest();
}

/**
 * AES-256-CTR of `input` into a secret Buffer of our own.
 *
 * Decrypting, the input is masked first: Node's Cipher.update() writes its
 * output into a buffer one cipher block longer than the result, copies the
 * result into a second one and frees the first without zeroing it, so
 * whatever the cipher produces lingers in freed heap memory out of our reach.
 * CTR is an XOR with a keystream, so decrypting (ciphertext XOR R), with R
 * random, yields (plaintext XOR R): the copy Node leaves behind is a one-time
 * pad of the key, useless once R is wiped. Encrypting needs no mask: the
 * output is the ciphertext, which goes to disk anyway.
 */
function aesCtr(encKey: Buffer, iv: Uint8Array, input: Uint8Array, decrypt: boolean): Buffer {
  const mask = decrypt ? randomFillSync(allocSecret(input.length)) : undefined;
  const masked = mask === undefined ? undefined : allocSecret(input.length);
  if (mask !== undefined && masked !== undefined) for (let i = 0; i < input.length; i++) masked[i] = input[i]! ^ mask[i]!;
  const cipher = decrypt ? createDecipheriv('aes-256-ctr', encKey, iv) : createCipheriv('aes-256-ctr', encKey, iv);
  const out = cipher.update(masked ?? input);
  const tail = cipher.final(); // empty: CTR is a stream mode
  try {
    const result = allocSecret(input.length);
    out.copy(result, 0);
    tail.copy(result, out.length);
    if (mask !== undefined) for (let i = 0; i < result.length; i++) result[i] = result[i]! ^ mask[i]!;
    return result;
  } finally {
    wipe(out, tail, mask, masked);
  }
}

/** Wraps `secret` under a 32-byte wrapping key, with a fresh random IV. */
export function wrapKey(wrappingKey: Uint8Array, secret: Uint8Array): WrappedKeyData {
  const { encKey, authKey } = stretch(wrappingKey);
  try {
    const iv = randomFillSync(Buffer.alloc(IV_SIZE));
    // The ciphertext is not secret, but aesCtr() hands back a secret Buffer.
    const encryptedKey = aesCtr(encKey, iv, secret, false);
    return { iv, encryptedKey, hmac: mac(authKey, iv, encryptedKey) };
  } finally {
    wipe(encKey, authKey);
  }
}

/**
 * Unwraps a key, or returns null when the HMAC does not verify (a wrong
 * wrapping key, or altered data: the two cannot be told apart). Nothing is
 * decrypted before the HMAC has been checked. The caller wipes the result.
 */
export function unwrapKey(wrappingKey: Uint8Array, wrapped: WrappedKeyData): Buffer | null {
  if (wrapped.iv.length !== IV_SIZE || wrapped.hmac.length !== HMAC_SIZE || wrapped.encryptedKey.length === 0) {
    throw FscryptError.invalidArgument('malformed wrapped key data');
  }
  const { encKey, authKey } = stretch(wrappingKey);
  try {
    const expected = mac(authKey, wrapped.iv, wrapped.encryptedKey);
    if (!timingSafeEqual(expected, wrapped.hmac)) return null;
    return aesCtr(encKey, wrapped.iv, wrapped.encryptedKey, true);
  } finally {
    wipe(encKey, authKey);
  }
}

/**
 * fscrypt's descriptor of a key: hex of the first 8 bytes of
 * SHA-512(SHA-512(key)). Names protectors, and v1 policies.
 */
export function keyDescriptor(key: Uint8Array): string {
  // crypto.hash, not createHash: a Hash object keeps its digest state, which
  // still holds the key's bytes (a 32-byte key fills part of one SHA-512
  // block), until it is garbage-collected; the one-shot frees it at once.
  const inner = hash('sha512', key, 'buffer') as unknown as Buffer;
  try {
    return (hash('sha512', inner, 'buffer') as unknown as Buffer).subarray(0, 8).toString('hex');
  } finally {
    wipe(inner);
  }
}
