// Kubernetes Events (core/v1) for the lifecycle of a node's volumes: the PV
// is the involved object, or the Node for a slot the agent refuses. Events
// are written in the agent's namespace (--namespace): PVs and Nodes have
// none, and `kubectl describe` finds an object's Events in every namespace
// by the involved object's kind, name and uid (so pass the uid when known).
//
// Recording never blocks or fails a hook: record() queues and returns; one
// worker sends the queue in order. What it borrows from client-go's
// recorder, and why:
// - aggregation: the same (object, type, reason, message) again within
//   10 minutes raises the count of the Event already written (a merge
//   patch of count and lastTimestamp) instead of writing a new one, so a
//   retry loop makes one Event, not hundreds;
// - a spam filter per object: a bucket of 25 Events, refilled with one every
//   5 minutes; past it, Events of that object are dropped (and counted);
// - a bounded queue: while the API is down the oldest queued Events go
//   first, counted as dropped; 5xx, 429 and network errors are retried with
//   backoff (12 tries, as client-go), any other 4xx is dropped with a warning.
//
// Messages are the callers': they say what happened to which volume, never a
// key or passphrase (invariant 5). The recorder does not scrub them, because
// nothing it could match would catch a key; callers must not hand it one.
import { randomBytes } from 'node:crypto';
import { PatchStrategy, setHeaderOptions, type CoreV1Api, type CoreV1Event } from '@kubernetes/client-node';
import { DEFAULT_API_TIMEOUT_MS, withDeadline } from './kube/request-timeout.js';
import type { AgentLog } from './log.js';
import type { AgentMetrics, EventDropReason } from './metrics.js';

export interface ObjectRef {
  kind: 'PersistentVolume' | 'Node';
  name: string;
  uid?: string;
  /** Default 'v1'. */
  apiVersion?: string;
}

export type EventType = 'Normal' | 'Warning';

/** Where Events go: the API (clientNodeEventSink), or a stub in tests. */
export type EventSink = {
  create(namespace: string, body: CoreV1Event): Promise<CoreV1Event>;
  patch(namespace: string, name: string, body: object): Promise<unknown>;
};

/** The reasons the agent reports; CamelCase, as Kubernetes' own. */
export const EVENT_REASONS = {
  /** A new generation was prepared (Node) or offered as a PV, its policy verified by the kernel (PV). */
  Prepared: 'Prepared',
  /** The volume was unlocked and published to a pod's target. */
  Published: 'Published',
  /** The last target was unpublished and the key removed from the kernel. */
  Locked: 'Locked',
  /** The key could not be removed yet: files are open (the message names the blockers); retried in the background. */
  LockBusy: 'LockBusy',
  /** The released volume's key was destroyed; its data is unreadable ciphertext, and a new generation is offered. */
  CryptoErased: 'CryptoErased',
  /** Start-up reconcile finished or rolled back a hook a crash or reboot interrupted. */
  Recovered: 'Recovered',
  /** A slot is not served: someone else's files in it, another key source's metadata (Node). */
  SlotRefused: 'SlotRefused',
  /** A served slot is no longer a mount point (its disk was unmounted) (Node). */
  SlotGone: 'SlotGone',
  /** A slot waits for an operator: no StorageClass, a claimed generation whose PV is gone under Retain, a damaged volume (Node). */
  SlotWaiting: 'SlotWaiting',
  /** Work on a slot failed and is retried with backoff (Node). */
  ReconcileFailed: 'ReconcileFailed',
  /** The StorageClass has mountOptions a bind mount cannot honour; no PV is offered (Node). */
  MountOptionsRefused: 'MountOptionsRefused',
  /** The ConfigMap was invalid; the previous configuration stays in force (Node). */
  ConfigRejected: 'ConfigRejected',
} as const;

export type EventReason = (typeof EVENT_REASONS)[keyof typeof EVENT_REASONS];

/** What the events.k8s.io API allows for a note; core/v1 takes more, but a longer message helps no one. */
export const MAX_MESSAGE_BYTES = 1024;
/** client-go's aggregation window. */
export const AGGREGATION_WINDOW_MS = 10 * 60_000;

const DEFAULT_QUEUE_LIMIT = 1000;
const DEFAULT_STOP_TIMEOUT_MS = 5000;
const DEFAULT_RETRY = { initialDelayMs: 1000, maxDelayMs: 30_000, maxAttempts: 12 };
const DEFAULT_RATE_LIMIT = { burst: 25, refillMs: 5 * 60_000 };
/** Series and buckets remembered (client-go's LRU size); the least recently used go first. */
const CACHE_SIZE = 4096;
/** An Event's name is a DNS subdomain: at most 253 characters, of which '.<16 hex>' takes 17. */
const MAX_NAME_PREFIX = 253 - 17;

