// What every lifecycle hook accepts, and the volume it acts on.
import type { Blocker } from './blockers.js';
import type { TrashCollector } from './tree-remover-trash.js';

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
  | { hook: string; kind: 'step'; step: string }
  | { hook: string; kind: 'busy'; attempt: number; blockers: Blocker[] }
  | { hook: string; kind: 'note'; message: string };

export interface HookOptions {
  /** Progress of long work: steps, busy files being waited for, notes. */
  onProgress?(event: ProgressEvent): void;
  /**
   * Called after each durable step, by name (e.g. 'prepare:policy-set').
   * The crash tests throw or kill the process here.
   */
  onStep?(step: string): void | Promise<void>;
  /** How long lock waits for busy files before failing with ERR_BUSY (default 30 s). */
  busyTimeoutMs?: number;
  /** How long to wait for another process's hook on the slot (default 60 s). */
  lockTimeoutMs?: number;
  /** Where erase sends retired generations for background deletion (default: a process-wide collector). */
  trash?: TrashCollector;
}

/** Reports a finished step to both observers. */
export async function step(hook: string, name: string, options: HookOptions): Promise<void> {
  const full = `${hook}:${name}`;
  options.onProgress?.({ hook, kind: 'step', step: full });
  await options.onStep?.(full);
}
