// This node's PersistentVolumes, kept current by client-node's informer and
// kept alive around its failure modes (reference/node-stack.md §2): any
// error other than 410 or a timeout stops the informer for good, stop()
// itself emits an error, and a watch can stall silently. So:
//   - an error while running restarts it after a backoff (doubling, capped),
//     unless we are stopping;
//   - a watchdog restarts it when nothing (no connect, no event) was heard
//     for `staleAfterMs`, and /healthz reports the age;
//   - `synced` is true only once a list has completed since the last start,
//     so the controller never mistakes an empty cache for "no PV";
//   - a run of failures (the API server down for an hour) is logged once, when
//     it starts, and once more when the informer works again, with how many
//     attempts failed: a line per retry would bury everything else in the log
//     and tell the operator nothing new. The repeats go to debug.
//     The watchdog leaves a failing informer to its backoff: restarting it at
//     once would retry a down API server every few seconds.
import { makeInformer, type CoreV1Api, type Informer, type KubeConfig, type ObjectCache, type V1PersistentVolume } from '@kubernetes/client-node';
import { ApiException } from '@kubernetes/client-node';
import { apiFailure } from './api.js';
import { DEFAULT_API_TIMEOUT_MS, withDeadline } from './request-timeout.js';

export interface PvInformerLog {
  info(fields: Record<string, unknown>, message: string): void;
  warn(fields: Record<string, unknown>, message: string): void;
  debug?(fields: Record<string, unknown>, message: string): void;
}

/** A run of failed lists or watches, until one list completes again. */
export interface InformerFailure {
  /** When the first of them failed (ms since the epoch). */
  since: number;
  attempts: number;
  lastError: string;
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
  /** Deadline of each list request (default DEFAULT_API_TIMEOUT_MS). */
  requestTimeoutMs?: number;
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
  #failure: InformerFailure | undefined;

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

  /** The failures since the informer last worked, if it is failing now. */
  get failure(): Readonly<InformerFailure> | undefined {
    return this.#failure;
  }

  /** The cached PVs (meaningful once synced). */
  list(): readonly V1PersistentVolume[] {
    return this.#informer?.list() ?? [];
  }

  start(): void {
    this.#stopping = false;
    const staleAfter = this.#options.staleAfterMs ?? 5 * 60_000;
    this.#watchdog = setInterval(() => {
      if (!this.#stopping && this.#failure === undefined && this.ageMs > staleAfter) {
        this.#failed('the PersistentVolume watch heard nothing for too long; restarting it', `silent for ${Math.round(this.ageMs / 1000)} s`);
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
    const timeoutMs = this.#options.requestTimeoutMs ?? DEFAULT_API_TIMEOUT_MS;
    const current = () => generation === this.#generation && !this.#stopping;
    const heard = () => {
      if (current()) this.#lastHeard = Date.now();
    };
    const list = async () => {
      const pvs = await withDeadline(timeoutMs, 'list PersistentVolumes', (options) => this.#core.listPersistentVolume({ labelSelector: selector }, options));
      heard();
      return pvs;
    };
    const informer = makeInformer<V1PersistentVolume>(this.#kc, '/api/v1/persistentvolumes', list, selector);
    this.#informer = informer;
    for (const kind of ['add', 'update', 'delete'] as const) {
      informer.on(kind, (pv) => {
        if (!current()) return;
        heard();
        this.#delayMs = this.#options.restartDelay?.initialMs ?? 1000; // it works again
        this.#options.onEvent(kind, pv);
      });
    }
    // client-node says 'connect' before each list or watch it starts: the first one, the informer's own start, is
    // said before the API server answered anything (counting it would keep the age at 0 through an outage of any
    // length); a later one follows a watch the server ended cleanly or with 410, which is hearing from it.
    let connects = 0;
    informer.on('connect', () => {
      if (connects++ > 0) heard();
    });
    informer.on('error', (error: unknown) => {
      if (!current()) return; // stop() reports an AbortError, and an old informer's last words don't count
      this.#failed('the PersistentVolume watch failed; restarting it', describe(error));
      this.#restart(this.#delayMs);
    });
    informer.start().then(
      () => {
        if (!current()) return;
        heard();
        this.#synced = true;
        this.#recovered();
        this.#options.onSynced();
      },
      (error: unknown) => {
        if (!current()) return;
        this.#failed('listing PersistentVolumes failed; retrying', describe(error));
        this.#restart(this.#delayMs);
      },
    );
  }

  /** One more failed attempt: the first of a run is a warning that says what the agent does meanwhile, the others debug. */
  #failed(message: string, err: string): void {
    const fields = { err, retryInSeconds: this.#delayMs / 1000 };
    if (this.#failure !== undefined) {
      this.#failure.attempts++;
      this.#failure.lastError = err;
      this.#options.log.debug?.({ ...fields, attempts: this.#failure.attempts }, message);
      return;
    }
    this.#failure = { since: Date.now(), attempts: 1, lastError: err };
    this.#options.log.warn(
      fields,
      `${message}. Until it works again, CSI publishes and unpublishes go on, and reclaims of released volumes wait; the agent retries with backoff and logs once more when it recovers. Check the API server and the agent's network path to it`,
    );
  }

  #recovered(): void {
    this.#delayMs = this.#options.restartDelay?.initialMs ?? 1000;
    const failure = this.#failure;
    if (failure === undefined) return;
    this.#failure = undefined;
    const seconds = Math.round((Date.now() - failure.since) / 1000);
    this.#options.log.info({ attempts: failure.attempts, seconds, lastError: failure.lastError }, `the PersistentVolume watch works again, after ${failure.attempts} failed attempt(s) over ${seconds} s`);
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

/** One line: the HTTP status and the Status message, not client-node's dump of the body and headers. */
function describe(error: unknown): string {
  if (error instanceof ApiException) return apiFailure(error, 'the API server answered').message;
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  return String(error);
}