export interface EventRecorderOptions {
  sink: EventSink;
  /** The agent's namespace, where every Event is written. */
  namespace: string;
  /** source.component and reportingComponent, e.g. 'fscrypt-local'. */
  component: string;
  /** This node's name: source.host and reportingInstance. */
  host: string;
  log: AgentLog;
  metrics?: AgentMetrics;
  now?: () => Date;
  /** Events waiting to be sent, beyond the one being sent (default 1000). */
  queueLimit?: number;
  /** Backoff of a retried request (defaults 1 s doubling to 30 s, 12 tries). */
  retry?: { initialDelayMs?: number; maxDelayMs?: number; maxAttempts?: number };
  /** The spam filter per object (defaults: burst 25, one more every 5 minutes). */
  rateLimit?: { burst?: number; refillMs?: number };
  /** How long stop() lets the queue drain before dropping the rest (default 5 s). */
  stopTimeoutMs?: number;
}

/** One Event as written: the first occurrence creates it, later ones raise its count. */
interface Series {
  readonly object: ObjectRef;
  readonly type: EventType;
  readonly reason: string;
  readonly message: string;
  readonly name: string;
  readonly first: Date;
  last: Date;
  count: number;
  /** The count the API server has (0: not created yet). */
  sentCount: number;
  created: boolean;
  /** Queued or being sent: a new occurrence only updates it. */
  pending: boolean;
  attempts: number;
}

type Outcome = 'done' | 'retry' | 'dropped';

/** `text` cut to at most `max` UTF-8 bytes, never inside a character. */
export function truncateUtf8(text: string, max: number): string {
  const bytes = Buffer.from(text, 'utf8');
  if (bytes.length <= max) return text;
  let end = max;
  // Back off over continuation bytes (10xxxxxx) to the start of a character.
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--;
  return bytes.subarray(0, end).toString('utf8');
}

/** An Event's name: the object's name and 16 random hex digits, unique without asking the API. */
export function eventName(objectName: string): string {
  return `${objectName.slice(0, MAX_NAME_PREFIX)}.${randomBytes(8).toString('hex')}`;
}

/** The HTTP status an API call failed with, or 'network' when there was no answer. */
export function apiStatus(error: unknown): number | 'network' {
  const e = error as { code?: unknown; statusCode?: unknown } | null;
  if (e !== null && typeof e === 'object') {
    for (const value of [e.code, e.statusCode]) if (typeof value === 'number' && value >= 100 && value <= 599) return value;
  }
  return 'network';
}

function retryable(status: number | 'network'): boolean {
  return status === 'network' || status === 429 || status >= 500;
}

/** A Map used as an LRU of bounded size. */
function remember<K, V>(map: Map<K, V>, key: K, value: V): void {
  map.delete(key);
  map.set(key, value);
  if (map.size > CACHE_SIZE) map.delete(map.keys().next().value as K);
}

export class EventRecorder {
  readonly #sink: EventSink;
  readonly #namespace: string;
  readonly #component: string;
  readonly #host: string;
  readonly #log: AgentLog;
  readonly #metrics: AgentMetrics | undefined;
  readonly #now: () => Date;
  readonly #queueLimit: number;
  readonly #retry: typeof DEFAULT_RETRY;
  readonly #rateLimit: typeof DEFAULT_RATE_LIMIT;
  readonly #stopTimeoutMs: number;
  readonly #series = new Map<string, Series>();
  readonly #buckets = new Map<string, { tokens: number; at: number }>();
  readonly #queue: Series[] = [];
  readonly #idle: (() => void)[] = [];
  #current: Series | undefined;
  #pumping = false;
  #stopped = false;
  #abandoned = false;
  #backoff: { timer: NodeJS.Timeout; wake: () => void } | undefined;
  /** True once a drop for a full queue was logged, until an Event gets through again. */
  #outageLogged = false;

  constructor(options: EventRecorderOptions) {
    this.#sink = options.sink;
    this.#namespace = options.namespace;
    this.#component = options.component;
    this.#host = options.host;
    this.#log = options.log;
    this.#metrics = options.metrics;
    this.#now = options.now ?? (() => new Date());
    this.#queueLimit = Math.max(1, options.queueLimit ?? DEFAULT_QUEUE_LIMIT);
    this.#retry = { ...DEFAULT_RETRY, ...options.retry };
    this.#rateLimit = { ...DEFAULT_RATE_LIMIT, ...options.rateLimit };
    this.#stopTimeoutMs = options.stopTimeoutMs ?? DEFAULT_STOP_TIMEOUT_MS;
  }

