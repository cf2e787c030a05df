// What every lifecycle hook accepts, the volume it acts on, and the named
// steps it reports.
import type { Blocker } from '../mounts/blockers.js';
import type { TrashCollector } from '../trash/tree-remover-trash.js';

/** An encrypted volume directory in a slot. */
export interface Volume {
  /** The slot root (a mount point holding .fscrypt/). */
  slot: string;
  /** vol-<generation> */
  name: string;
  /** The volume directory: the PV path and the bind-mount source. */
  path: string;
  generation: number;
  /** The v2 key identifier of the volume's policy key. */
  identifier: string;
}

export type ProgressEvent =
  | { hook: string; kind: 'step'; step: StepName }
  | { hook: string; kind: 'busy'; attempt: number; blockers: Blocker[] }
  | { hook: string; kind: 'note'; message: string };

export interface HookOptions {
  /** Progress of long work: steps, busy files being waited for, notes. An observer that throws is ignored. */
  onProgress?(event: ProgressEvent): void;
  /**
   * Called after each durable step, by name (e.g. 'prepare:policy-set'),
   * and awaited. The crash tests kill the process here. An observer that
   * throws or rejects is ignored: it can never break a hook.
   */
  onStep?(step: StepName): void | Promise<void>;
  /**
   * Cancels the call, e.g. `AbortSignal.timeout(ms)` for a deadline (kubelet
   * gives a CSI call 2 minutes). It bounds the wait for the slot, counted
   * from when the call is made (queued behind other hooks of this process
   * included), and the wait for busy files; a hook that has started
   * changing the slot runs to its end, so that nothing is left half-done.
   * An aborted call fails with ERR_ABORTED.
   */
  signal?: AbortSignal;
  /** How long lock waits for busy files before failing with ERR_FILES_BUSY (default 30 s). */
  busyTimeoutMs?: number;
  /** How long to wait for the slot, from the call (default 60 s); then ERR_SLOT_LOCKED. */
  lockTimeoutMs?: number;
  /** Where erase sends retired generations for background deletion (default: a process-wide collector). */
  trash?: TrashCollector;
}

// Every durable step of every hook, by hook. The crash tests kill a process
// after each step listed here, and a test checks that a full run of each
// hook reports exactly these, so a step added to the code without being
// listed here fails to type-check, and one listed but never reached fails
// that test.
const BUILD_STEPS = [
  'prepare:key-added',
  'prepare:dir-created',
  'prepare:policy-set',
  'prepare:probe-file-checked',
  'prepare:policy-verified',
  'prepare:metadata-committed',
  'prepare:key-removed',
] as const;
const RETIRE_STEPS = ['erase:key-removed', 'erase:policy-destroyed', 'erase:moved-to-trash'] as const;

export const HOOK_STEPS = {
  'init-slot': ['init-slot:dirs-created', 'init-slot:protector-created', 'init-slot:state-written'],
  prepare: ['prepare:intent-recorded', ...BUILD_STEPS, 'prepare:ready'],
  unlock: ['unlock:target-recorded', 'unlock:key-added', 'unlock:mounted'],
  'admin-unlock': ['admin-unlock:recorded', 'admin-unlock:key-added'],
  lock: ['lock:unmounted', 'lock:key-removed', 'lock:recorded'],
  'admin-lock': ['admin-lock:unmounted', 'admin-lock:key-removed', 'admin-lock:recorded'],
  erase: ['erase:intent-recorded', ...RETIRE_STEPS, 'erase:done'],
  // recycle runs the erase and prepare halves concurrently between its own two steps.
  recycle: ['recycle:intent-recorded', ...BUILD_STEPS, ...RETIRE_STEPS, 'recycle:ready'],
  // reconcile rolls an interrupted erase forward (recovery.ts, finishRetiring), reporting the erase's steps as it goes.
  reconcile: ['reconcile:recovered', 'reconcile:targets-forgotten', 'reconcile:key-added', 'reconcile:key-removed', ...RETIRE_STEPS, 'erase:done'],
} as const;

export type HookName = keyof typeof HOOK_STEPS;
export type StepName = (typeof HOOK_STEPS)[HookName][number];

/** Sends a progress event; an observer that throws is ignored. */
export function emit(options: HookOptions, event: ProgressEvent): void {
  try {
    options.onProgress?.(event);
  } catch {
    // Observers report; they never decide a hook's outcome.
  }
}

/** Reports a finished durable step to both observers. */
export async function step(name: StepName, options: HookOptions): Promise<void> {
  emit(options, { hook: name.slice(0, name.indexOf(':')), kind: 'step', step: name });
  try {
    await options.onStep?.(name);
  } catch {
    // As above: a step observer cannot roll a hook back or leave it half-done.
  }
}
