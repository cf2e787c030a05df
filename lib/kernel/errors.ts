// The one error class of fscrypt-local. The native addon constructs it for
// every failed system call (see native/addon.cc), so callers can branch on
// `code` whatever layer the failure came from, and the message always says
// what the failure means for fscrypt and what to do about it.
import { getSystemErrorMap } from 'node:util';

/**
 * Codes for failures that are not an errno. Each means exactly one thing, so
 * a caller (the CLI's exit codes, the CSI's gRPC codes) maps each with one
 * table; docs/errors.md lists them with what to do.
 */
export type FscryptLocalCode =
  /** Bad input, refused before anything was done. */
  | 'ERR_INVALID_ARG'
  /** A metadata file (key metadata, slot state) is corrupt, foreign or of the wrong kind. */
  | 'ERR_BAD_METADATA'
  /** The key source does not open this slot's protector. */
  | 'ERR_WRONG_KEY'
  /** The key source cannot be used (file unreadable or of the wrong form, KMS plugin unreachable). */
  | 'ERR_KEY_SOURCE'
  /** The kernel or filesystem cannot do fscrypt. */
  | 'ERR_NOT_SUPPORTED'
  /** A path is not an initialized slot (no slot state). */
  | 'ERR_NOT_INITIALIZED'
  /** A slot root is not a mount point: not a slot, or its disk is not mounted (any more). */
  | 'ERR_NOT_MOUNTPOINT'
  /** The slot has no volume: prepare it. */
  | 'ERR_NO_VOLUME'
  /** The volume named is not the slot's current one (erased or replaced). */
  | 'ERR_NOT_CURRENT'
  /** A hook on the slot was interrupted half-way: reconcile finishes it. */
  | 'ERR_INTERRUPTED'
  /** Refused because the volume is in use: published at a target, or unlocked by an admin. */
  | 'ERR_PUBLISHED'
  /** The key is only incompletely removed: files inside the volume are still open. */
  | 'ERR_FILES_BUSY'
  /** Another process's hook held the slot for longer than the lock timeout. */
  | 'ERR_SLOT_LOCKED'
  /** The caller's AbortSignal fired (deadline or cancel) before the hook changed anything. */
  | 'ERR_ABORTED'
  /** A target holds a mount that is not this volume (or is this volume with the other read-only setting). */
  | 'ERR_FOREIGN_MOUNT'
  /** A directory or file the slot state does not know sits where a hook must create one. */
  | 'ERR_FOREIGN_ENTRY'
  /** mount(8) or umount(8) failed for a reason other than a busy target. */
  | 'ERR_MOUNT_FAILED'
  /** The kernel's mount table changed while it was being read: retry. */
  | 'ERR_MOUNT_TABLE'
  /** A path would lead out of the slot, through a symlink, or to something that is not what the metadata says. */
  | 'ERR_UNSAFE_PATH'
  /** Deleting a retired generation's ciphertext in the background failed (harmless without its key). */
  | 'ERR_CLEANUP'
  /** An object was used after close(). */
  | 'ERR_CLOSED';

/** errno names this project explains; any other errno keeps its own name. */
export type ErrnoCode =
  | 'ENOENT' | 'ENOTDIR' | 'EISDIR' | 'ENOTEMPTY' | 'EEXIST' | 'EOPNOTSUPP'
  | 'ENOTTY' | 'ENOKEY' | 'EACCES' | 'EPERM' | 'EINVAL' | 'ENODATA'
  | 'ENOPKG' | 'EROFS' | 'EDQUOT' | 'EKEYREJECTED' | 'EBADMSG' | 'EOVERFLOW'
  | 'EFAULT' | 'EBUSY' | 'ELOOP' | 'ENAMETOOLONG' | 'EXDEV' | 'ENXIO' | 'EIO'
  | 'ENOSPC';

export type FscryptErrorCode = FscryptLocalCode | ErrnoCode | (string & {});

export interface FscryptErrorDetails {
  code?: FscryptErrorCode;
  /** Negative errno, as in Node's fs errors. */
  errno?: number;
  syscall?: string;
  /** The ioctl that failed, e.g. 'FS_IOC_SET_ENCRYPTION_POLICY'. */
  ioctl?: string;
  path?: string;
  cause?: unknown;
}

// Linux errnos that libuv has no name for, or whose libuv text misleads here
// (errno 95 is "operation not supported on socket" in libuv).
const LINUX_ERRNOS: ReadonlyMap<number, readonly [string, string]> = new Map([
  [61, ['ENODATA', 'no data available']],
  [65, ['ENOPKG', 'package not installed']],
  [74, ['EBADMSG', 'bad message']],
  [75, ['EOVERFLOW', 'value too large for defined data type']],
  [87, ['EUSERS', 'too many users']],
  [95, ['EOPNOTSUPP', 'operation not supported']],
  [122, ['EDQUOT', 'disk quota exceeded']],
  [126, ['ENOKEY', 'required key not available']],
  [127, ['EKEYEXPIRED', 'key has expired']],
  [128, ['EKEYREVOKED', 'key has been revoked']],
  [129, ['EKEYREJECTED', 'key was rejected by service']],
]);