  /** Queues an Event. Never throws and never waits: a lost Event must not fail a hook. */
  record(object: ObjectRef, type: EventType, reason: EventReason, message: string): void {
    try {
      if (this.#stopped) {
        this.#drop('shutdown');
        return;
      }
      const now = this.#now();
      const objectKey = `${object.kind}/${object.name}/${object.uid ?? ''}`;
      if (!this.#admit(objectKey, now.getTime())) {
        this.#drop('rate_limited');
        this.#say('debug', { kind: object.kind, object: object.name, reason }, 'event dropped: too many events for this object');
        return;
      }
      const text = truncateUtf8(String(message), MAX_MESSAGE_BYTES);
      const key = JSON.stringify([objectKey, type, reason, text]);
      let series = this.#series.get(key);
      if (series !== undefined && now.getTime() - series.last.getTime() <= AGGREGATION_WINDOW_MS) {
        series.count++;
        series.last = now;
      } else {
        series = { object: { ...object }, type, reason, message: text, name: eventName(object.name), first: now, last: now, count: 1, sentCount: 0, created: false, pending: false, attempts: 0 };
      }
      remember(this.#series, key, series);
      if (!series.pending) this.#enqueue(series);
      this.#kick();
    } catch (error) {
      this.#say('warn', { err: error }, 'recording an event failed');
    }
  }

  /** Logs; a logger that throws is ignored, so it can neither reach a hook nor stop the worker. */
  #say(level: 'debug' | 'warn' | 'error', fields: Record<string, unknown>, message: string): void {
    try {
      this.#log[level](fields, message);
    } catch {
      // A lost log line is better than a lost Event or a failed hook.
    }
  }

  /** Resolves when every queued Event was sent or given up. */
  flush(): Promise<void> {
    if (this.#isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  /** Stops taking Events, lets the queue drain for stopTimeoutMs, then drops what is left. */
  async stop(): Promise<void> {
    this.#stopped = true;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.flush(), new Promise<void>((resolve) => (timer = setTimeout(resolve, this.#stopTimeoutMs)))]);
    clearTimeout(timer);
    if (this.#isIdle()) return;
    this.#abandoned = true;
    const left = this.#queue.length + (this.#current === undefined ? 0 : 1);
    for (let i = 0; i < left; i++) this.#drop('shutdown');
    this.#say('warn', { events: left }, 'stopping: events not sent were dropped');
    this.#queue.length = 0;
    this.#current = undefined;
    this.#backoff?.wake();
    this.#settle();
  }

  #isIdle(): boolean {
    return this.#queue.length === 0 && this.#current === undefined;
  }

  #admit(objectKey: string, at: number): boolean {
    const { burst, refillMs } = this.#rateLimit;
    const bucket = this.#buckets.get(objectKey) ?? { tokens: burst, at };
    bucket.tokens = Math.min(burst, bucket.tokens + (at - bucket.at) / refillMs);
    bucket.at = at;
    remember(this.#buckets, objectKey, bucket);
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }

  #enqueue(series: Series): void {
    if (this.#queue.length >= this.#queueLimit) {
      const oldest = this.#queue.shift()!;
      oldest.pending = false;
      this.#drop('queue_full');
      if (!this.#outageLogged) {
        this.#outageLogged = true;
        this.#say('warn', { queueLimit: this.#queueLimit }, 'event queue full (is the API server reachable?): dropping the oldest events');
      }
    }
    series.pending = true;
    series.attempts = 0;
    this.#queue.push(series);
  }

  #drop(reason: EventDropReason): void {
    this.#metrics?.countEventDropped(reason);
  }

