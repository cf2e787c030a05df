// lib/volume: the volume lifecycle hooks, free of Kubernetes. This barrel is
// for the package's own layers (CLI, agent); the package's public API is
// lib/index.ts.
export { claim, type ClaimResult } from './hooks/claim.js';
export { erase, type EraseResult } from './hooks/erase.js';
export { HOOK_STEPS, type HookName, type HookOptions, type ProgressEvent, type StepName, type Volume } from './hooks/hook-options.js';
export { adminLock, lock, type LockOptions, type LockResult } from './hooks/lock.js';
export { prepare, type PrepareOptions } from './hooks/prepare.js';
export { reconcile, type ReconcileOptions, type ReconcileReport } from './hooks/reconcile.js';
export { recycle, type RecycleResult } from './hooks/recycle.js';
export {
  initSlot,
  isSlot,
  openSlotProtector,
  resolveVolume,
  rotateKeySource,
  slotStatus,
  slotStatusBetweenHooks,
  slotStatusIfIdle,
  type IdleStatusOptions,
  type InitSlotOptions,
  type RotateOptions,
  type SlotInfo,
  type SlotStatus,
} from './slot/slot.js';
export { defaultTrash } from './trash/trash.js';
export { adminUnlock, unlock, type TargetOptions, type UnlockResult } from './hooks/unlock.js';
export { findBlockers, describeBlockers, type Blocker } from './mounts/blockers.js';
export { removeTree, type RemoveProgress, type RemoveTreeResult } from './trash/tree-remover.js';
export { TrashCollector, type TrashStatus } from './trash/tree-remover-trash.js';
export { LIBUV_DEFAULT_THREADPOOL_SIZE, SERVICE_THREADPOOL_SIZE, threadPoolSize, threadPoolWarning } from './thread-pool.js';
export { verifiedEvidence, type VolumeEvidence } from './slot/verify.js';
export { foreignEntries } from './slot/slot-foreign.js';
export { isMountPoint } from './mounts/mounts-location.js';
// A service that keeps protectors open (the agent) makes itself non-dumpable first.
export { coreDumpsEnabled, disableCoreDumps } from '../kernel/index.js';
