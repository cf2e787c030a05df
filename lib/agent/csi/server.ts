// The CSI node plugin's gRPC server on its unix socket: Identity and Node on
// one socket, as the spec requires. Started in-process with the node's
// table of slots and their open protectors; the agent (`fscrypt-local run`)
// starts it, and the tests do the same.
//
// The socket: a stale one (left by a kill -9) is removed before binding, but
// only if it is a socket; it is created under umask 077 and chmod 0600, so
// only root (kubelet, node-driver-registrar) can connect; stop() removes it.
//
// Protectors: the server only borrows them. The caller opens each slot's
// protector once, keeps it open while the agent runs (a passphrase source
// costs an Argon2id derivation per open; file and KMS sources are cheap, but
// one lifetime for all keeps it simple) and closes it, which wipes it, after
// stop() has returned: stop() waits for the calls in flight, so no hook is
// using a protector by then.
import { setMaxListeners } from 'node:events';
import { chmodSync, lstatSync, readFileSync, unlinkSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { BusyLocks, type PendingLock } from './busy-locks.js';
import { checkDriverName, identityService, type Readiness } from './identity.js';
import { jsonLinesLog, safeLog, type CsiLog } from './log.js';
import { nodeService } from './node.js';
import { csiPackage, type NodeGetVolumeStatsRequest, type NodePublishVolumeRequest, type NodeUnpublishVolumeRequest } from './proto.js';
import { unary, type RpcOptions } from './rpc.js';
import { VolumeResolver, type SlotTable } from './volumes.js';
import type { ProgressEvent, StepName } from '../../volume/index.js';

/** The RPCs whose lib/volume hook a HookObserver sees. */
export type ObservedRpc = 'NodePublishVolume' | 'NodeUnpublishVolume';

/**
 * What a HookObserver is told about the hook one RPC runs (unlock for a
 * publish, lock for an unpublish): that it is being called, each progress
 * event it reports (its durable steps, busy files), and that it returned
 * (ok) or threw. Calls refused before their hook (a bad request, an unknown
 * handle) tell it nothing.
 */
export interface HookObservation {
  rpc: ObservedRpc;
  /** The request's volume id: a handle, never a secret. */
  volumeId: string;
  /** The publish target (kubelet's <pods>/<pod uid>/volumes/.../mount). */
  target: string;
  event: { kind: 'hook-start' } | ProgressEvent | { kind: 'hook-end'; ok: boolean };
}

export type HookObserver = (observation: HookObservation) => void;

/**
 * Told after each durable step of the hook an RPC runs (lib/volume's
 * HookOptions.onStep: unlock's for a publish, lock's for an unpublish), and
 * awaited before the hook goes on; the agent's crash tests kill the process
 * there. What it throws is ignored.
 */
export type HookStepObserver = (step: StepName, call: { rpc: ObservedRpc; volumeId: string; target: string; slot: string }) => void | Promise<void>;

export const DEFAULT_DRIVER_NAME = 'fscrypt-local.github.io';
export const DEFAULT_KUBELET_DIR = '/var/lib/kubelet';

export interface CsiServerOptions {
  /** The CSI driver name (default fscrypt-local.github.io). */
  driverName?: string;
  /** This node's name (NodeGetInfo's node_id; the node part of every volume handle). */
  nodeId: string;
  /** kubelet's root directory (default /var/lib/kubelet): targets must lie under its pods/. */
  kubeletDir?: string;
  /** The slots this node serves, by protector descriptor. */
  slots: SlotTable;
  /** Probe's answer (default: ready). */
  readiness?: () => Readiness | Promise<Readiness>;
  /** Where to log (default: JSON lines on stderr). */
  log?: CsiLog;
  /** How long an unpublish waits for busy files before it leaves the key removal to the background (default 2 s). */
  unpublishBusyTimeoutMs?: number;
  /** Backoff of the background key removal: first delay (default 1 s), doubling up to the maximum (default 30 s). */
  busyRetry?: { initialDelayMs?: number; maxDelayMs?: number };
  /** The longest any call may run, whatever its deadline (default 120 s, kubelet's timeout). */
  maxCallMs?: number;
  /**
   * Watches the hooks of publishes and unpublishes, e.g. to time their steps
   * (bench/csi.mjs). Default none. Called synchronously on the hook's path,
   * so it must be quick; it only watches: what it throws is ignored.
   */
  hookObserver?: HookObserver;
  /** Told after each durable step of a publish's or an unpublish's hook, and awaited (tests only: the crash tests). Default none. */
  onStep?: HookStepObserver;
}

/** The socket path an endpoint names: unix:///abs/path, unix:/abs/path or /abs/path. */
export function socketPath(endpoint: string): string {
  const path = endpoint.startsWith('unix://') ? endpoint.slice('unix://'.length) : endpoint.startsWith('unix:') ? endpoint.slice('unix:'.length) : endpoint;
  if (!path.startsWith('/') || path.includes('\0')) throw new TypeError(`a CSI endpoint is unix:///absolute/path, got ${JSON.stringify(endpoint)}`);
  return path;
}

/** Removes a socket left behind by a killed server; refuses to remove anything else. */
function removeStaleSocket(path: string): void {
  const stat = lstatSync(path, { throwIfNoEntry: false });
  if (stat === undefined) return;
  if (!stat.isSocket()) throw new Error(`refusing to replace ${path}: it is not a socket (${stat.isDirectory() ? 'a directory' : stat.isSymbolicLink() ? 'a symbolic link' : 'a file'}); move it away`);
  unlinkSync(path);
}

function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version?: unknown };
  return typeof pkg.version === 'string' ? pkg.version : '0.0.0';
}

