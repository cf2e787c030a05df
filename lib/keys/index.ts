// lib/keys: the key hierarchy (key source -> protector key -> policy keys)
// and its on-disk metadata, in google/fscrypt's format. See docs/keys.md.
export { checkKeySource, describeKeySource, parseKeySource, type Argon2Costs, type KeySourceSpec } from './key-source.js';
export { newPolicyKey, SlotKeys, type SlotKeysOptions } from './slot-keys.js';
export type { MetadataProblem } from './check.js';
export type { KeysWarning, KeysWarningCode, KeysWarningHandler } from './warnings.js';
export { allocSecret, wipe } from './secret.js';
export { POLICY_OPTIONS, type OpenProtector } from './open-protector.js';
export type { PolicyInfo, ProtectorInfo } from './slot-records.js';
export { ROTATION_STEPS, setRotationStepHook, type RotationStep } from './rotation.js';
export { DEFAULT_ARGON2_COSTS } from './sources/passphrase.js';
export { DEFAULT_KMS_TIMEOUT_MS } from './sources/kms-client.js';
export {
  FSCRYPT_CONF_PATH,
  fscryptConfProblem,
  renderFscryptConf,
  writeFscryptConf,
  type FscryptConfOptions,
  type FscryptConfResult,
} from './fscrypt-conf.js';
export { FSCRYPT_DIR, LOCAL_DIR, slotLayout, type SlotLayout } from './metadata-store.js';
