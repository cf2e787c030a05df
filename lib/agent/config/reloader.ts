// The config directory, re-read every period. Upstream's watcher exits the
// process on an invalid config (the pod crash-loops and serves nothing);
// here an invalid change is rejected and the agent keeps running on the last
// good config. A rejection is reported once per distinct content, not every
// period, so a log does not fill with the same message while nobody fixes it.
import { ConfigError } from './config-error.js';
import { configFromSnapshot } from './load.js';
import { readConfigDir } from './read-dir.js';
import type { LoadedConfig } from './types.js';

export interface ConfigReloaderOptions {
  /** How often the directory is read (upstream: --config-sync-period, 5 s). */
  periodMs: number;
  /** A valid change was loaded; `next` is current() from now on. */
  onChange(next: LoadedConfig, previous: LoadedConfig): void;
  /** A change was invalid (or the directory unreadable); current() is unchanged. */
  onRejected(error: ConfigError): void;
  /** A failure that is not the config's (a bug, a callback that threw). Without it, it is thrown out of the timer. */
  onError?(error: unknown): void;
}

export type ReloadOutcome = 'unchanged' | 'applied' | 'rejected' | 'still-rejected';

export class ConfigReloader {
  private readonly dir: string;
  private readonly options: ConfigReloaderOptions;
  private loaded: LoadedConfig | undefined;
  /** What the last rejection was of: a digest, or the message when the directory could not be read. */
  private rejectedKey: string | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private running: Promise<ReloadOutcome> | undefined;

  constructor(dir: string, options: ConfigReloaderOptions) {
    if (!Number.isFinite(options.periodMs) || options.periodMs <= 0) throw new TypeError('periodMs must be a positive number of milliseconds');
    this.dir = dir;
    this.options = options;
  }

  /** The first load; throws ConfigError if it is invalid. Then reloads every periodMs until stop(). */
  async start(): Promise<LoadedConfig> {
    if (this.loaded !== undefined) throw new Error('ConfigReloader.start() was already called');
    this.loaded = configFromSnapshot(await readConfigDir(this.dir));
    this.schedule();
    return this.loaded;
  }

  /** The last good config. */
  current(): LoadedConfig {
    if (this.loaded === undefined) throw new Error('ConfigReloader.current() before start() resolved');
    return this.loaded;
  }

  /**
   * Reads the directory now (as a period would), e.g. on SIGHUP. Calls made
   * while one runs share its outcome.
   */
  reloadNow(): Promise<ReloadOutcome> {
    this.running ??= this.check().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private schedule(): void {
    if (this.stopped) return;
    // A chain of timeouts rather than an interval: a slow read never overlaps the next.
    this.timer = setTimeout(() => {
      this.reloadNow().then(
        () => this.schedule(),
        (error: unknown) => {
          this.schedule();
          if (this.options.onError === undefined) throw error;
          this.options.onError(error);
        },
      );
    }, this.options.periodMs);
  }

  private async check(): Promise<ReloadOutcome> {
    const previous = this.current();
    let next: LoadedConfig;
    let rejectedKey: string | undefined;
    try {
      const snapshot = await readConfigDir(this.dir);
      if (snapshot.digest === previous.digest) {
        this.rejectedKey = undefined; // back to the good content: a later bad one is news again
        return 'unchanged';
      }
      rejectedKey = `digest:${snapshot.digest}`;
      if (rejectedKey === this.rejectedKey) return 'still-rejected';
      next = configFromSnapshot(snapshot);
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      rejectedKey ??= `error:${error.message}`;
      if (this.stopped) return 'rejected';
      if (rejectedKey === this.rejectedKey) return 'still-rejected';
      this.rejectedKey = rejectedKey;
      this.options.onRejected(error);
      return 'rejected';
    }
    this.rejectedKey = undefined;
    if (this.stopped) return 'unchanged';
    this.loaded = next;
    this.options.onChange(next, previous);
    return 'applied';
  }
}
