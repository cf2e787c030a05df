// One pass over one slot: read what is true (the slot's state, its PVs),
// decide (decide.ts), act, and repeat until nothing is left to do. Every
// destructive step is confirmed against the API server first, not the
// informer's cache: a recycle only runs when a fresh read of the PV shows it
// Released (same uid, reclaim Delete, not being deleted), or when a fresh
// read shows the claimed generation's PV is really gone, so a stale or
// empty cache can never erase a Bound volume's data (invariant 4).
import type { V1PersistentVolume } from '@kubernetes/client-node';
import { claim, prepare, recycle, slotStatusBetweenHooks, verifiedEvidence, type SlotStatus, type TrashCollector, type Volume } from '../../volume/index.js';
import type { AgentClass, AgentLogger, AgentSettings, AgentSignals, Reporter } from '../agent-types.js';
import { hookStepObserver, reportStep, type AgentOperation, type AgentStep, type AgentStepObserver } from '../agent-steps.js';
import type { KubeApi } from '../kube/api.js';
import { filesystemBytes } from '../pv/capacity.js';
import { buildPv, pvName, unsupportedMountOptions } from '../pv/pv-spec.js';
import type { SlotRecord } from '../slots.js';
import { decide, pvsOfSlot, type PvView } from './decide.js';

export interface NodeInfo {
  name: string;
  uid?: string | undefined;
  labels: Record<string, string>;
}

export interface StorageClassInfo {
  reclaimPolicy: 'Delete' | 'Retain';
  mountOptions: string[];
}

export interface ReconcilerContext {
  api: KubeApi;
  driverName: string;
  node(): NodeInfo;
  settings(): AgentSettings;
  /** The cached PVs of this node; undefined until the informer has synced. */
  pvs(): readonly V1PersistentVolume[] | undefined;
  storageClass(name: string): Promise<StorageClassInfo | undefined>;
  trash: TrashCollector;
  report: Reporter;
  signals: Partial<AgentSignals>;
  log: AgentLogger;
  /** Told after each durable step (agent-steps.ts: offer, bind, reclaim): the crash tests kill the agent there. */
  onStep?: AgentStepObserver | undefined;
}

/**
 * The durable steps of a reclaim, in order: the recycle's own (lib/volume),
 * then the old PV's deletion and the new PV's creation. A kill after any of
 * them converges on restart (decide.ts); the crash test drives every one.
 * Defined with the agent's other operations in agent-steps.ts.
 */
export { RECLAIM_STEPS } from '../agent-steps.js';

export interface SlotOutcome {
  /** The slot's current volume, if any. */
  volume?: Volume;
  /** Why the slot is not offered, when it is not. */
  waiting?: string;
  problem?: boolean;
}

const MAX_STEPS = 6;

