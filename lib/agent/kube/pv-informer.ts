// This node's PersistentVolumes, kept current by client-node's informer and
// kept alive around its failure modes (reference/node-stack.md §2): any
// error other than 410 or a timeout stops the informer for good, stop()
// itself emits an error, and a watch can stall silently. So:
//   - an error while running restarts it after a backoff (doubling, capped),
//     unless we are stopping;
//   - a watchdog restarts it when nothing (no connect, no event) was heard
//     for `staleAfterMs`, and /healthz reports the age;
//   - `synced` is true only once a list has completed since the last start,
//     so the controller never mistakes an empty cache for "no PV".
import { makeInformer, type CoreV1Api, type Informer, type KubeConfig, type ObjectCache, type V1PersistentVolume } from '@kubernetes/client-node';

export interface PvInformerLog {
  info(fields: Record<string, unknown>, message: string): void;
  warn(fields: Record<string, unknown>, message: string): void;
}

export interface PvInformerOptions {
  labelSelector: string;
  log: PvInformerLog;
  /** Called for every add, update and delete (the PV as last seen). */
  onEvent(kind: 'add' | 'update' | 'delete', pv: V1PersistentVolume): void;
  /** Called after each completed (re)list. */
  onSynced(): void;
  restartDelay?: { initialMs?: number; maxMs?: number };
  /** Restart when nothing was heard for this long (default 5 min: the server closes idle watches sooner). */
  staleAfterMs?: number;
}

export class PvInformer {
  readonly #kc: KubeConfig;
  readonly #core: CoreV1Api;
  readonly #options: PvInformerOptions;
  #informer: (Informer<V1PersistentVolume> & ObjectCache<V1PersistentVolume>) | undefined;
  #stopping = false;
  #synced = false;
  #lastHeard = Date.now();
  #delayMs: number;
  #restartTimer: NodeJS.Timeout | undefined;
  #watchdog: NodeJS.Timeout | undefined;
  #generation = 0;

  constructor(kc: KubeConfig, core: CoreV1Api, options: PvInformerOptions) {
    this.#kc = kc;
    this.#core = core;
    this.#options = options;
    this.#delayMs = options.restartDelay?.initialMs ?? 1000;
  }

  /** True once a list has completed since the informer last (re)started. */
  get synced(): boolean {
    return this.#synced;
  }

  /** Milliseconds since the informer last heard from the API server. */
  get ageMs(): number {
    return Date.now() - this.#lastHeard;
  }

  /** The cached PVs (meaningful once synced). */
  list(): readonly V1PersistentVolume[] {
    return this.#informer?.list() ?? [];
  }

  start(): void {
    this.#stopping = false;
    const staleAfter = this.#options.staleAfterMs ?? 5 * 60_000;
    this.#watchdog = setInterval(() => {
      if (!this.#stopping && this.ageMs > staleAfter) {
        this.#options.log.warn({ ageSeconds: Math.round(this.ageMs / 1000) }, 'the PersistentVolume watch heard nothing for too long; restarting it');
        this.#restart(0);
      }
    }, Math.max(1000, Math.min(staleAfter / 4, 30_000)));
    this.#watchdog.unref();
    this.#run();
  }

  async stop(): Promise<void> {
    this.#stopping = true;
    clearInterval(this.#watchdog);
    clearTimeout(this.#restartTimer);
    const informer = this.#informer;
    this.#informer = undefined;
    await informer?.stop().catch(() => undefined);
  }

  #run(): void {
    const generation = ++this.#generation;
    this.#synced = false;
    const selector = this.#options.labelSelector;
    const informer = makeInformer<V1PersistentVolume>(this.#kc, '/api/v1/persistentvolumes', () => this.#core.listPersistentVolume({ labelSelector: selector }), selector);
    this.#informer = informer;
    const current = () => generation === this.#generation && !this.#stopping;
    const heard = () => {
      if (current()) this.#lastHeard = Date.now();
    };
    for (const kind of ['add', 'update', 'delete'] as const) {
      informer.on(kind, (pv) => {
        if (!current()) return;
        heard();
        this.#delayMs = this.#options.restartDelay?.initialMs ?? 1000; // it works again
        this.#options.onEvent(kind, pv);
      });
    }
    informer.on('connect', heard);
    informer.on('error', (error: unknown) => {
      if (!current()) return; // stop() reports an AbortError, and an old informer's last words don't count
      this.#options.log.warn({ err: describe(error), retryInSeconds: this.#delayMs / 1000 }, 'the PersistentVolume watch failed; restarting it');
      this.#restart(this.#delayMs);
    });
    informer.start().then(
      () => {
        if (!current()) return;
        heard();
        this.#synced = true;
        this.#options.onSynced();
      },
      (error: unknown) => {
        if (!current()) return;
        this.#options.log.warn({ err: describe(error), retryInSeconds: this.#delayMs / 1000 }, 'listing PersistentVolumes failed; retrying');
        this.#restart(this.#delayMs);
      },
    );
  }

  #restart(delayMs: number): void {
    const old = this.#informer;
    this.#informer = undefined;
    this.#generation++; // silences the old one's events and errors
    this.#synced = false;
    void old?.stop().catch(() => undefined);
    clearTimeout(this.#restartTimer);
    this.#delayMs = Math.min(Math.max(this.#delayMs * 2, 1), this.#options.restartDelay?.maxMs ?? 30_000);
    this.#restartTimer = setTimeout(() => {
      if (!this.#stopping) this.#run();
    }, delayMs);
  }
}

function describe(error: unknown): string {
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  return String(error);
}
