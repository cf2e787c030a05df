// Key removals that an unpublish could not finish: the last target was
// unmounted and removed, but files inside the volume were still open (a
// process on the host, a lazily unmounted mount), so the key is only
// incompletely removed. The unpublish answers OK (kubelet's part is done) and
// this retrier keeps removing the key, with backoff, until the kernel reports
// it absent, logging who holds the files on every attempt and listing every
// pending volume (CsiServer.pendingLocks()). The key is never left in the
// kernel silently.
//
// Each attempt is lib/volume's lock for a target that can never be published
// (a path inside the slot's own state directory: unlock refuses targets
// inside the slot), so it unmounts nothing and only does lock's last step:
// with no recorded target still mounted and no admin unlock, remove the key
// until ABSENT, then forget the unmounted targets. Locking with the old
// target path again would do the same, but would unmount that path if the
// same target were published again meanwhile. If the volume was published
// again (a new pod), lock finds a mounted target and leaves the key: the
// retry is over, the key is in use.
import { join } from 'node:path';
import { isFscryptError } from '../../kernel/errors.js';
import { describeBlockers, lock, type Blocker, type Volume } from '../../volume/index.js';
import type { CsiLog } from './log.js';

export interface PendingLock {
  volumeId: string;
  slot: string;
  /** The volume directory. */
  volume: string;
  /** The targets unpublished while the key could not go. */
  targets: string[];
  /** When the first unpublish left the key behind. */
  since: string;
  /** Removal attempts so far, the unpublish's own included. */
  attempts: number;
  /** Who held files open at the last attempt. */
  blockers: Blocker[];
  /** When the next attempt runs. */
  nextAttempt: string;
}

export interface BusyLockOptions {
  log: CsiLog;
  /** First retry delay (default 1 s), doubling up to maxDelayMs (default 30 s). */
  initialDelayMs?: number;
  maxDelayMs?: number;
}

interface Entry extends PendingLock {
  volumeRef: Volume;
  delay: number;
  timer?: NodeJS.Timeout | undefined;
  running?: Promise<void> | undefined;
}

/** A path lock() is given so that it unmounts nothing: no target can ever be inside a slot. */
export function noTarget(volume: Volume): string {
  return join(volume.slot, '.fscrypt-local', 'no-target');
}

export class BusyLocks {
  readonly #entries = new Map<string, Entry>();
  readonly #stopping = new AbortController();
  readonly #log: CsiLog;
  readonly #initial: number;
  readonly #max: number;

  constructor(options: BusyLockOptions) {
    this.#log = options.log;
    this.#initial = options.initialDelayMs ?? 1_000;
    this.#max = options.maxDelayMs ?? 30_000;
  }

