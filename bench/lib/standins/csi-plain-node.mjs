// The PLAIN baseline of bench/csi.mjs: a CSI node service that publishes an
// unencrypted directory through the same server path as the real one, so
// that publish(encrypted) / publish(plain) is the cost of encryption.
//
// Shared with the real service (the same code, from dist/): grpc-js on a
// unix socket, the csi.v1 definitions, rpc.ts's unary wrapper (deadline
// signal, error mapping, log line, in-flight record), checkPublishRequest,
// publishTarget / unpublishTarget, the VolumeResolver (handle parsed, slot
// table, slot state read, generation and key checked), the slot lock
// (withVolumeLock: queue + flock), the slot state (readSlotState,
// writeSlotState: one datasync'ed write), currentRecord (the volume claim
// checked against the state, the slot a mount point), and lib/volume's
// mount helpers (isBindOf, mountAt, bindMount, unmount: mount(8) and the
// mountinfo checks).
//
// The hooks below are lib/volume's unlock and lock step for step, less what
// is about encryption: no check of the directory's encryption policy
// (verifyVolumeDirectory), no key unwrap, no FS_IOC_ADD_ENCRYPTION_KEY on
// publish, no FS_IOC_REMOVE_ENCRYPTION_KEY (and key status) on unpublish.
// They report the same marks as the real hooks' steps (through `observe`,
// shaped as the CsiServer's hookObserver is called), plus the time of the
// state write itself, which the real hooks do not expose.
import { mkdir, realpath, rmdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { unary } from '../../../dist/agent/csi/rpc.js';
import { csiPackage } from '../../../dist/agent/csi/proto.js';
import { CsiError } from '../../../dist/agent/csi/errors.js';
import { checkPublishRequest } from '../../../dist/agent/csi/publish-request.js';
import { publishTarget, unpublishTarget } from '../../../dist/agent/csi/target-path.js';
import { VolumeResolver } from '../../../dist/agent/csi/volumes.js';
import { currentRecord, stillPublished } from '../../../dist/volume/hooks/current-volume.js';
import { withVolumeLock } from '../../../dist/volume/hooks/hook-lock.js';
import { bindMount, isBindOf, mountAt, unmount } from '../../../dist/volume/mounts/mounts.js';
import { readSlotState, writeSlotState } from '../../../dist/volume/slot/slot-state.js';
import { slotRoot } from '../../../dist/volume/slot/slot.js';

/** A plain slot's state: the shape (and so the size) of an encrypted slot's, with one ready volume. */
export function plainSlotState(descriptor, identifier) {
  return {
    version: 1,
    protector: descriptor,
    nextGeneration: 2,
    volume: { generation: 1, name: 'vol-1', identifier, phase: 'ready', targets: [], adminUnlocked: false, createdAt: new Date().toISOString() },
  };
}

/**
 * unlock without encryption. `watch.step(name)` after each durable step,
 * `watch.stateWrite(ns)` with the write's own duration.
 */
async function publishHook(volume, target, options, watch) {
  return withVolumeLock(volume, options, async () => {
    const state = await readSlotState(volume.slot);
    const record = await currentRecord(state, volume, 'unlock');
    await realpath(dirname(target)); // unlock's check that the target is not in the slot
    const alreadyPublished = await isBindOf(target, volume.path, { readonly: false });
    if (!alreadyPublished) {
      const mounted = await mountAt(target);
      if (mounted) throw new Error(`${target} already has a different mount (${mounted.source})`);
    }
    if (!record.targets.some((t) => t.path === target)) {
      record.targets.push({ path: target, readonly: false });
      await timedStateWrite(volume.slot, state, watch);
      watch.step('plain:target-recorded');
    }
    if (!alreadyPublished) {
      await mkdir(target, { mode: 0o750 }).catch((error) => {
        if (error.code !== 'EEXIST') throw error;
      });
      await bindMount(volume.path, target, { readonly: false });
      watch.step('plain:mounted');
    }
  });
}

/** lock without encryption: the target unmounted and removed, the state updated. */
async function unpublishHook(volume, target, options, watch) {
  // lock's check that the slot's filesystem is still there.
  await slotRoot(volume.slot);
  await readSlotState(volume.slot);
  return withVolumeLock(volume, options, async () => {
    const state = await readSlotState(volume.slot);
    const record = await currentRecord(state, volume, 'lock');
    if (await isBindOf(target, volume.path)) await unmount(target);
    else if (await mountAt(target)) throw new Error(`${target} has a mount that is not ${volume.path}`);
    await rmdir(target).catch((error) => {
      if (error.code !== 'ENOENT' && error.code !== 'ENOTEMPTY') throw error;
    });
    watch.step('plain:unmounted');
    record.targets = await stillPublished(
      volume,
      record.targets.filter((t) => t.path !== target),
    );
    await timedStateWrite(volume.slot, state, watch);
    watch.step('plain:recorded');
  });
}

async function timedStateWrite(slot, state, watch) {
  const start = process.hrtime.bigint();
  await writeSlotState(slot, state);
  watch.stateWrite(Number(process.hrtime.bigint() - start));
}

/**
 * Starts the plain service on `socket`. `slots`: a Map of descriptor →
 * { root } (no protector); `observe({ rpc, volumeId, event })` as a
 * CsiServer's hookObserver, and `observe.stateWrite(rpc, volumeId, ns)`.
 * Returns stop().
 */
export async function startPlainNodeServer({ socket, nodeId, kubeletDir, slots, log, observe }) {
  const stopping = new AbortController();
  const inFlight = new Set();
  const rpc = { log, nodeId, maxCallMs: 120_000, stopping: stopping.signal, inFlight };
  const resolver = new VolumeResolver(slots, nodeId);

  const hook = async (rpcName, volumeId, run) => {
    const watch = {
      step: (step) => observe({ rpc: rpcName, volumeId, event: { kind: 'step', step } }),
      stateWrite: (ns) => observe.stateWrite(rpcName, volumeId, ns),
    };
    observe({ rpc: rpcName, volumeId, event: { kind: 'hook-start' } });
    let ok = false;
    try {
      await run(watch);
      ok = true;
    } finally {
      observe({ rpc: rpcName, volumeId, event: { kind: 'hook-end', ok } });
    }
  };

  const publish = async (request, context) => {
    const args = checkPublishRequest(request);
    const target = await publishTarget(kubeletDir, args.target);
    const { volume } = await resolver.resolve(args.volumeId);
    const options = { signal: context.signal, lockTimeoutMs: context.lockTimeoutMs };
    await hook('NodePublishVolume', args.volumeId, (watch) => publishHook(volume, target, options, watch));
    return {};
  };

  const unpublish = async (request, context) => {
    if (!request.volume_id) throw new CsiError('INVALID_ARGUMENT', 'volume_id is required');
    if (!request.target_path) throw new CsiError('INVALID_ARGUMENT', 'target_path is required');
    const target = await unpublishTarget(kubeletDir, request.target_path);
    const { volume } = await resolver.resolve(request.volume_id, { unpublish: true });
    const options = { signal: context.signal, lockTimeoutMs: context.lockTimeoutMs };
    await hook('NodeUnpublishVolume', request.volume_id, (watch) => unpublishHook(volume, target, options, watch));
    return {};
  };

  const fields = (r) => ({ volume_id: r.volume_id, target: r.target_path });
  const server = new grpc.Server();
  server.addService(csiPackage().Node.service, {
    NodePublishVolume: unary('NodePublishVolume', rpc, fields, publish),
    NodeUnpublishVolume: unary('NodeUnpublishVolume', rpc, fields, unpublish),
    // For the gRPC round trip alone, as on the real server.
    NodeGetCapabilities: unary('NodeGetCapabilities', rpc, () => ({}), async () => ({ capabilities: [] })),
  });
  await new Promise((resolve, reject) => server.bindAsync(`unix://${socket}`, grpc.ServerCredentials.createInsecure(), (error) => (error ? reject(error) : resolve())));
  return {
    async stop() {
      stopping.abort();
      await new Promise((resolve) => server.tryShutdown(resolve));
      await Promise.allSettled([...inFlight]);
    },
  };
}
