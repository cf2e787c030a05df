// Making a discovered mount point a slot the agent serves: refuse it if it
// holds someone else's files (they would sit in plaintext beside volumes
// that look protected, and the agent never adopts data), initialise it with
// the class's key source (idempotent), open its protector, run the start-up
// reconcile (a reboot dropped every mount and key; a kill -9 left a hook
// half-done), and make sure it has a volume.
//
// A refusal is for an operator to resolve (move the files away, fix the
// class's key source), so the slot is not retried until its directory or the
// config changes; a key source that cannot be reached now (a KMS plugin
// down) is retried with backoff.
import { isFscryptError, type FscryptError } from '../../kernel/errors.js';
import type { OpenProtector } from '../../keys/open-protector.js';
import type { KeySourceSpec } from '../../keys/key-source.js';
import { foreignEntries, initSlot, isSlot, openSlotProtector, prepare, reconcile, slotStatus, type HookOptions, type TrashCollector } from '../../volume/index.js';

export class SlotRefused extends Error {
  override readonly name = 'SlotRefused';
  constructor(
    message: string,
    /** What would change the answer: the slot's contents (checked again at every discovery) or the class's key source (a config change). */
    readonly retryOn: 'contents' | 'config',
  ) {
    super(message);
  }
}

export interface SlotSetup {
  descriptor: string;
  protector: OpenProtector;
  /** What start-up reconcile changed and warned about. */
  actions: string[];
  warnings: string[];
  /** The slot was initialised by this call. */
  created: boolean;
  /** A first volume was prepared by this call. */
  prepared: boolean;
}

export interface SlotSetupOptions {
  trash: TrashCollector;
  signal?: AbortSignal;
  /** Told after each durable step of the slot's initialisation and its first prepare (the agent's crash tests kill it there). */
  onStep?: HookOptions['onStep'];
}

export async function setUpSlot(root: string, source: KeySourceSpec, options: SlotSetupOptions): Promise<SlotSetup> {
  const foreign = await foreignEntries(root);
  if (foreign.length > 0) {
    const shown = foreign.slice(0, 5).map((name) => JSON.stringify(name)).join(', ') + (foreign.length > 5 ? ` and ${foreign.length - 5} more` : '');
    throw new SlotRefused(
      `${root} holds files that are not fscrypt-local's (${shown}): the agent never adopts a directory with data in it, which would stay unencrypted. Move them away (or use another directory), and the slot is picked up at the next discovery`,
      'contents',
    );
  }
  const initialised = await isSlot(root);
  let created = false;
  try {
    created = (await initSlot(root, source, options.onStep ? { onStep: options.onStep } : {})).created;
  } catch (error) {
    throw refusalFor(error, root, initialised) ?? error;
  }
  let protector: OpenProtector;
  try {
    protector = await openSlotProtector(root, source);
  } catch (error) {
    throw refusalFor(error, root, true) ?? error;
  }
  try {
    const report = await reconcile(root, protector, { trash: options.trash, ...(options.signal ? { signal: options.signal } : {}) });
    let prepared = false;
    if ((await slotStatus(root)).volume === null) {
      await prepare(root, protector, { trash: options.trash, ...(options.signal ? { signal: options.signal } : {}), ...(options.onStep ? { onStep: options.onStep } : {}) });
      prepared = true;
    }
    return { descriptor: protector.descriptor, protector, actions: report.actions, warnings: report.warnings, created, prepared };
  } catch (error) {
    protector.close();
    throw error;
  }
}

/** A failure that only an operator can resolve, as a refusal; undefined for one worth retrying. */
function refusalFor(error: unknown, root: string, initialised: boolean): SlotRefused | undefined {
  if (isFscryptError(error, 'ERR_WRONG_KEY')) {
    return new SlotRefused(
      `${root} belongs to another key source: its protector does not open with this class's keySource (${(error as FscryptError).message}). Point the class at the key source the slot was made with, or erase the slot by hand`,
      'config',
    );
  }
  if (isFscryptError(error, 'ERR_BAD_METADATA') || isFscryptError(error, 'ERR_FOREIGN_ENTRY')) {
    return new SlotRefused(`${root}${initialised ? '' : ' (not yet a slot)'} has metadata the agent will not use: ${(error as Error).message}`, 'contents');
  }
  if (isFscryptError(error, 'ERR_NOT_SUPPORTED')) return new SlotRefused((error as Error).message, 'contents');
  return undefined;
}
