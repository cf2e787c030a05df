// The typed fscrypt kernel API: every function validates its input, then
// issues exactly one ioctl family through the native addon, off the event
// loop.
import { access } from 'node:fs/promises';
import { native } from './binding.js';
import {
  FILESYSTEM_MAGIC,
  KEY_REMOVAL_STATUS_FLAG_FILES_BUSY,
  KEY_REMOVAL_STATUS_FLAG_OTHER_USERS,
  KEY_SPEC_TYPE,
  KEY_STATUS,
  KEY_STATUS_FLAG_ADDED_BY_SELF,
  type KeyStatusName,
} from './constants.js';
import { FscryptError, isFscryptError } from './errors.js';
import { findMount } from './mountinfo.js';
import { decodePolicy, encodePolicy, type Policy } from './policy.js';
import { assertKey, assertPath, describe, parseHex, parseKeyRef, parseOpenOptions, type OpenOptions } from './validate.js';

export type { OpenOptions } from './validate.js';

export interface ProbeResult {
  supported: boolean;
  /** Filesystem type, e.g. "ext4", "tmpfs". */
  filesystem: string;
  /** Why fscrypt cannot be used here (only when unsupported). */
  reason?: string;
  /** What to do about it (only when unsupported). */
  remedy?: string;
}

/**
 * Can fscrypt be used on the filesystem holding `path`? Asks the kernel with
 * ADD_ENCRYPTION_KEY(NULL), which never touches a key: EFAULT = supported,
 * EOPNOTSUPP = the filesystem lacks the encrypt feature, ENOTTY = the
 * filesystem type cannot do it.
 */
