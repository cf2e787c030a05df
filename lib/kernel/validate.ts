// Input checks made before any system call: a bad argument never reaches the
// kernel, and the error says what a good one looks like.
import {
  KEY_DESCRIPTOR_SIZE,
  KEY_IDENTIFIER_SIZE,
  KEY_SPEC_TYPE,
  MAX_KEY_SIZE,
  MIN_KEY_SIZE,
} from './constants.js';
import { FscryptError } from './errors.js';

const PATH_MAX = 4096;

export function assertPath(path: unknown, what = 'path'): asserts path is string {
  if (typeof path !== 'string' || path.length === 0) {
    throw FscryptError.invalidArgument(`${what} must be a non-empty string, got ${describe(path)}`);
  }
  if (path.includes('\0')) {
    throw FscryptError.invalidArgument(`${what} must not contain a NUL byte`);
  }
  if (Buffer.byteLength(path) >= PATH_MAX) {
    throw FscryptError.invalidArgument(`${what} is longer than PATH_MAX (${PATH_MAX} bytes)`);
  }
}

export interface OpenOptions {
  /**
   * Do not follow a symbolic link in the last component of the path
   * (O_NOFOLLOW): a link fails with ELOOP instead of being followed, so a
   * name that was checked cannot be swapped for a link to somewhere else.
   * Links in earlier components are still followed.
   */
  noFollow?: boolean;
}

const OPEN_OPTION_KEYS: ReadonlySet<string> = new Set(['noFollow']);

/**
 * The options of a call that opens a path. Unknown keys are refused: a
 * misspelt `nofollow` silently following links would defeat its purpose.
 */
export function parseOpenOptions(options: unknown): { noFollow: boolean } {
  if (options === undefined) return { noFollow: false };
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw FscryptError.invalidArgument(`options must be an object such as { noFollow: true }, got ${describe(options)}`);
  }
  for (const key of Object.keys(options)) {
    if (!OPEN_OPTION_KEYS.has(key)) {
      throw FscryptError.invalidArgument(`unknown option ${describeName(key)}; the only option is noFollow`);
    }
  }
  const { noFollow } = options as OpenOptions;
  if (noFollow !== undefined && typeof noFollow !== 'boolean') {
    throw FscryptError.invalidArgument(`options.noFollow must be a boolean, got ${describe(noFollow)}`);
  }
  return { noFollow: noFollow === true };
}

/** A raw master key: 16 to 64 bytes (use 64 random bytes for AES-256 policies). */
export function assertKey(key: unknown): asserts key is Uint8Array {
  if (!(key instanceof Uint8Array)) {
    throw FscryptError.invalidArgument(`key must be a Buffer or Uint8Array, got ${describe(key)}`);
  }
  if (key.length < MIN_KEY_SIZE || key.length > MAX_KEY_SIZE) {
    throw FscryptError.invalidArgument(
      `key must be ${MIN_KEY_SIZE} to ${MAX_KEY_SIZE} bytes, got ${key.length}; use 64 random bytes (crypto.randomFillSync(Buffer.alloc(64)))`,
    );
  }
}

export interface KeyRef {
  type: (typeof KEY_SPEC_TYPE)[keyof typeof KEY_SPEC_TYPE];
  bytes: Buffer;
}

/**
 * A key named by its v2 identifier (32 hex digits) or its v1 descriptor
 * (16 hex digits), as returned by addKey() and shown in getPolicy().
 */
export function parseKeyRef(value: unknown, what = 'identifier'): KeyRef {
  if (typeof value === 'string') {
    if (value.length === KEY_IDENTIFIER_SIZE * 2 && isHex(value)) {
      return { type: KEY_SPEC_TYPE.identifier, bytes: Buffer.from(value, 'hex') };
    }
    if (value.length === KEY_DESCRIPTOR_SIZE * 2 && isHex(value)) {
      return { type: KEY_SPEC_TYPE.descriptor, bytes: Buffer.from(value, 'hex') };
    }
  }
  throw FscryptError.invalidArgument(
    `${what} must be a v2 key identifier (32 hex digits) or a v1 key descriptor (16 hex digits), got ${describe(value)}`,
  );
}

/** Exactly `size` bytes as lower-case hex. */
export function parseHex(value: unknown, size: number, what: string): Buffer {
  if (typeof value !== 'string' || value.length !== size * 2 || !isHex(value)) {
    throw FscryptError.invalidArgument(`${what} must be ${size * 2} hex digits, got ${describe(value)}`);
  }
  return Buffer.from(value, 'hex');
}

function isHex(value: string): boolean {
  return /^[0-9a-fA-F]*$/.test(value);
}

/**
 * A short, secret-free description of a bad value for an error message.
 * Strings are described by length only: a passphrase or a hex key passed in
 * the wrong place must not end up in a message or a log.
 */
export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (value instanceof Uint8Array) return `${value.constructor.name} of ${value.length} bytes`;
  if (typeof value === 'string') return value.length === 0 ? 'an empty string' : `a string of ${value.length} characters`;
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'undefined') return String(value);
  return typeof value;
}

/** Like describe(), but shows short enum-like names (a mode, a flag), which are never secret. */
export function describeName(value: unknown): string {
  return typeof value === 'string' && /^[A-Za-z0-9_]{1,32}$/.test(value) ? JSON.stringify(value) : describe(value);
}
