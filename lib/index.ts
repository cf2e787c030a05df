// fscrypt-local: the package's public API. Only what is exported here is
// covered by semver; the layers' own barrels (lib/kernel, lib/keys,
// lib/volume) also serve the package's CLI and agent, and are internal.
// README.md documents every export.

// lib/kernel: the typed fscrypt ioctls.
export {
  addKey,
  addKeyById,
  getKeyStatus,
  getNonce,
  getPolicy,
  probe,
  removeKey,
  setPolicy,
  type AddKeyOptions,
  type KeyStatus,
  type ProbeResult,
  type RemoveKeyOptions,
  type RemoveKeyResult,
} from './kernel/api.js';
export {
  ENCRYPTION_MODES,
  KEY_DESCRIPTOR_SIZE,
  KEY_IDENTIFIER_SIZE,
  MAX_KEY_SIZE,
  MIN_KEY_SIZE,
  NONCE_SIZE,
  PADDING_FLAGS,
  POLICY_FLAGS,
  VALID_MODE_PAIRS,
  type EncryptionMode,
  type KeyStatusName,
  type Padding,
  type PolicyFlag,
} from './kernel/constants.js';
export { FscryptError, isFscryptError, type ErrnoCode, type FscryptErrorCode, type FscryptErrorDetails, type FscryptLocalCode } from './kernel/errors.js';
export { keyIdentifier } from './kernel/identifier.js';
export { defaultPolicy, samePolicy, type Policy, type PolicyV1, type PolicyV2 } from './kernel/policy.js';

// lib/keys: key sources and the open protector a slot's hooks use.
export { describeKeySource, parseKeySource, type Argon2Costs, type KeySourceSpec } from './keys/key-source.js';
export type { OpenProtector } from './keys/open-protector.js';
export { DEFAULT_ARGON2_COSTS } from './keys/sources/passphrase.js';

// lib/volume: slots and the volume lifecycle hooks.
export { erase, type EraseResult } from './volume/hooks/erase.js';
export { HOOK_STEPS, type HookName, type HookOptions, type ProgressEvent, type StepName, type Volume } from './volume/hooks/hook-options.js';
export { adminLock, lock, type LockOptions, type LockResult } from './volume/hooks/lock.js';
export { prepare, type PrepareOptions } from './volume/hooks/prepare.js';
export { reconcile, type ReconcileOptions, type ReconcileReport } from './volume/hooks/reconcile.js';
export { recycle, type RecycleResult } from './volume/hooks/recycle.js';
export {
  initSlot,
  openSlotProtector,
  resolveVolume,
  rotateKeySource,
  slotStatus,
  type InitSlotOptions,
  type RotateOptions,
  type SlotInfo,
  type SlotStatus,
} from './volume/slot/slot.js';
export type { VolumePhase } from './volume/slot/slot-state.js';
export { TrashCollector, type TrashCollectorOptions, type TrashStatus } from './volume/trash/tree-remover-trash.js';
export { adminUnlock, unlock, type TargetOptions, type UnlockResult } from './volume/hooks/unlock.js';
export type { Blocker } from './volume/mounts/blockers.js';
