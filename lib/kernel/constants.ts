// Numbers and names of the fscrypt UAPI (include/uapi/linux/fscrypt.h).

/** Encryption modes, by the kernel's names (FSCRYPT_MODE_*). */
export const ENCRYPTION_MODES = {
  AES_256_XTS: 1,
  AES_256_CTS: 4,
  AES_128_CBC: 5,
  AES_128_CTS: 6,
  SM4_XTS: 7,
  SM4_CTS: 8,
  ADIANTUM: 9,
  AES_256_HCTR2: 10,
} as const;

export type EncryptionMode = keyof typeof ENCRYPTION_MODES;

/**
 * (contents, filenames) pairs the kernel accepts, per policy version
 * (fs/crypto/policy.c: fscrypt_valid_enc_modes_v1/_v2).
 */
export const VALID_MODE_PAIRS: Readonly<Record<1 | 2, readonly (readonly [EncryptionMode, EncryptionMode])[]>> = {
  1: [
    ['AES_256_XTS', 'AES_256_CTS'],
    ['AES_128_CBC', 'AES_128_CTS'],
    ['ADIANTUM', 'ADIANTUM'],
  ],
  2: [
    ['AES_256_XTS', 'AES_256_CTS'],
    ['AES_256_XTS', 'AES_256_HCTR2'],
    ['AES_128_CBC', 'AES_128_CTS'],
    ['SM4_XTS', 'SM4_CTS'],
    ['ADIANTUM', 'ADIANTUM'],
  ],
};

/** Filename padding, stored in the low two bits of the policy flags. */
export const PADDING_FLAGS = { 4: 0x0, 8: 0x1, 16: 0x2, 32: 0x3 } as const;
export type Padding = keyof typeof PADDING_FLAGS;
export const PADDING_MASK = 0x3;

/** Policy flags other than padding (FSCRYPT_POLICY_FLAG_*). */
export const POLICY_FLAGS = {
  DIRECT_KEY: 0x4,
  IV_INO_LBLK_64: 0x8,
  IV_INO_LBLK_32: 0x10,
} as const;
export type PolicyFlag = keyof typeof POLICY_FLAGS;

/** Policy version bytes as the kernel stores them (v1 is 0 on the wire). */
export const POLICY_VERSION_BYTE = { 1: 0, 2: 2 } as const;

/** fscrypt_key_specifier.type */
export const KEY_SPEC_TYPE = { descriptor: 1, identifier: 2 } as const;

/** FS_IOC_GET_ENCRYPTION_KEY_STATUS: status */
export const KEY_STATUS = {
  1: 'absent',
  2: 'present',
  3: 'incompletely-removed',
} as const;
export type KeyStatusName = (typeof KEY_STATUS)[keyof typeof KEY_STATUS];

/** FS_IOC_GET_ENCRYPTION_KEY_STATUS: status_flags */
export const KEY_STATUS_FLAG_ADDED_BY_SELF = 0x1;

/** FS_IOC_REMOVE_ENCRYPTION_KEY: removal_status_flags */
export const KEY_REMOVAL_STATUS_FLAG_FILES_BUSY = 0x1;
export const KEY_REMOVAL_STATUS_FLAG_OTHER_USERS = 0x2;

/** Sizes in bytes. */
export const MIN_KEY_SIZE = 16;
export const MAX_KEY_SIZE = 64;
export const KEY_DESCRIPTOR_SIZE = 8;
export const KEY_IDENTIFIER_SIZE = 16;
export const NONCE_SIZE = 16;

/** statfs f_type values of filesystems worth naming in a probe result. */
export const FILESYSTEM_MAGIC: ReadonlyMap<number, string> = new Map([
  [0xef53, 'ext4'],
  [0xf2f52010, 'f2fs'],
  [0x24051905, 'ubifs'],
  [0x00c36400, 'ceph'],
  [0x01021994, 'tmpfs'],
  [0x58465342, 'xfs'],
  [0x9123683e, 'btrfs'],
  [0x794c7630, 'overlay'],
  [0x6969, 'nfs'],
  [0x65735546, 'fuse'],
  [0x9fa0, 'proc'],
  [0x62656572, 'sysfs'],
]);