  /** Starts the worker on a later tick, so record() returns before any request starts. */
  #kick(): void {
    if (this.#pumping) return;
    this.#pumping = true;
    setImmediate(() => {
      /* c8 ignore start: #pump handles every failure of a request; only a bug gets here, and the worker must survive it */
      this.#pump().catch((error: unknown) => {
        this.#say('error', { err: error }, 'the event worker failed');
        const current = this.#current;
        if (current !== undefined) current.pending = false;
        this.#current = undefined;
        this.#pumping = false;
        if (this.#queue.length > 0 && !this.#abandoned) this.#kick();
        else this.#settle();
      });
      /* c8 ignore stop */
    });
  }

  async #pump(): Promise<void> {
    while (!this.#abandoned && this.#queue.length > 0) {
      const series = this.#queue.shift()!;
      this.#current = series;
      let outcome = await this.#send(series);
      while (outcome === 'retry' && !this.#abandoned) {
        await this.#sleep(this.#delay(series.attempts));
        if (this.#abandoned) break;
        outcome = await this.#send(series);
      }
      if (this.#abandoned) break;
      this.#current = undefined;
      series.pending = false;
      // Occurrences that arrived while it was on the way go in one more patch.
      if (outcome === 'done' && series.count > series.sentCount) this.#enqueue(series);
    }
    this.#pumping = false;
    this.#settle();
  }

  #settle(): void {
    if (!this.#isIdle()) return;
    for (const resolve of this.#idle.splice(0)) resolve();
  }

  #delay(attempts: number): number {
    const { initialDelayMs, maxDelayMs } = this.#retry;
    const base = Math.min(maxDelayMs, initialDelayMs * 2 ** Math.max(0, attempts - 1));
    // ±20%: the nodes of a cluster whose API server comes back do not retry in step.
    return base * (0.8 + 0.4 * Math.random());
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = (): void => {
        clearTimeout(timer);
        this.#backoff = undefined;
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.#backoff = { timer, wake };
    });
  }

  async #send(series: Series): Promise<Outcome> {
    const verb = series.created ? 'patch' : 'create';
    const count = series.count;
    const last = series.last;
    this.#metrics?.countApiRequest(verb, 'events');
    try {
      if (verb === 'create') await Promise.resolve().then(() => this.#sink.create(this.#namespace, this.#body(series)));
      else await Promise.resolve().then(() => this.#sink.patch(this.#namespace, series.name, { count, lastTimestamp: last.toISOString() }));
      series.created = true;
      series.sentCount = count;
      this.#outageLogged = false;
      return 'done';
    } catch (error) {
      const status = apiStatus(error);
      this.#metrics?.countApiError(verb, 'events', status);
      if (verb === 'create' && status === 409) {
        // An earlier try did get through (its answer was lost): raise that Event's count instead.
        series.created = true;
        return 'done';
      }
      if (verb === 'patch' && status === 404) {
        // Events expire (an hour by default): write it again, with the count so far.
        series.created = false;
        return this.#send(series);
      }
      if (retryable(status)) {
        series.attempts++;
        if (series.attempts < this.#retry.maxAttempts) return 'retry';
        this.#drop('retries_exhausted');
        this.#say('warn', { object: series.object.name, reason: series.reason, status, attempts: series.attempts }, 'event dropped: the API did not take it');
        this.#forget(series);
        return 'dropped';
      }
      this.#drop('rejected');
      this.#say('warn', { object: series.object.name, reason: series.reason, status, err: error }, 'event rejected by the API server, dropped');
      this.#forget(series);
      return 'dropped';
    }
  }

  /** A series whose Event may not exist: the next occurrence starts a new one. */
  #forget(series: Series): void {
    if (series.created) return;
    for (const [key, value] of this.#series) {
      if (value === series) {
        this.#series.delete(key);
        return;
      }
    }
  }

  #body(series: Series): CoreV1Event {
    const { object } = series;
    const involvedObject: CoreV1Event['involvedObject'] = { apiVersion: object.apiVersion ?? 'v1', kind: object.kind, name: object.name };
    if (object.uid !== undefined) involvedObject.uid = object.uid;
    return {
      apiVersion: 'v1',
      kind: 'Event',
      metadata: { name: series.name, namespace: this.#namespace },
      involvedObject,
      reason: series.reason,
      message: series.message,
      type: series.type,
      source: { component: this.#component, host: this.#host },
      reportingComponent: this.#component,
      reportingInstance: this.#host,
      firstTimestamp: series.first,
      lastTimestamp: series.last,
      count: series.count,
    };
  }
}

/**
 * Events through client-node's CoreV1Api. The patch is a JSON merge patch:
 * the generated method would otherwise send application/json-patch+json,
 * its first media type, and the API server would refuse the body. Each
 * request has a deadline: the recorder sends one Event at a time, so one
 * request that never returns would stop every Event after it.
 */
export function clientNodeEventSink(core: CoreV1Api, timeoutMs = DEFAULT_API_TIMEOUT_MS): EventSink {
  return {
    create: (namespace, body) => withDeadline(timeoutMs, 'create Event', (options) => core.createNamespacedEvent({ namespace, body }, options)),
    patch: (namespace, name, body) =>
      withDeadline(timeoutMs, 'patch Event', (options) => core.patchNamespacedEvent({ namespace, name, body }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch, options))),
  };
}
