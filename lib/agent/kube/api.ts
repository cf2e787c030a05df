// The few Kubernetes API calls the agent makes, in one place: PVs (create,
// read, delete), StorageClasses (read), the Node (read, taint removal) and
// the core API handle the Event recorder writes through. One place means one
// list of verbs for the ClusterRole, and every failure becomes a KubeApiError
// with the HTTP status and the Status reason, counted by verb and resource.
import {
  ApiException,
  CoreV1Api,
  PatchStrategy,
  StorageV1Api,
  setHeaderOptions,
  type KubeConfig,
  type V1Node,
  type V1PersistentVolume,
  type V1StorageClass,
} from '@kubernetes/client-node';
import type { ConfigurationOptions } from '@kubernetes/client-node';
import { DEFAULT_API_TIMEOUT_MS, RequestTimeout, withDeadline } from './request-timeout.js';

export type Verb = 'get' | 'list' | 'watch' | 'create' | 'delete' | 'patch';

/** Counts API calls (the agent's metrics). */
export interface ApiObserver {
  request(verb: Verb, resource: string): void;
  error(verb: Verb, resource: string, status: number | 'network'): void;
}

export class KubeApiError extends Error {
  override readonly name = 'KubeApiError';
  constructor(
    message: string,
    /** The HTTP status, or undefined for a network error. */
    readonly status: number | undefined,
    /** The Status reason (NotFound, AlreadyExists, Conflict, ...), when the server sent one. */
    readonly reason: string | undefined,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** The HTTP status and Status reason of a failed call (ApiException's body is the raw text). */
export function apiFailure(error: unknown, what: string): KubeApiError {
  if (error instanceof KubeApiError) return error;
  if (error instanceof RequestTimeout) return new KubeApiError(error.message, undefined, 'Timeout', { cause: error });
  if (error instanceof ApiException) {
    let reason: string | undefined;
    let detail = '';
    try {
      const status = (typeof error.body === 'string' ? JSON.parse(error.body) : error.body) as { reason?: unknown; message?: unknown };
      if (typeof status.reason === 'string') reason = status.reason;
      if (typeof status.message === 'string') detail = `: ${status.message}`;
    } catch {
      // Not a Status: the code says enough.
    }
    return new KubeApiError(`${what}: HTTP ${error.code}${reason ? ` ${reason}` : ''}${detail}`, error.code, reason, { cause: error });
  }
  return new KubeApiError(`${what}: ${(error as Error)?.message ?? String(error)} (is the API server reachable?)`, undefined, undefined, { cause: error });
}

export class KubeApi {
  readonly core: CoreV1Api;
  readonly #storage: StorageV1Api;
  readonly #observer: ApiObserver | undefined;
  readonly #timeoutMs: number;

  constructor(kc: KubeConfig, observer?: ApiObserver, options: { timeoutMs?: number } = {}) {
    this.core = kc.makeApiClient(CoreV1Api);
    this.#storage = kc.makeApiClient(StorageV1Api);
    this.#observer = observer;
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_API_TIMEOUT_MS;
  }

  async #call<T>(verb: Verb, resource: string, what: string, fn: (options: ConfigurationOptions) => Promise<T>): Promise<T> {
    this.#observer?.request(verb, resource);
    try {
      return await withDeadline(this.#timeoutMs, what, fn);
    } catch (error) {
      const failure = apiFailure(error, what);
      this.#observer?.error(verb, resource, failure.status ?? 'network');
      throw failure;
    }
  }

  /** Creates a PV; 'exists' if one of that name is there already (a retry after a lost answer). */
  async createPv(pv: V1PersistentVolume): Promise<{ result: 'created'; uid: string | undefined } | { result: 'exists' }> {
    try {
      const created = await this.#call('create', 'persistentvolumes', `create PersistentVolume ${pv.metadata?.name}`, (o) => this.core.createPersistentVolume({ body: pv }, o));
      return { result: 'created', uid: created.metadata?.uid };
    } catch (error) {
      if (error instanceof KubeApiError && error.status === 409) return { result: 'exists' };
      throw error;
    }
  }

  /** The PV, or undefined if there is none of that name (an authoritative read, not the informer's cache). */
  async readPv(name: string): Promise<V1PersistentVolume | undefined> {
    try {
      return await this.#call('get', 'persistentvolumes', `read PersistentVolume ${name}`, (o) => this.core.readPersistentVolume({ name }, o));
    } catch (error) {
      if (error instanceof KubeApiError && error.status === 404) return undefined;
      throw error;
    }
  }

  /** Deletes the PV with that name and uid (a precondition: never a newer PV of the same name); 'gone' if it is not there. */
  async deletePv(name: string, uid: string | undefined): Promise<'deleted' | 'gone'> {
    try {
      await this.#call('delete', 'persistentvolumes', `delete PersistentVolume ${name}`, (o) =>
        this.core.deletePersistentVolume({ name, body: uid === undefined ? {} : { preconditions: { uid } } }, o),
      );
      return 'deleted';
    } catch (error) {
      if (error instanceof KubeApiError && error.status === 404) return 'gone';
      throw error;
    }
  }

  async readStorageClass(name: string): Promise<V1StorageClass | undefined> {
    try {
      return await this.#call('get', 'storageclasses', `read StorageClass ${name}`, (o) => this.#storage.readStorageClass({ name }, o));
    } catch (error) {
      if (error instanceof KubeApiError && error.status === 404) return undefined;
      throw error;
    }
  }

  async readNode(name: string): Promise<V1Node> {
    return this.#call('get', 'nodes', `read Node ${name}`, (o) => this.core.readNode({ name }, o));
  }

  /**
   * Removes the taint `key` from the Node. A JSON patch that first tests the
   * taints it read, so a concurrent change of the taints (kubelet, another
   * controller) fails the patch instead of being overwritten; the caller
   * retries. True if the taint was there.
   */
  async removeNodeTaint(name: string, key: string): Promise<boolean> {
    const node = await this.readNode(name);
    const taints = node.spec?.taints ?? [];
    if (!taints.some((t) => t.key === key)) return false;
    const body = [
      { op: 'test', path: '/spec/taints', value: taints.map(plainTaint) },
      { op: 'replace', path: '/spec/taints', value: taints.filter((t) => t.key !== key).map(plainTaint) },
    ];
    await this.#call('patch', 'nodes', `remove taint ${key} from Node ${name}`, (o) =>
      this.core.patchNode({ name, body }, setHeaderOptions('Content-Type', PatchStrategy.JsonPatch, o)),
    );
    return true;
  }
}

/** A taint as the API serves it (the client's objects hold Dates). */
function plainTaint(t: { key: string; effect: string; value?: string; timeAdded?: Date | string }): Record<string, string> {
  return {
    key: t.key,
    effect: t.effect,
    ...(t.value === undefined ? {} : { value: t.value }),
    ...(t.timeAdded === undefined ? {} : { timeAdded: t.timeAdded instanceof Date ? t.timeAdded.toISOString().replace(/\.\d{3}Z$/, 'Z') : t.timeAdded }),
  };
}
