// lib/kernel: the typed view of the fscrypt UAPI.
export * from './api.js';
export * from './constants.js';
export { asFscryptError, FscryptError, isFscryptError } from './errors.js';
export type { ErrnoCode, FscryptErrorCode, FscryptErrorDetails, FscryptLocalCode } from './errors.js';
export { coreDumpsEnabled, disableCoreDumps } from './core-dumps.js';
export { tryLockExclusive } from './file-lock.js';
export { keyIdentifier } from './identifier.js';
export { OPEN_FLAGS, type OpenFlags } from './open-flags.js';
export { findMount, isWithin, parseMountInfo, readMountInfo, type MountInfo } from './mountinfo.js';
export { defaultPolicy, samePolicy, type Policy, type PolicyV1, type PolicyV2 } from './policy.js';
