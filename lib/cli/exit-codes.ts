// What the fscrypt-local command exits with, and which failure maps to which
// code. This is the one place error codes (FscryptError's, Node's errno
// names, commander's) become exit codes, so scripts can branch on them.
import type { FscryptLocalCode } from '../kernel/index.js';

/** Exit codes, documented in `fscrypt-local --help` and docs/cli.md. */
export const EXIT = {
  OK: 0,
  /** The operation failed for another reason (the message says why and what to do). */
  FAILED: 1,
  /** Bad command line: unknown command or option, missing argument, bad --key-source syntax. */
  USAGE: 2,
  /** `smoke`: at least one check failed. */
  SMOKE_FAILED: 3,
  /** Files or the slot are in use: busy files, published targets, another process holding the slot. */
  BUSY: 4,
  /** The key source does not open this slot's protector. */
  WRONG_KEY: 5,
  /** The key source cannot be used: file unreadable or of the wrong size, KMS plugin unreachable. */
  KEY_SOURCE: 6,
  /** The filesystem or kernel cannot do fscrypt (no encrypt feature, tmpfs, no CONFIG_FS_ENCRYPTION). */
  NOT_SUPPORTED: 7,
  /** The slot or volume is missing or not in the state the command needs (not initialized, not mounted, no volume, erased, interrupted). */
  STATE: 8,
  /** Refused for safety: corrupt or foreign metadata, a foreign mount or directory in the way, a path that is not what the metadata says. */
  UNSAFE: 9,
  /** The slot's disk: read-only (after an I/O error?), failing, or full. */
  DISK: 10,
  /** Interrupted (SIGINT / SIGTERM). smoke cleans up what it made; the lifecycle commands leave state that reconcile finishes. */
  INTERRUPTED: 130,
} as const;

export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

/** A mistake on the command line, found before anything was done. */
export class UsageError extends Error {
  readonly code = 'ERR_USAGE';
}
Object.defineProperty(UsageError.prototype, 'name', { value: 'UsageError' });

// The one table from error codes to exit codes (docs/errors.md). Every code
// of this project must have a row (the type says so); errnos a command can
// meet follow; anything else is FAILED.
export const EXIT_FOR_CODE = {
  ERR_INVALID_ARG: EXIT.USAGE,
  ERR_PUBLISHED: EXIT.BUSY,
  ERR_FILES_BUSY: EXIT.BUSY,
  ERR_SLOT_LOCKED: EXIT.BUSY,
  ERR_WRONG_KEY: EXIT.WRONG_KEY,
  ERR_KEY_SOURCE: EXIT.KEY_SOURCE,
  ERR_NOT_SUPPORTED: EXIT.NOT_SUPPORTED,
  ERR_NOT_INITIALIZED: EXIT.STATE,
  ERR_NOT_MOUNTPOINT: EXIT.STATE,
  ERR_NO_VOLUME: EXIT.STATE,
  ERR_NOT_CURRENT: EXIT.STATE,
  ERR_INTERRUPTED: EXIT.STATE,
  ERR_BAD_METADATA: EXIT.UNSAFE,
  ERR_UNSAFE_PATH: EXIT.UNSAFE,
  ERR_FOREIGN_MOUNT: EXIT.UNSAFE,
  ERR_FOREIGN_ENTRY: EXIT.UNSAFE,
  ERR_ABORTED: EXIT.FAILED,
  ERR_MOUNT_FAILED: EXIT.FAILED,
  ERR_MOUNT_TABLE: EXIT.FAILED,
  ERR_CLEANUP: EXIT.FAILED,
  ERR_CLOSED: EXIT.FAILED,
} as const satisfies Record<FscryptLocalCode, ExitCode>;

const BY_CODE: ReadonlyMap<string, ExitCode> = new Map<string, ExitCode>([
  ...Object.entries(EXIT_FOR_CODE),
  ['ERR_USAGE', EXIT.USAGE],
  ['EBUSY', EXIT.BUSY],
  ['EOPNOTSUPP', EXIT.NOT_SUPPORTED],
  ['ENOTTY', EXIT.NOT_SUPPORTED],
  ['ENOENT', EXIT.STATE],
  ['ENOTDIR', EXIT.STATE],
  ['ELOOP', EXIT.UNSAFE],
  ['EROFS', EXIT.DISK],
  ['EIO', EXIT.DISK],
  ['ENOSPC', EXIT.DISK],
]);

/** The `code` of any error (FscryptError, Node system error, UsageError), or a generic one. */
export function errorCode(error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && code.length > 0 ? code : 'ERR_FAILED';
}

export function exitCodeFor(error: unknown): ExitCode {
  return BY_CODE.get(errorCode(error)) ?? EXIT.FAILED;
}

/** The exit-code table for help texts. */
export const EXIT_CODES_HELP = `Exit codes:
  0    ok
  1    the operation failed (the message says why and what to do)
  2    usage error: bad command, option, argument or --key-source syntax
  3    smoke: at least one check failed
  4    busy: files in use, volume published, or slot held by another process
  5    wrong key: the key source does not open this slot
  6    key source unusable: file unreadable or wrong size, KMS plugin unreachable
  7    not supported: filesystem without the encrypt feature, tmpfs, old kernel
  8    state: slot not initialized or not mounted, no volume, path not found,
       volume erased, a hook interrupted (run reconcile)
  9    refused for safety: corrupt or foreign metadata, a foreign mount or
       directory in the way, a symlink or replaced volume directory
  10   disk: the slot's filesystem is read-only, failing (I/O error) or full
  130  interrupted (SIGINT/SIGTERM)`;
