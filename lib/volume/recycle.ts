// recycle: the lifecycle's "PV Released, reclaim Delete" row in one call:
// crypto-erase the volume, prepare the next generation under a fresh key,
// and only then start deleting the old ciphertext, so that the deletion's
// disk traffic (thousands of unlinks for the journal to commit) does not
// slow the prepare the next tenant is waiting for.
import { FscryptError } from '../kernel/index.js';
import type { OpenProtector } from '../keys/index.js';
import { erase } from './erase.js';
import type { HookOptions, Volume } from './hook-options.js';
import { prepare, type PrepareOptions } from './prepare.js';
import { defaultTrash } from './trash.js';

export interface RecycleResult {
  /** The generation erased by this call; undefined if it was already gone. */
  erased?: string;
  /** The fresh generation, ready and locked. */
  next: Volume;
}

export async function recycle(volume: Volume, protector: OpenProtector, options: PrepareOptions = {}): Promise<RecycleResult> {
  const trash = options.trash ?? defaultTrash();
  const erased = await erase(volume, { ...options, deferDeletion: true } satisfies HookOptions);
  try {
    const next = await prepare(volume.slot, protector, options);
    return erased.erased === undefined ? { next } : { erased: erased.erased, next };
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    throw new FscryptError(
      `${volume.path} was erased, but preparing the next generation failed: ${message}. ` +
        `The slot has no volume until \`fscrypt-local prepare ${volume.slot} --key-source ...\` succeeds`,
      { code: (error as { code?: string }).code ?? 'ERR_STATE', path: volume.slot, cause: error },
    );
  } finally {
    if (erased.trash !== undefined) trash.add(erased.trash);
  }
}
