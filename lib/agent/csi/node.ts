// The CSI Node service: kubelet's NodePublishVolume is lib/volume's unlock
// (key in, volume bind-mounted at the target), its NodeUnpublishVolume is
// lock (target unmounted and removed; the last one takes the key out),
// NodeGetVolumeStats is the slot's statfs (one slot holds one volume, so it
// is exact) with the volume's condition.
//
// Concurrency. kubelet keeps one call in flight per volume, but not after a
// timeout or its own restart, and a grpc-js handler runs on after the
// client's deadline. Every hook takes its slot's lock (one hook per slot; a
// FIFO queue in this process, flock across processes), so a retry that
// arrives while the first call still runs WAITS for it in that queue, bounded
// by the retry's own deadline, and then runs the hook again: the hooks are
// idempotent, so the retry answers with the real outcome (OK once the first
// publish mounted the target) rather than with an error kubelet must retry
// once more. ceph-csi answers ABORTED at once instead (its VolumeLocks);
// that would only be needed if a hook could not be repeated safely. A call
// whose deadline passes while it waits answers DEADLINE_EXCEEDED, one
// cancelled or outwaited by another process's hold on the slot ABORTED:
// both make kubelet retry (docs/csi.md).
import { realpath, statfs } from 'node:fs/promises';
import { posix } from 'node:path';
import { isFscryptError } from '../../kernel/errors.js';
import { lock, slotStatusBetweenHooks, unlock, type Blocker, type ProgressEvent, type StepName } from '../../volume/index.js';
import { mountAt } from '../../volume/mounts/mounts.js';
import type { BusyLocks } from './busy-locks.js';
import { CsiError } from './errors.js';
import type { CsiLog } from './log.js';
import type { NodeGetCapabilitiesResponse, NodeGetInfoResponse, NodeGetVolumeStatsRequest, NodeGetVolumeStatsResponse, NodePublishVolumeRequest, NodeUnpublishVolumeRequest } from './proto.js';
import { checkPublishRequest } from './publish-request.js';
import type { CallContext } from './rpc.js';
import type { HookObservation, HookObserver, HookStepObserver, ObservedRpc } from './server.js';
import { publishTarget, unpublishTarget } from './target-path.js';
import type { VolumeResolver } from './volumes.js';

export interface NodeOptions {
  nodeId: string;
  kubeletDir: string;
  resolver: VolumeResolver;
  busyLocks: BusyLocks;
  log: CsiLog;
  /** How long an unpublish waits for busy files before leaving the key removal to the background (default 2 s). */
  unpublishBusyTimeoutMs: number;
  /** Told about every publish's and unpublish's hook (CsiServerOptions.hookObserver). */
  hookObserver?: HookObserver | undefined;
  /** Told after each durable step of the hook (CsiServerOptions.onStep). */
  onStep?: HookStepObserver | undefined;
}

// How long NodeGetVolumeStats waits for a hook on the slot to finish: far above a hook's milliseconds, well
// inside kubelet's stats period (a minute), so a stats call behind a hook stuck on a hung disk gives up in time.
const STATS_LOCK_TIMEOUT_MS = 5_000;

