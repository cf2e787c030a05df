// The node agent's Prometheus metrics (prom-client), on a Registry of their
// own: the global one would mix in whatever else registers there (a library,
// a second agent in the same test process) and could not be inspected alone.
//
// Label values come from small fixed sets only: hook names, outcomes,
// operations, error codes, volume states, API verbs, resources and HTTP
// statuses. Never a path, a PV or pod name, a message, or anything a tenant
// controls: each distinct value is a time series kept forever by every
// Prometheus that scrapes the node, and a tenant who could mint values could
// exhaust it (and would learn nothing, but could read names off a dashboard).
// boundedLabel enforces what callers promise: a value of another shape
// (a '/' or a space, say) or past the cap of distinct values is counted as
// 'other'.
//
// Nothing here is a secret or derived from one (DESIGN invariant 5).
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { FscryptError } from '../kernel/errors.js';

export const DEFAULT_METRICS_PREFIX = 'fscrypt_local_';

/** The value a label takes when the one passed is not of a bounded set. */
export const OTHER_LABEL = 'other';

/** Distinct values one label may take; a misuse shows as 'other' instead of unbounded series. */
export const MAX_LABEL_VALUES = 64;

const LABEL_VALUE = /^[A-Za-z0-9_:-]{1,64}$/;

/** Hook durations: a key removal takes milliseconds, a busy lock or a passphrase's Argon2id seconds, kubelet's timeout is 120 s. */
const HOOK_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];

export type HookOutcome = 'ok' | 'error';

/** Why the Event recorder gave up an Event. */
export type EventDropReason = 'queue_full' | 'rate_limited' | 'rejected' | 'retries_exhausted' | 'shutdown';

export interface AgentMetricsOptions {
  /** Prefix of every metric name, the default ones included (default 'fscrypt_local_'). */
  prefix?: string;
}

/** Folds values of an unexpected shape, or beyond the cap, into 'other'. */
class BoundedLabel {
  readonly #seen = new Set<string>();