export async function probe(path: string): Promise<ProbeResult> {
  assertPath(path);
  const [raw, mount] = await Promise.all([native().probe(path), findMount(path).catch(() => undefined)]);
  const filesystem = mount?.fsType ?? FILESYSTEM_MAGIC.get(raw.fsType) ?? `0x${raw.fsType.toString(16)}`;
  const device = mount?.source ?? '<device>';
  switch (raw.addKeyErrno) {
    case -14: // EFAULT: the kernel got as far as reading the argument
      return { supported: true, filesystem };
    case -95: // EOPNOTSUPP
      if (filesystem.startsWith('ext') && !(await exists('/sys/fs/ext4/features/encryption'))) {
        return {
          supported: false,
          filesystem,
          reason: 'the kernel was built without ext4 encryption (CONFIG_FS_ENCRYPTION)',
          remedy: 'boot a kernel with CONFIG_FS_ENCRYPTION=y',
        };
      }
      return {
        supported: false,
        filesystem,
        reason: `the ${filesystem} filesystem on ${device} does not have the encrypt feature enabled`,
        remedy:
          filesystem === 'f2fs'
            ? `unmount it and run \`fsck.f2fs -O encrypt ${device}\``
            : `run \`tune2fs -O encrypt ${device}\` (safe on a mounted ext4 filesystem)`,
      };
    case -25: // ENOTTY
      return {
        supported: false,
        filesystem,
        reason: `${filesystem} does not support fscrypt`,
        remedy: 'use ext4 or f2fs made with the encrypt feature, e.g. `mkfs.ext4 -O encrypt <device>`',
      };
    default: {
      const error = new FscryptError(undefined, { errno: raw.addKeyErrno, syscall: 'ioctl', ioctl: 'FS_IOC_ADD_ENCRYPTION_KEY', path });
      return { supported: false, filesystem, reason: error.message };
    }
  }
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

/**
 * The encryption policy of a file or directory, or null if it is not
 * encrypted. With `noFollow`, a symbolic link at `path` is refused (ELOOP)
 * instead of followed.
 */
export async function getPolicy(path: string, options?: OpenOptions): Promise<Policy | null> {
  assertPath(path);
  const { noFollow } = parseOpenOptions(options);
  try {
    return decodePolicy(await native().getPolicy(path, noFollow));
  } catch (error) {
    if (isFscryptError(error, 'ENODATA')) return null;
    throw error;
  }
}

/**
 * Sets an encryption policy on an empty directory. Setting the policy a
 * directory already has succeeds, even when it is no longer empty. With
 * `noFollow`, a symbolic link at `dir` is refused (ELOOP) instead of followed.
 */
export async function setPolicy(dir: string, policy: Policy, options?: OpenOptions): Promise<void> {
  assertPath(dir, 'dir');
  const raw = encodePolicy(policy);
  const { noFollow } = parseOpenOptions(options);
  await native().setPolicy(dir, raw.version, raw.contents, raw.filenames, raw.flags, raw.log2DataUnitSize, raw.key, noFollow);
}

export interface AddKeyOptions {
  /**
   * Add the key as a v1 key under this descriptor (16 hex digits) instead of
   * as a v2 key. Needs CAP_SYS_ADMIN. Legacy; prefer v2.
   */
  descriptor?: string;
}

/**
 * Adds a raw master key (16 to 64 bytes; use 64 random bytes) to the keyring
 * of the filesystem mounted at `mountpoint`. Returns the key identifier the
 * kernel computed (32 hex digits), or the descriptor for a v1 key. Re-adding
 * a key this user already added is a no-op.
 */
export async function addKey(mountpoint: string, key: Uint8Array, options: AddKeyOptions = {}): Promise<string> {
  assertPath(mountpoint, 'mountpoint');
  assertKey(key);
  const [type, spec] = addKeySpecifier(options);
  return (await native().addKey(mountpoint, type, spec, key, 0)).toString('hex');
}

/**
 * Adds a key held in the kernel's keyrings as an "fscrypt-provisioning" key
 * (see add_key(2)), by its key serial number, so the raw key never enters
 * this process. Returns the identifier (or descriptor) as addKey() does.
 */
export async function addKeyById(mountpoint: string, keyId: number, options: AddKeyOptions = {}): Promise<string> {
  assertPath(mountpoint, 'mountpoint');
  if (!Number.isInteger(keyId) || keyId <= 0 || keyId > 0x7fffffff) {
    throw FscryptError.invalidArgument(`keyId must be a positive key serial number (see keyctl show), got ${describe(keyId)}`);
  }
  const [type, spec] = addKeySpecifier(options);
  return (await native().addKey(mountpoint, type, spec, null, keyId)).toString('hex');
}

function addKeySpecifier(options: AddKeyOptions): [number, Buffer | undefined] {
  if (options.descriptor === undefined) return [KEY_SPEC_TYPE.identifier, undefined];
  return [KEY_SPEC_TYPE.descriptor, parseHex(options.descriptor, 8, 'descriptor')];
}

export interface RemoveKeyOptions {
  /** Remove every user's claim (REMOVE_ENCRYPTION_KEY_ALL_USERS; needs CAP_SYS_ADMIN). */
  allUsers?: boolean;
}

export interface RemoveKeyResult {
  /**
   * Some files were still in use, so the key is only incompletely removed.
   * Close them (and unmount bind mounts from inside), then call again.
   */
  filesBusy: boolean;
  /** Other users still hold claims to the key, so it stays. */
  otherUsers: boolean;
}

/** Removes this user's claim to a key (or every claim, with allUsers). */
export async function removeKey(mountpoint: string, identifier: string, options: RemoveKeyOptions = {}): Promise<RemoveKeyResult> {
  assertPath(mountpoint, 'mountpoint');
  const ref = parseKeyRef(identifier);
  const flags = await native().removeKey(mountpoint, ref.type, ref.bytes, options.allUsers === true);
  return {
    filesBusy: (flags & KEY_REMOVAL_STATUS_FLAG_FILES_BUSY) !== 0,
    otherUsers: (flags & KEY_REMOVAL_STATUS_FLAG_OTHER_USERS) !== 0,
  };
}

export interface KeyStatus {
  status: KeyStatusName;
  /** This user holds a claim to the key. */
  addedBySelf: boolean;
  /** Number of users holding claims. */
  userCount: number;
}

/** Whether a key is in the filesystem keyring. */
export async function getKeyStatus(mountpoint: string, identifier: string): Promise<KeyStatus> {
  assertPath(mountpoint, 'mountpoint');
  const ref = parseKeyRef(identifier);
  const raw = await native().getKeyStatus(mountpoint, ref.type, ref.bytes);
  const status = KEY_STATUS[raw.status as keyof typeof KEY_STATUS];
  if (status === undefined) {
    throw new FscryptError(`the kernel reported key status ${raw.status}, which this version does not know`, {
      code: 'ERR_NOT_SUPPORTED',
      path: mountpoint,
    });
  }
  return { status, addedBySelf: (raw.statusFlags & KEY_STATUS_FLAG_ADDED_BY_SELF) !== 0, userCount: raw.userCount };
}

/**
 * The 16-byte nonce the kernel derived an encrypted file's key from. With
 * `noFollow`, a symbolic link at `path` is refused (ELOOP) instead of followed.
 */
export async function getNonce(path: string, options?: OpenOptions): Promise<Buffer> {
  assertPath(path);
  const { noFollow } = parseOpenOptions(options);
  return native().getNonce(path, noFollow);
}
