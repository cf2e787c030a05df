// lib/volume: the volume lifecycle hooks, free of Kubernetes.
export { erase, type EraseResult } from './erase.js';
export type { HookOptions, ProgressEvent, Volume } from './hook-options.js';
export { lock, type LockOptions, type LockResult } from './lock.js';
export { prepare, type PrepareOptions } from './prepare.js';
export { reconcile, type ReconcileReport } from './reconcile.js';
export { recycle, type RecycleResult } from './recycle.js';
export { initSlot, isSlot, openSlotProtector, resolveVolume, rotateKeySource, slotStatus, type InitSlotOptions, type SlotInfo, type SlotStatus } from './slot.js';
export { defaultTrash } from './trash.js';
export { unlock, type TargetOptions, type UnlockResult } from './unlock.js';
export { findBlockers, describeBlockers, type Blocker } from './blockers.js';
export { removeTree, type RemoveProgress, type RemoveTreeResult } from './tree-remover.js';
export { TrashCollector, type TrashStatus } from './tree-remover-trash.js';