function errnoName(errno: number): readonly [string, string] {
  const own = LINUX_ERRNOS.get(-errno);
  if (own) return own;
  const uv = getSystemErrorMap().get(errno);
  return uv ?? [`E${-errno}`, `unknown error ${-errno}`];
}

const SET_POLICY = 'FS_IOC_SET_ENCRYPTION_POLICY';
const ADD_KEY = 'FS_IOC_ADD_ENCRYPTION_KEY';

type Explanation = { meaning: string; remedy?: string };

/** What an errno means for fscrypt, given where it came from. */
function explain(code: string, syscall: string | undefined, ioctl: string | undefined): Explanation | undefined {
  switch (code) {
    case 'ENOTEMPTY':
      if (ioctl === SET_POLICY) {
        return {
          meaning: 'a policy can only be set on an empty directory',
          remedy: 'create a new empty directory, encrypt it, then copy the data in',
        };
      }
      return undefined;
    case 'EEXIST':
      if (ioctl === SET_POLICY) {
        return {
          meaning: 'the directory already has a different encryption policy',
          remedy: 'a policy cannot be changed: use a new directory, or set the policy it already has',
        };
      }
      return undefined;
    case 'EOPNOTSUPP':
      return {
        meaning: 'the filesystem does not have the encrypt feature enabled, or the kernel lacks CONFIG_FS_ENCRYPTION',
        remedy: 'enable it with `tune2fs -O encrypt <device>` (ext4; the device is `findmnt -no SOURCE --target <path>`)',
      };
    case 'ENOTTY':
      return {
        meaning: 'this filesystem type does not support fscrypt',
        remedy: 'use ext4 or f2fs made with the encrypt feature (`mkfs.ext4 -O encrypt <device>`)',
      };
    case 'ENOKEY':
      if (syscall === 'open') {
        return { meaning: 'the file is locked: its key is not in the filesystem keyring', remedy: 'unlock it first' };
      }
      if (ioctl === SET_POLICY) {
        return { meaning: 'the policy names a key this user has not added', remedy: 'add the key with addKey() first and use the identifier it returns' };
      }
      if (ioctl === ADD_KEY) {
        return { meaning: 'no fscrypt-provisioning key with that key_id is visible to this process' };
      }
      return {
        meaning: 'the key is not in the filesystem keyring (never added, already removed, or held only by other users)',
      };
    case 'EACCES':
      if (ioctl === SET_POLICY) {
        return { meaning: 'only the owner of the directory (or CAP_FOWNER) may encrypt it', remedy: 'run as the owner or as root' };
      }
      if (ioctl !== undefined && (ioctl === ADD_KEY || ioctl.endsWith('_ALL_USERS'))) {
        return { meaning: 'this operation needs CAP_SYS_ADMIN (v1 keys, or removing the key for all users)', remedy: 'run as root' };
      }
      return { meaning: 'permission denied' };
    case 'EPERM':
      if (ioctl === SET_POLICY) {
        return {
          meaning: 'the root directory of a filesystem cannot be encrypted',
          remedy: 'encrypt a new subdirectory of the filesystem instead',
        };
      }
      return { meaning: 'operation not permitted', remedy: 'run as root' };
    case 'EINVAL':
      if (ioctl === SET_POLICY) {
        return { meaning: 'the kernel rejected the policy (version, modes, flags or reserved bits, or v1 on a casefolded directory)' };
      }
      if (ioctl === ADD_KEY) {
        return { meaning: 'the kernel rejected the key (size or flags)' };
      }
      return undefined;
    case 'ENODATA':
      return { meaning: 'the file is not encrypted' };
    case 'ELOOP':
      if (syscall === 'open') {
        return {
          meaning: 'the path is a symbolic link, which noFollow does not follow (or it resolves through too many symbolic links)',
          remedy: 'pass the path of the file or directory itself; follow a link only if no one else can replace it',
        };
      }
      return undefined;
    case 'ENOTDIR':
      return { meaning: 'not a directory: an encryption policy can only be set on a directory' };
    case 'ENOPKG':
      return {
        meaning: "the kernel lacks the crypto algorithm this policy needs (dmesg says 'Missing crypto API support')",
        remedy: 'use AES_256_XTS contents with AES_256_CTS filenames, or load the missing crypto module',
      };
    case 'EROFS':
      return {
        meaning: 'the filesystem is mounted read-only (ext4 remounts read-only after an I/O error with errors=remount-ro)',
        remedy: 'check `dmesg`: after an I/O error ext4 has aborted its journal, so unmount the filesystem, run fsck, and mount it again (a plain remount read-write fails); if it was mounted read-only on purpose, remount it read-write',
      };
    case 'EIO':
      return { meaning: 'the device reported an I/O error', remedy: 'check `dmesg` and the disk; the slot may need fsck or replacing' };
    case 'ENOSPC':
      return { meaning: 'the filesystem is full', remedy: 'free space on it (retired generations are deleted in the background; see `fscrypt-local status`)' };
    case 'ELOOP':
      return { meaning: 'the path is a symbolic link, which is never followed here', remedy: 'replace the symlink with the real file or directory' };
    case 'EISDIR':
      return { meaning: 'a directory is where a file was expected', remedy: 'move the directory out of the way' };
    case 'ENXIO':
      return { meaning: 'a FIFO or socket is where a file was expected', remedy: 'remove it; only regular files belong there' };
    case 'EDQUOT':
      return {
        meaning: "this user's kernel key quota is exhausted",
        remedy: 'remove unused keys, or raise kernel.keys.maxkeys / maxbytes (root_maxkeys / root_maxbytes for root)',
      };
    case 'EKEYREJECTED':
      return { meaning: 'the keyring key is not an fscrypt-provisioning key of the matching specifier type' };
    case 'EOVERFLOW':
      return { meaning: 'the policy is of a newer version than this build understands' };
    default:
      return undefined;
  }
}