  /** An unpublish left the key of `volume` incompletely removed: keep removing it. */
  add(volumeId: string, volume: Volume, target: string, blockers: Blocker[]): void {
    if (this.#stopping.signal.aborted) {
      this.#log.error(
        { volume_id: volumeId, volume: volume.path, slot: volume.slot, blockers },
        `stopping with the key of ${volume.path} still incompletely removed (files busy): the next start's reconcile of ${volume.slot} removes it`,
      );
      return;
    }
    const key = `${volume.slot}\0${volume.generation}`;
    const existing = this.#entries.get(key);
    if (existing !== undefined) {
      if (!existing.targets.includes(target)) existing.targets.push(target);
      existing.blockers = blockers;
      existing.attempts++;
      return;
    }
    const entry: Entry = {
      volumeId,
      slot: volume.slot,
      volume: volume.path,
      targets: [target],
      since: new Date().toISOString(),
      attempts: 1,
      blockers,
      nextAttempt: '',
      volumeRef: volume,
      delay: this.#initial,
    };
    this.#entries.set(key, entry);
    this.#schedule(key, entry);
  }

  /** The volume was published again: its key is meant to be in the kernel, so stop removing it. */
  cancel(volume: Volume): void {
    const key = `${volume.slot}\0${volume.generation}`;
    const entry = this.#entries.get(key);
    if (entry === undefined) return;
    clearTimeout(entry.timer);
    this.#entries.delete(key);
    this.#log.info({ volume_id: entry.volumeId, volume: entry.volume }, 'the volume was published again: its key stays, the pending key removal is dropped');
  }

  list(): PendingLock[] {
    return [...this.#entries.values()].map((e) => ({
      volumeId: e.volumeId,
      slot: e.slot,
      volume: e.volume,
      targets: [...e.targets],
      since: e.since,
      attempts: e.attempts,
      blockers: e.blockers.map((b) => ({ ...b })),
      nextAttempt: e.nextAttempt,
    }));
  }

  /** Stops retrying (an attempt under way finishes first); what is still pending is logged as an error. */
  async stop(): Promise<void> {
    this.#stopping.abort();
    const running: Promise<void>[] = [];
    for (const entry of this.#entries.values()) {
      clearTimeout(entry.timer);
      if (entry.running) running.push(entry.running);
    }
    await Promise.allSettled(running);
    for (const entry of this.#entries.values()) {
      this.#log.error(
        { volume_id: entry.volumeId, volume: entry.volume, slot: entry.slot, blockers: entry.blockers },
        `stopping with the key of ${entry.volume} still incompletely removed (files busy): the next start's reconcile of ${entry.slot} removes it; ` +
          `or run \`fscrypt-local lock ${entry.volume}\` once the processes holding it are gone`,
      );
    }
  }

  #schedule(key: string, entry: Entry): void {
    if (this.#stopping.signal.aborted) return;
    entry.nextAttempt = new Date(Date.now() + entry.delay).toISOString();
    entry.timer = setTimeout(() => {
      entry.running = this.#attempt(key, entry).finally(() => {
        entry.running = undefined;
      });
    }, entry.delay);
    entry.timer.unref();
  }

  async #attempt(key: string, entry: Entry): Promise<void> {
    if (this.#entries.get(key) !== entry) return;
    entry.attempts++;
    let finished = false;
    try {
      finished = await this.#removeOnce(entry);
    } catch (error) {
      if (!this.#stopping.signal.aborted) {
        this.#log.error(
          { volume_id: entry.volumeId, volume: entry.volume, attempts: entry.attempts, code: (error as { code?: unknown } | null)?.code },
          `removing the key of ${entry.volume} failed: ${error instanceof Error ? error.message : String(error)}`,
        );
      }
    }
    if (this.#entries.get(key) !== entry) return;
    if (finished) {
      this.#entries.delete(key);
      return;
    }
    entry.delay = Math.min(entry.delay * 2, this.#max);
    this.#schedule(key, entry);
  }

  /** One removal attempt: true once the key is out (or meant to stay), false while files are busy. */
  async #removeOnce(entry: Entry): Promise<boolean> {
    let blockers: Blocker[] | undefined;
    try {
      const result = await lock(entry.volumeRef, noTarget(entry.volumeRef), {
        busyTimeoutMs: 0,
        signal: this.#stopping.signal,
        onProgress: (event) => {
          if (event.kind === 'busy') blockers = event.blockers;
        },
      });
      if (result.locked) {
        this.#log.info({ volume_id: entry.volumeId, volume: entry.volume, attempts: entry.attempts }, `the key of ${entry.volume} is removed: the volume is locked`);
      } else {
        this.#log.info(
          { volume_id: entry.volumeId, volume: entry.volume, targets: result.targets },
          `the key of ${entry.volume} stays in the kernel: ${result.reason === 'admin-unlocked' ? 'an admin unlocked the volume' : 'the volume is published again'}`,
        );
      }
      return true;
    } catch (error) {
      if (!isFscryptError(error, 'ERR_FILES_BUSY')) throw error;
      entry.blockers = blockers ?? entry.blockers;
      this.#log.warn(
        { volume_id: entry.volumeId, volume: entry.volume, attempts: entry.attempts, blockers: entry.blockers },
        `the key of ${entry.volume} is still only incompletely removed: files inside are in use` +
          (entry.blockers.length > 0 ? `:\n${describeBlockers(entry.blockers)}` : ' (no process or mount found holding them)') +
          `\nRetrying in ${Math.round(Math.min(entry.delay * 2, this.#max) / 100) / 10} s; stop those processes to lock the volume`,
      );
      return false;
    }
  }
}