  value(raw: string | number): string {
    const text = String(raw);
    if (!LABEL_VALUE.test(text)) return OTHER_LABEL;
    if (this.#seen.has(text)) return text;
    if (this.#seen.size >= MAX_LABEL_VALUES) return OTHER_LABEL;
    this.#seen.add(text);
    return text;
  }
}

export class AgentMetrics {
  readonly registry: Registry;
  readonly contentType: string;
  readonly #hookDuration: Histogram<'hook' | 'outcome'>;
  readonly #lockRetries: Counter;
  readonly #errors: Counter<'operation' | 'code'>;
  readonly #apiRequests: Counter<'verb' | 'resource'>;
  readonly #apiErrors: Counter<'verb' | 'resource' | 'status'>;
  readonly #eventsDropped: Counter<'reason'>;
  readonly #volumes: Gauge<'state'>;
  readonly #orphanKeys: Gauge;
  readonly #slotProblems: Gauge;
  readonly #informerAge: Gauge;
  readonly #states = new Set<string>();
  #informerAgeSource: (() => number) | undefined;
  readonly #labels = {
    hook: new BoundedLabel(),
    operation: new BoundedLabel(),
    code: new BoundedLabel(),
    verb: new BoundedLabel(),
    resource: new BoundedLabel(),
    status: new BoundedLabel(),
    state: new BoundedLabel(),
  };

  constructor(options: AgentMetricsOptions = {}) {
    const prefix = options.prefix ?? DEFAULT_METRICS_PREFIX;
    if (!/^[a-zA-Z_:][a-zA-Z0-9_:]*$/.test(prefix)) throw FscryptError.invalidArgument(`a metrics prefix is letters, digits, '_' and ':', not starting with a digit; got ${JSON.stringify(prefix)}`);
    const registry = new Registry();
    this.registry = registry;
    this.contentType = registry.contentType;
    const registers = [registry];
    // Process RSS, CPU, file descriptors, heap, and event loop lag: a stalled
    // loop is the failure invariant 9 is about, so its lag is worth a graph.
    collectDefaultMetrics({ register: registry, prefix });

    this.#hookDuration = new Histogram({
      name: `${prefix}hook_duration_seconds`,
      help: 'Time a volume lifecycle hook (prepare, unlock, lock, erase, recycle, reconcile, ...) took, by outcome.',
      labelNames: ['hook', 'outcome'],
      buckets: HOOK_BUCKETS,
      registers,
    });
    this.#lockRetries = new Counter({
      name: `${prefix}lock_retries_total`,
      help: 'Retries of a key removal that found files still open in the volume (FILES_BUSY).',
      registers,
    });
    this.#errors = new Counter({
      name: `${prefix}errors_total`,
      help: 'Failed operations, by operation and error code (docs/errors.md).',
      labelNames: ['operation', 'code'],
      registers,
    });
    this.#apiRequests = new Counter({
      name: `${prefix}api_requests_total`,
      help: 'Requests to the Kubernetes API, by verb and resource.',
      labelNames: ['verb', 'resource'],
      registers,
    });
    this.#apiErrors = new Counter({
      name: `${prefix}api_errors_total`,
      help: "Failed requests to the Kubernetes API, by verb, resource and HTTP status ('network' when no answer came).",
      labelNames: ['verb', 'resource', 'status'],
      registers,
    });
    this.#eventsDropped = new Counter({
      name: `${prefix}events_dropped_total`,
      help: 'Kubernetes Events given up, by reason (queue full while the API was down, rate limited, rejected by the API, retries exhausted, shutdown).',
      labelNames: ['reason'],
      registers,
    });
    this.#volumes = new Gauge({
      name: `${prefix}volumes`,
      help: 'Volumes on this node, by state.',
      labelNames: ['state'],
      registers,
    });
    this.#orphanKeys = new Gauge({
      name: `${prefix}keys_without_target`,
      help: 'Volume keys resident in the kernel for volumes with no published target, outside a hook (must be 0: invariant 2; admin unlocks excluded).',
      registers,
    });
    this.#slotProblems = new Gauge({
      name: `${prefix}slot_problems`,
      help: 'Slots this node refuses or cannot serve (bad metadata, not mounted, unsafe path, ...).',
      registers,
    });
    const ageSource = () => this.#informerAgeSource;
    this.#informerAge = new Gauge({
      name: `${prefix}informer_age_seconds`,
      help: 'Seconds since the PersistentVolume informer last heard from the API server (list, watch event or reconnect).',
      registers,
      // Read at scrape time when a source is given: during an API outage the age is what an alert watches, and a
      // value set by a periodic census would lag it by up to a period.
      collect() {
        const source = ageSource();
        if (source !== undefined) this.set(source());
      },
    });
    // Present from the first scrape, so an alert on them never sees "no data".
    this.#orphanKeys.set(0);
    this.#slotProblems.set(0);
    this.#informerAge.set(0);
    this.#lockRetries.inc(0);
  }

  observeHook(hook: string, seconds: number, outcome: HookOutcome): void {
    this.#hookDuration.observe({ hook: this.#labels.hook.value(hook), outcome }, seconds);
  }

  /** Starts timing a hook; call the result once with its outcome. */
  hookTimer(hook: string): (outcome: HookOutcome) => void {
    const started = process.hrtime.bigint();
    return (outcome) => this.observeHook(hook, Number(process.hrtime.bigint() - started) / 1e9, outcome);
  }

  lockRetry(): void {
    this.#lockRetries.inc();
  }

  countError(operation: string, code: string): void {
    this.#errors.inc({ operation: this.#labels.operation.value(operation), code: this.#labels.code.value(code) });
  }

  countApiRequest(verb: string, resource: string): void {
    this.#apiRequests.inc({ verb: this.#labels.verb.value(verb), resource: this.#labels.resource.value(resource) });
  }

  countApiError(verb: string, resource: string, status: number | 'network'): void {
    this.#apiErrors.inc({ verb: this.#labels.verb.value(verb), resource: this.#labels.resource.value(resource), status: this.#labels.status.value(status) });
  }

  countEventDropped(reason: EventDropReason): void {
    this.#eventsDropped.inc({ reason });
  }

  /** Sets the volume count of each state; a state seen before and absent now reads 0, not its last count. */
  setVolumeStates(counts: Record<string, number>): void {
    const now = new Map<string, number>();
    for (const [state, count] of Object.entries(counts)) {
      const label = this.#labels.state.value(state);
      now.set(label, (now.get(label) ?? 0) + count);
    }
    for (const state of now.keys()) this.#states.add(state);
    for (const state of this.#states) this.#volumes.set({ state }, now.get(state) ?? 0);
  }

  setOrphanKeys(n: number): void {
    this.#orphanKeys.set(n);
  }

  setSlotProblems(n: number): void {
    this.#slotProblems.set(n);
  }

  setInformerAge(seconds: number): void {
    this.#informerAge.set(seconds);
  }

  /** Reads the informer's age (seconds) from `source` at every scrape, instead of the last value set. */
  informerAgeFrom(source: () => number): void {
    this.#informerAgeSource = source;
  }

  /** The exposition text for /metrics. */
  metrics(): Promise<string> {
    return this.registry.metrics();
  }
}