export class FscryptError extends Error {
  readonly code: FscryptErrorCode;
  readonly errno?: number;
  readonly syscall?: string;
  readonly ioctl?: string;
  readonly path?: string;

  /**
   * With a message: an error of this project (`details.code` required).
   * Without one: a failed system call, described from `details.errno`,
   * `syscall`, `ioctl` and `path` (this is how native/addon.cc builds it).
   */
  constructor(message: string | undefined, details: FscryptErrorDetails) {
    const errnoInfo = details.errno === undefined ? undefined : errnoName(details.errno);
    const code = details.code ?? errnoInfo?.[0] ?? 'ERR_INVALID_ARG';
    super(message ?? FscryptError.describe(code, errnoInfo?.[1] ?? '', details), details.cause === undefined ? undefined : { cause: details.cause });
    this.code = code;
    if (details.errno !== undefined) this.errno = details.errno;
    if (details.syscall !== undefined) this.syscall = details.syscall;
    if (details.ioctl !== undefined) this.ioctl = details.ioctl;
    if (details.path !== undefined) this.path = details.path;
  }

  /** The fscrypt meaning of a system error, then the remedy. */
  private static describe(code: string, text: string, details: FscryptErrorDetails): string {
    const where = details.ioctl ?? details.syscall ?? 'call';
    const path = details.path === undefined ? '' : ` '${details.path}'`;
    const explanation = explain(code, details.syscall, details.ioctl);
    let message = `${code}: ${explanation?.meaning ?? text}, ${where}${path}`;
    if (explanation?.remedy) message += `. To fix: ${explanation.remedy}`;
    return message;
  }

  /** An error for bad input, raised before any system call is made. */
  static invalidArgument(message: string, path?: string): FscryptError {
    return new FscryptError(message, path === undefined ? { code: 'ERR_INVALID_ARG' } : { code: 'ERR_INVALID_ARG', path });
  }
}

Object.defineProperty(FscryptError.prototype, 'name', {
  value: 'FscryptError',
  enumerable: false,
  writable: true,
  configurable: true,
});

/**
 * `error` as a FscryptError: a Node system error (fs, child_process) becomes
 * one with its errno, syscall, path and this project's explanation; anything
 * else (a programming error) is returned unchanged.
 */
export function asFscryptError(error: unknown): unknown {
  if (error instanceof FscryptError) return error;
  const e = error as NodeJS.ErrnoException | null;
  if (e !== null && typeof e === 'object' && typeof e.errno === 'number' && typeof e.code === 'string' && e.code.startsWith('E')) {
    const details: FscryptErrorDetails = { errno: e.errno < 0 ? e.errno : -e.errno, cause: error };
    if (e.syscall !== undefined) details.syscall = e.syscall;
    if (e.path !== undefined) details.path = e.path;
    return new FscryptError(undefined, details);
  }
  return error;
}

/** True for a FscryptError with one of the given codes. */
export function isFscryptError(error: unknown, ...codes: FscryptErrorCode[]): error is FscryptError {
  return error instanceof FscryptError && (codes.length === 0 || codes.includes(error.code));
}