export class CsiServer {
  readonly driverName: string;
  readonly nodeId: string;
  readonly kubeletDir: string;
  readonly #options: CsiServerOptions;
  readonly #log: CsiLog;
  readonly #busyLocks: BusyLocks;
  readonly #stopping = new AbortController();
  readonly #inFlight = new Set<Promise<unknown>>();
  #server: grpc.Server | undefined;
  #socket: string | undefined;
  #state: 'new' | 'starting' | 'started' | 'stopped' = 'new';

  constructor(options: CsiServerOptions) {
    if (typeof options.nodeId !== 'string' || options.nodeId.length === 0 || Buffer.byteLength(options.nodeId) > 256) {
      throw new TypeError(`the node id is the node's name (1 to 256 bytes), got ${JSON.stringify(options.nodeId)}`);
    }
    this.driverName = checkDriverName(options.driverName ?? DEFAULT_DRIVER_NAME);
    this.nodeId = options.nodeId;
    this.kubeletDir = options.kubeletDir ?? DEFAULT_KUBELET_DIR;
    if (!this.kubeletDir.startsWith('/')) throw new TypeError(`the kubelet directory must be an absolute path, got ${JSON.stringify(this.kubeletDir)}`);
    this.#options = options;
    this.#log = safeLog(options.log ?? jsonLinesLog());
    this.#busyLocks = new BusyLocks({ log: this.#log, ...options.busyRetry });
    // Every call in flight listens on the stop signal (and lets go when it
    // ends): eleven at once is a busy node, not a leak, and Node's
    // MaxListenersExceededWarning on stderr would say otherwise (the soak,
    // test/agent/soak.test.ts, printed it with 8 volumes cycling).
    setMaxListeners(0, this.#stopping.signal);
  }

  /** The socket path while started. */
  get socket(): string | undefined {
    return this.#socket;
  }

  /** Key removals an unpublish left to the background (files still busy), with who holds them. */
  pendingLocks(): PendingLock[] {
    return this.#busyLocks.list();
  }

  /** Listens on `endpoint` (unix:///path/csi.sock). A server starts once. */
  async start(endpoint: string): Promise<void> {
    if (this.#state !== 'new') throw new Error(`this CSI server was already ${this.#state}; make a new one`);
    this.#state = 'starting';
    let path: string;
    let server: grpc.Server;
    try {
      path = socketPath(endpoint);
      server = this.#build(packageVersion());
      removeStaleSocket(path);
      const umask = process.umask(0o077);
      try {
        await new Promise<number>((resolve, reject) =>
          server.bindAsync(`unix://${path}`, grpc.ServerCredentials.createInsecure(), (error, port) => (error ? reject(error) : resolve(port))),
        );
      } finally {
        process.umask(umask);
      }
    } catch (error) {
      this.#state = 'stopped';
      throw error;
    }
    chmodSync(path, 0o600);
    this.#server = server;
    this.#socket = path;
    this.#state = 'started';
    this.#log.info({ socket: path, driver: this.driverName, node: this.nodeId, kubelet_dir: this.kubeletDir }, `CSI node service listening on ${path}`);
  }

  /**
   * Stops: calls still waiting for a slot give up (ABORTED), hooks already
   * running finish, the background key removals stop (what is left is logged),
   * and the socket is removed.
   */
  async stop(): Promise<void> {
    if (this.#state !== 'started') {
      this.#state = 'stopped';
      return;
    }
    this.#state = 'stopped';
    this.#stopping.abort(new DOMException('the CSI server is stopping', 'AbortError'));
    const server = this.#server!;
    await new Promise<void>((resolve) => {
      const force = setTimeout(() => {
        server.forceShutdown();
        resolve();
      }, 5_000);
      server.tryShutdown(() => {
        clearTimeout(force);
        resolve();
      });
    });
    await Promise.allSettled([...this.#inFlight]);
    await this.#busyLocks.stop();
    try {
      removeStaleSocket(this.#socket!);
    } catch {
      // Not a socket any more: not ours to remove.
    }
    this.#log.info({ socket: this.#socket }, 'CSI node service stopped');
  }

  #build(vendorVersion: string): grpc.Server {
    const rpc: RpcOptions = {
      log: this.#log,
      nodeId: this.nodeId,
      maxCallMs: this.#options.maxCallMs ?? 120_000,
      stopping: this.#stopping.signal,
      inFlight: this.#inFlight,
    };
    const readiness = this.#options.readiness ?? (() => ({ ready: true }) as const);
    const identity = identityService({ driverName: this.driverName, vendorVersion, readiness });
    const node = nodeService({
      nodeId: this.nodeId,
      kubeletDir: this.kubeletDir,
      resolver: new VolumeResolver(this.#options.slots, this.nodeId, readiness),
      busyLocks: this.#busyLocks,
      log: this.#log,
      unpublishBusyTimeoutMs: this.#options.unpublishBusyTimeoutMs ?? 2_000,
      hookObserver: this.#options.hookObserver,
      onStep: this.#options.onStep,
    });
    const none = (): { volume_id?: string; target?: string } => ({});
    const { Identity, Node } = csiPackage();
    const server = new grpc.Server();
    server.addService(Identity.service, {
      GetPluginInfo: unary('GetPluginInfo', rpc, none, identity.getPluginInfo),
      GetPluginCapabilities: unary('GetPluginCapabilities', rpc, none, identity.getPluginCapabilities),
      Probe: unary('Probe', rpc, none, identity.probe),
    });
    server.addService(Node.service, {
      NodeGetCapabilities: unary('NodeGetCapabilities', rpc, none, node.getCapabilities),
      NodeGetInfo: unary('NodeGetInfo', rpc, none, node.getInfo),
      NodePublishVolume: unary('NodePublishVolume', rpc, (r: NodePublishVolumeRequest) => ({ volume_id: r.volume_id, target: r.target_path }), node.publish),
      NodeUnpublishVolume: unary('NodeUnpublishVolume', rpc, (r: NodeUnpublishVolumeRequest) => ({ volume_id: r.volume_id, target: r.target_path }), node.unpublish),
      NodeGetVolumeStats: unary('NodeGetVolumeStats', rpc, (r: NodeGetVolumeStatsRequest) => ({ volume_id: r.volume_id, target: r.volume_path }), node.stats),
    });
    return server;
  }
}