export async function reconcileSlot(record: SlotRecord, ctx: ReconcilerContext): Promise<SlotOutcome> {
  const protector = record.protector;
  if (record.condition !== 'ready' || protector === undefined || record.descriptor === undefined) return { waiting: record.problem ?? 'the slot is not ready', problem: true };
  const cls = record.class;
  // A PV created in a pass that recycled or deleted an erased generation's PV
  // ends a reclaim; the first offer of a fresh slot is no reclaim step, and
  // reporting it would kill a crash test's agent before the reclaim begins.
  let reclaiming = false;
  for (let steps = 0; steps < MAX_STEPS; steps++) {
    // Between hooks, never during one: a resync or a PV event runs this beside kubelet's unpublishes, and the read's
    // fd on the volume directory would make a lock's REMOVE_KEY find files busy. It waits as a hook of its own would.
    let status = await slotStatusBetweenHooks(record.root);
    if (status.volume === null) {
      await timed(ctx, 'prepare', () => prepare(record.root, protector, { trash: ctx.trash, ...observed(ctx, 'offer', record.root) }));
      ctx.report.record(nodeRef(ctx), 'Normal', 'Prepared', `slot ${record.key}: a new encrypted volume was prepared`);
      status = await slotStatusBetweenHooks(record.root);
    }
    const v = status.volume;
    if (v === null) return { waiting: 'the slot has no volume', problem: true };
    const volume: Volume = { slot: status.root, name: v.name, path: v.path, generation: v.generation, identifier: v.identifier };
    if (v.phase !== 'ready') return { volume, waiting: `volume ${v.name} is ${v.phase}; run \`fscrypt-local reconcile ${record.root}\``, problem: true };
    if (v.problem !== undefined) return { volume, waiting: `volume ${v.name} is not offered: ${v.problem}`, problem: true };

    const cached = ctx.pvs();
    if (cached === undefined) return { volume, waiting: 'waiting for the PersistentVolume list' };
    const sc = await ctx.storageClass(record.className);
    if (sc === undefined) return { volume, waiting: `StorageClass ${record.className} does not exist: create it (provisioner kubernetes.io/no-provisioner)`, problem: true };
    const views = pvsOfSlot(cached, ctx.node().name, ctx.driverName, record.descriptor);
    const decisions = decide({ descriptor: record.descriptor, generation: v.generation, claimed: v.claimed }, views, sc.reclaimPolicy);

    let acted = false;
    let waiting: SlotOutcome | undefined;
    for (const d of decisions) {
      if (d.action === 'claim') {
        if ((await claim(volume)).recorded) await report(ctx, record, 'bind', 'bind:claim-recorded');
        acted = true;
      } else if (d.action === 'delete-pv') {
        const result = await ctx.api.deletePv(d.pv.name, d.pv.uid);
        if (result === 'deleted') ctx.log.info({ slot: record.key, pv: d.pv.name }, `deleted PersistentVolume: ${d.why}`);
        reclaiming = true;
        await report(ctx, record, 'reclaim', 'reclaim:old-pv-deleted');
      } else if (d.action === 'recycle') {
        if (!(await confirmRecycle(ctx, record, v.generation, d.why, d.pv))) return { volume, waiting: 'the PersistentVolume changed; looking again' };
        const result = await timed(ctx, 'recycle', () => recycle(volume, protector, { trash: ctx.trash, ...observed(ctx, 'reclaim', record.root) }));
        reclaiming = true;
        const target = d.pv ? pvRef(d.pv) : nodeRef(ctx);
        ctx.report.record(target, 'Normal', 'CryptoErased', `${result.erased} of slot ${record.key} was crypto-erased (its key is destroyed); ${result.next.name} is ready for the next claim`);
        acted = true;
        break; // the slot changed: decide again
      } else if (d.action === 'create-pv') {
        await createPv(ctx, record, cls, volume, status, sc, reclaiming);
        acted = true;
      } else {
        waiting = { volume, waiting: d.why, ...(d.problem ? { problem: true } : {}) };
      }
    }
    if (!acted) return waiting ?? { volume };
    if (decisions.every((d) => d.action !== 'recycle' && d.action !== 'claim')) return waiting ?? { volume };
  }
  return { waiting: 'the slot did not settle; trying again later', problem: true };
}

/** A fresh read says the recycle is still what the PV's owner asked for. */
async function confirmRecycle(ctx: ReconcilerContext, record: SlotRecord, generation: number, why: 'released' | 'claimed-without-pv', pv: PvView | undefined): Promise<boolean> {
  if (why === 'released') {
    if (pv === undefined) return false;
    const fresh = await ctx.api.readPv(pv.name);
    return (
      fresh !== undefined &&
      fresh.metadata?.uid === pv.uid &&
      fresh.status?.phase === 'Released' &&
      fresh.metadata?.deletionTimestamp == null &&
      (fresh.spec?.persistentVolumeReclaimPolicy ?? 'Delete') === 'Delete'
    );
  }
  const name = pvName({ node: ctx.node(), className: record.className, slotName: record.name, slot: record.descriptor!, generation });
  return (await ctx.api.readPv(name)) === undefined;
}