export function nodeService(options: NodeOptions) {
  const { resolver, busyLocks, log } = options;

  return {
    async getCapabilities(): Promise<NodeGetCapabilitiesResponse> {
      return { capabilities: [{ rpc: { type: 'GET_VOLUME_STATS' } }, { rpc: { type: 'VOLUME_CONDITION' } }] };
    },

    async getInfo(): Promise<NodeGetInfoResponse> {
      // No topology: a PV of this driver carries its node affinity itself.
      return { node_id: options.nodeId, max_volumes_per_node: '0' };
    },

    async publish(request: NodePublishVolumeRequest, context: CallContext): Promise<Record<string, never>> {
      const args = checkPublishRequest(request);
      const target = await publishTarget(options.kubeletDir, args.target);
      const { entry, volume } = await resolver.resolve(args.volumeId);
      if (entry.protector === undefined) {
        // The pod's events show this message: the reason itself (which plugin socket, which key file) saves a trip to the agent's log.
        const why = entry.unavailable === undefined ? "the agent could not open its protector: a KMS plugin down, a key file missing?; the agent's log says why" : entry.unavailable;
        throw new CsiError('UNAVAILABLE', `the key source of slot ${entry.root} is not open yet (${why}); kubelet retries, and the agent keeps trying to open it`);
      }
      const protector = entry.protector;
      const watch = watched(options, 'NodePublishVolume', args.volumeId, target, volume.slot);
      await watch.run(() =>
        unlock(volume, protector, { path: target, readonly: args.readonly }, { signal: context.signal, lockTimeoutMs: context.lockTimeoutMs, onProgress: watch.onProgress, ...watch.stepOption }),
      );
      busyLocks.cancel(volume);
      return {};
    },

    async unpublish(request: NodeUnpublishVolumeRequest, context: CallContext): Promise<Record<string, never>> {
      if (!request.volume_id) throw new CsiError('INVALID_ARGUMENT', 'volume_id is required');
      if (!request.target_path) throw new CsiError('INVALID_ARGUMENT', 'target_path is required');
      const target = await unpublishTarget(options.kubeletDir, request.target_path);
      let resolved;
      try {
        resolved = await resolver.resolve(request.volume_id, { unpublish: true });
      } catch (error) {
        const unknown = (error instanceof CsiError && error.grpcCode === 'NOT_FOUND') || isFscryptError(error, 'ERR_NO_VOLUME', 'ERR_NOT_CURRENT');
        if (!unknown) throw error;
        // An unknown volume has nothing published here (kubelet may retry an
        // unpublish that succeeded): OK. Unless something is still mounted at
        // the target: then OK would be a lie, and it is not ours to touch.
        const mounted = await mountAt(target).catch(() => undefined);
        if (mounted !== undefined) {
          throw new CsiError(
            'FAILED_PRECONDITION',
            `${target} still has a mount (${mounted.source} ${mounted.root}), but ${error instanceof Error ? error.message : String(error)}; it is left alone: unmount it by hand if it is stale`,
          );
        }
        return {};
      }
      const { volume } = resolved;
      let blockers: Blocker[] = [];
      const watch = watched(options, 'NodeUnpublishVolume', request.volume_id, target, volume.slot);
      try {
        const result = await watch.run(() =>
          lock(volume, target, {
            signal: context.signal,
            lockTimeoutMs: context.lockTimeoutMs,
            busyTimeoutMs: options.unpublishBusyTimeoutMs,
            onProgress: (event) => {
              if (event.kind === 'busy') blockers = event.blockers;
              watch.onProgress(event);
            },
            ...watch.stepOption,
          }),
        );
        if (result.warning !== undefined) log.warn({ volume_id: request.volume_id, target, volume: volume.path }, result.warning);
      } catch (error) {
        if (!isFscryptError(error, 'ERR_FILES_BUSY')) throw error;
        // The target is unmounted and removed: kubelet's part is done. The
        // key is only incompletely removed; the background retrier finishes.
        busyLocks.add(request.volume_id, volume, target, blockers);
        log.warn(
          { volume_id: request.volume_id, target, volume: volume.path, blockers },
          `unpublished ${target}, but the key of ${volume.path} is only incompletely removed: ${error instanceof Error ? error.message : String(error)}\n` +
            'The agent keeps removing it in the background.',
        );
      }
      return {};
    },

    async stats(request: NodeGetVolumeStatsRequest): Promise<NodeGetVolumeStatsResponse> {
      if (!request.volume_id) throw new CsiError('INVALID_ARGUMENT', 'volume_id is required');
      if (!request.volume_path) throw new CsiError('INVALID_ARGUMENT', 'volume_path is required');
      const { entry, volume } = await resolver.resolve(request.volume_id);
      const path = await resolvedPath(request.volume_path);
      // Read between hooks, never during one: kubelet's stats collector runs beside its publishes and unpublishes,
      // and this read's fd on the volume directory would make a lock's REMOVE_KEY find files busy. A hook takes
      // milliseconds; one stuck on a hung disk makes this ERR_SLOT_LOCKED (ABORTED) after STATS_LOCK_TIMEOUT_MS.
      const status = await slotStatusBetweenHooks(entry.root, { timeoutMs: STATS_LOCK_TIMEOUT_MS });
      const target = path === undefined ? undefined : status.volume?.targets.find((t) => t.path === path);
      if (status.volume === null || target === undefined) {
        throw new CsiError('NOT_FOUND', `${request.volume_path} is not a target of this volume (${volume.path})`);
      }
      const fs = await statfs(entry.root, { bigint: true });
      const problems: string[] = [];
      if (!target.mounted) problems.push(`the volume is no longer mounted at ${target.path}`);
      if (status.volume.key !== 'present') problems.push(`its key is ${status.volume.key} in the kernel, so its files cannot be read`);
      if (status.volume.problem !== undefined) problems.push(status.volume.problem);
      return {
        usage: [
          { unit: 'BYTES', total: String(fs.blocks * fs.bsize), available: String(fs.bavail * fs.bsize), used: String((fs.blocks - fs.bfree) * fs.bsize) },
          { unit: 'INODES', total: String(fs.files), available: String(fs.ffree), used: String(fs.files - fs.ffree) },
        ],
        volume_condition:
          problems.length === 0
            ? { abnormal: false, message: `published at ${target.path}, key present` }
            : { abnormal: true, message: `${problems.join('; ')}. To fix: delete the pod, so that kubelet publishes the volume again` },
      };
    },
  };
}

/** `path` with its parent's symlinks resolved, as publish recorded it; undefined if it is not there. */
async function resolvedPath(path: string): Promise<string | undefined> {
  if (!path.startsWith('/') || path.includes('\0')) return undefined;
  try {
    return `${await realpath(posix.dirname(path))}/${posix.basename(path)}`;
  } catch {
    return undefined;
  }
}

/**
 * One RPC's view for the hook observers: `run` wraps the hook (its start and
 * end), `onProgress` forwards what the hook reports, `stepOption` is the
 * hook's onStep when a step observer is set. Without observers they are
 * nearly free; with them, what they throw is dropped (lib/volume drops what
 * onStep throws), so they can never change a call's outcome.
 */
function watched(options: Pick<NodeOptions, 'hookObserver' | 'onStep'>, rpc: ObservedRpc, volumeId: string, target: string, slot: string) {
  const observer = options.hookObserver;
  const onStep = options.onStep;
  const send = (event: HookObservation['event']): void => {
    if (observer === undefined) return;
    try {
      observer({ rpc, volumeId, target, event });
    } catch {
      // An observer watches; it never decides.
    }
  };
  return {
    onProgress: (event: ProgressEvent): void => send(event),
    stepOption: onStep === undefined ? {} : { onStep: (step: StepName) => onStep(step, { rpc, volumeId, target, slot }) },
    async run<T>(hook: () => Promise<T>): Promise<T> {
      send({ kind: 'hook-start' });
      let ok = false;
      try {
        const result = await hook();
        ok = true;
        return result;
      } finally {
        send({ kind: 'hook-end', ok });
      }
    },
  };
}
