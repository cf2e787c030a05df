// A work queue keyed by name, the client-go pattern: adding a key that is
// already waiting does nothing, adding one that is being worked on runs it
// once more afterwards (the work is level-triggered: each run looks at the
// whole current state, so one more run covers any number of adds), one run
// per key at a time, a bounded number of keys at once, and a failed run is
// retried after a per-key backoff. A hung key (a frozen disk) holds one
// worker, never the others' turns beyond the concurrency.
export interface WorkQueueOptions {
  concurrency?: number;
  retry?: { initialMs?: number; maxMs?: number };
  onError?(key: string, error: unknown, retryInMs: number): void;
}

export class WorkQueue {
  readonly #worker: (key: string) => Promise<void>;
  readonly #options: WorkQueueOptions;
  readonly #waiting: string[] = [];
  readonly #queued = new Set<string>();
  readonly #running = new Set<string>();
  readonly #again = new Set<string>();
  readonly #failures = new Map<string, number>();
  readonly #timers = new Map<string, NodeJS.Timeout>();
  readonly #idle = new Set<() => void>();
  #stopped = false;

  constructor(worker: (key: string) => Promise<void>, options: WorkQueueOptions = {}) {
    this.#worker = worker;
    this.#options = options;
  }

  add(key: string): void {
    if (this.#stopped) return;
    const timer = this.#timers.get(key);
    if (timer !== undefined) {
      clearTimeout(timer);
      this.#timers.delete(key);
    }
    if (this.#running.has(key)) this.#again.add(key);
    else if (!this.#queued.has(key)) {
      this.#queued.add(key);
      this.#waiting.push(key);
      this.#pump();
    }
  }

  /** Keys waiting, running or waiting for a retry. */
  get size(): number {
    return this.#queued.size + this.#running.size + this.#timers.size;
  }

  /** Resolves when nothing is waiting or running (retries scheduled for later do not count). */
  async idle(): Promise<void> {
    if (this.#queued.size === 0 && this.#running.size === 0) return;
    await new Promise<void>((resolve) => this.#idle.add(resolve));
  }

  /** Stops taking keys and waits for the runs in flight. */
  async stop(): Promise<void> {
    this.#stopped = true;
    for (const timer of this.#timers.values()) clearTimeout(timer);
    this.#timers.clear();
    this.#waiting.length = 0;
    this.#queued.clear();
    await this.idle();
  }

  #pump(): void {
    const limit = this.#options.concurrency ?? 8;
    while (this.#running.size < limit && this.#waiting.length > 0) {
      const key = this.#waiting.shift()!;
      this.#queued.delete(key);
      this.#running.add(key);
      void this.#run(key);
    }
    if (this.#queued.size === 0 && this.#running.size === 0) {
      for (const resolve of this.#idle) resolve();
      this.#idle.clear();
    }
  }

  async #run(key: string): Promise<void> {
    try {
      await this.#worker(key);
      this.#failures.delete(key);
    } catch (error) {
      const failures = (this.#failures.get(key) ?? 0) + 1;
      this.#failures.set(key, failures);
      const initial = this.#options.retry?.initialMs ?? 1000;
      const delay = Math.min(initial * 2 ** (failures - 1), this.#options.retry?.maxMs ?? 60_000);
      try {
        this.#options.onError?.(key, error, delay);
      } catch {
        // A reporter cannot stop the queue.
      }
      if (!this.#stopped && !this.#again.has(key)) {
        const timer = setTimeout(() => {
          this.#timers.delete(key);
          this.add(key);
        }, delay);
        timer.unref();
        this.#timers.set(key, timer);
      }
    } finally {
      this.#running.delete(key);
      if (this.#again.delete(key) && !this.#stopped) this.add(key);
      this.#pump();
    }
  }
}
