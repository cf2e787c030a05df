// Waiting for the background deletion of retired generations (the
// ciphertext crypto-erase left behind), with progress, or leaving it to the
// agent (--no-wait): deletion is resumable, so stopping half-way is safe.
import { FscryptError } from '../kernel/index.js';
import { TrashCollector } from '../volume/index.js';
import type { Progress } from './progress.js';

export interface TrashOutcome {
  /** Everything queued was deleted. */
  deleted: boolean;
  files: number;
  dirs: number;
  /** Left in the slot's trash for the agent (or the next erase / reconcile) to delete. */
  left: string[];
}

/** A collector for one command run, reporting to `progress`. */
export function commandTrash(progress: Progress): TrashCollector {
  return new TrashCollector({ onProgress: progress.trash });
}

/**
 * Waits for the deletion (or, with `wait` false, stops it where it is).
 * Deletion failures are errors: the ciphertext is harmless without its key,
 * but the admin must know the disk space was not given back.
 */
export async function finishTrash(trash: TrashCollector, progress: Progress, wait: boolean): Promise<TrashOutcome> {
  if (!wait) {
    const pending = trash.status();
    const left = [...(pending.current ? [pending.current.tree] : []), ...pending.queued];
    await trash.close();
    return { deleted: left.length === 0, files: pending.removed.files, dirs: pending.removed.dirs, left };
  }
  await trash.idle();
  progress.clear();
  const status = trash.status();
  const failure = status.failures[0];
  if (failure) {
    throw new FscryptError(
      `deleting the old ciphertext in ${failure.tree} failed: ${failure.error.message}. It is harmless without its key; ` +
        'run `fscrypt-local reconcile <slot>` to retry, or remove it by hand',
      { code: 'ERR_CLEANUP', path: failure.tree },
    );
  }
  if (status.skippedMounts.length > 0) {
    throw new FscryptError(`the old generation holds mount points that were left in place: ${status.skippedMounts.join(', ')}. Unmount them, then run \`fscrypt-local reconcile <slot>\``, {
      code: 'ERR_CLEANUP',
    });
  }
  return { deleted: true, files: status.removed.files, dirs: status.removed.dirs, left: [] };
}