async function createPv(ctx: ReconcilerContext, record: SlotRecord, cls: AgentClass, volume: Volume, status: SlotStatus, sc: StorageClassInfo, reclaiming: boolean): Promise<void> {
  const refused = unsupportedMountOptions(sc.mountOptions);
  if (refused.length > 0) {
    ctx.report.record(
      nodeRef(ctx),
      'Warning',
      'MountOptionsRefused',
      `StorageClass ${record.className} has mountOptions ${refused.join(', ')}, which a bind mount of an encrypted directory cannot honour (only ro); no PersistentVolume is offered for slot ${record.key} until they are removed`,
    );
    throw new Error(`StorageClass ${record.className}: mount options ${refused.join(', ')} cannot be honoured`);
  }
  // Invariant 1: the policy is verified now, by the kernel, and the PV carries what the kernel said.
  const evidence = await verifiedEvidence(volume);
  const settings = ctx.settings();
  const pv = buildPv({
    driverName: ctx.driverName,
    node: ctx.node(),
    className: record.className,
    slotName: record.name,
    slot: status.protector,
    generation: volume.generation,
    evidence,
    capacityBytes: await filesystemBytes(record.root),
    accessMode: cls.accessMode,
    fsType: cls.fsType,
    selector: cls.selector,
    reclaimPolicy: sc.reclaimPolicy,
    mountOptions: sc.mountOptions,
    nodeLabelsForPV: settings.nodeLabelsForPV,
    labelsForPV: settings.labelsForPV,
    setOwnerRef: settings.setPVOwnerRef,
  });
  const created = await ctx.api.createPv(pv);
  // Either way the PV now exists: a reclaim's replacement, or the first offer of the slot's volume.
  if (reclaiming) await report(ctx, record, 'reclaim', 'reclaim:new-pv-created');
  else await report(ctx, record, 'offer', 'offer:pv-created');
  if (created.result === 'created') {
    ctx.log.info({ slot: record.key, pv: pv.metadata!.name, generation: volume.generation }, 'created PersistentVolume');
    ctx.report.record({ kind: 'PersistentVolume', name: pv.metadata!.name!, ...(created.uid ? { uid: created.uid } : {}) }, 'Normal', 'Prepared', `encrypted volume ${volume.name} of slot ${record.key} on node ${ctx.node().name} is offered (policy verified: ${pv.metadata!.annotations!['fscrypt-local.github.io/policy']})`);
  }
}

async function report(ctx: ReconcilerContext, record: SlotRecord, operation: AgentOperation, step: AgentStep): Promise<void> {
  await reportStep(ctx.onStep, step, { operation, slot: record.root });
}

/** The hook options that forward a hook's steps to the observer as `operation`'s. */
function observed(ctx: ReconcilerContext, operation: 'offer' | 'reclaim', slot: string): { onStep?: NonNullable<ReturnType<typeof hookStepObserver>> } {
  const onStep = hookStepObserver(ctx.onStep, operation, slot);
  return onStep ? { onStep } : {};
}

async function timed<T>(ctx: ReconcilerContext, hook: string, fn: () => Promise<T>): Promise<T> {
  const start = process.hrtime.bigint();
  let outcome: 'ok' | 'error' = 'error';
  try {
    const result = await fn();
    outcome = 'ok';
    return result;
  } finally {
    ctx.signals.observeHook?.(hook, Number(process.hrtime.bigint() - start) / 1e9, outcome);
  }
}

function nodeRef(ctx: ReconcilerContext) {
  const node = ctx.node();
  return { kind: 'Node' as const, name: node.name, ...(node.uid ? { uid: node.uid } : {}) };
}

function pvRef(pv: PvView) {
  return { kind: 'PersistentVolume' as const, name: pv.name, ...(pv.uid ? { uid: pv.uid } : {}) };
}
