// lib/volume: the volume lifecycle hooks, free of Kubernetes. This barrel is
// for the package's own layers (CLI, agent); the package's public API is
// lib/index.ts.
export { claim, type ClaimResult } from './claim.js';
export { erase, type EraseResult } from './erase.js';
export { HOOK_STEPS, type HookName, type HookOptions, type ProgressEvent, type StepName, type Volume } from './hook-options.js';
export { adminLock, lock, type LockOptions, type LockResult } from './lock.js';
export { prepare, type PrepareOptions } from './prepare.js';
export { reconcile, type ReconcileOptions, type ReconcileReport } from './reconcile.js';
export { recycle, type RecycleResult } from './recycle.js';
export {
  initSlot,
  isSlot,
  openSlotProtector,
  resolveVolume,
  rotateKeySource,
  slotStatus,
  type InitSlotOptions,
  type RotateOptions,
  type SlotInfo,
  type SlotStatus,
} from './slot.js';
export { defaultTrash } from './trash.js';
export { adminUnlock, unlock, type TargetOptions, type UnlockResult } from './unlock.js';
export { findBlockers, describeBlockers, type Blocker } from './blockers.js';
export { removeTree, type RemoveProgress, type RemoveTreeResult } from './tree-remover.js';
export { TrashCollector, type TrashStatus } from './tree-remover-trash.js';
export { LIBUV_DEFAULT_THREADPOOL_SIZE, SERVICE_THREADPOOL_SIZE, threadPoolSize, threadPoolWarning } from './thread-pool.js';
export { verifiedEvidence, type VolumeEvidence } from './verify.js';
export { foreignEntries } from './slot-foreign.js';
export { isMountPoint } from './mounts-location.js';
// A service that keeps protectors open (the agent) makes itself non-dumpable first.
export { coreDumpsEnabled, disableCoreDumps } from '../kernel/index.js';
