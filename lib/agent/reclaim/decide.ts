// What one slot needs, from what is true now: the slot's current generation
// (its own state) and the PVs the API server has for the slot. A pure
// function, so each rule is tested on its own and a restarted agent, which
// re-derives everything from the same two sources, converges from any point
// a kill left it at: no PV kept for an erased generation, never two PVs for
// one generation, never a PV for a generation a tenant had (invariant 8),
// and a Bound PV's data never touched (invariant 4).
import type { V1PersistentVolume } from '@kubernetes/client-node';
import { nodeTag, parseVolumeHandle } from '../csi/index.js';

export interface SlotView {
  /** The slot's protector descriptor. */
  descriptor: string;
  generation: number;
  /** The generation was handed to a tenant (lib/volume claim). */
  claimed: boolean;
}

export interface PvView {
  name: string;
  uid: string | undefined;
  generation: number;
  phase: string | undefined;
  /** spec.claimRef is set: bound now, or released by its claim. */
  claimRef: boolean;
  deleting: boolean;
  reclaimPolicy: string | undefined;
}

export type Decision =
  | { action: 'claim' }
  | { action: 'delete-pv'; pv: PvView; why: string }
  | { action: 'recycle'; why: 'released' | 'claimed-without-pv'; pv?: PvView }
  | { action: 'create-pv' }
  | { action: 'wait'; why: string; problem?: boolean };

/** The PVs of `descriptor`'s slot on this node, read from their volume handles. */
export function pvsOfSlot(pvs: readonly V1PersistentVolume[], nodeName: string, driverName: string, descriptor: string): PvView[] {
  const tag = nodeTag(nodeName);
  const views: PvView[] = [];
  for (const pv of pvs) {
    if (pv.spec?.csi?.driver !== driverName) continue;
    const handle = parseVolumeHandle(pv.spec.csi.volumeHandle);
    if (handle === undefined || handle.node !== tag || handle.slot !== descriptor) continue;
    views.push({
      name: pv.metadata?.name ?? '',
      uid: pv.metadata?.uid,
      generation: handle.generation,
      phase: pv.status?.phase,
      claimRef: pv.spec.claimRef != null,
      deleting: pv.metadata?.deletionTimestamp != null,
      reclaimPolicy: pv.spec.persistentVolumeReclaimPolicy,
    });
  }
  return views;
}

/**
 * The next steps for the slot, in order. `classReclaimPolicy` is the
 * StorageClass's (Delete when it sets none, as upstream).
 */
export function decide(slot: SlotView, pvs: readonly PvView[], classReclaimPolicy: 'Delete' | 'Retain'): Decision[] {
  const decisions: Decision[] = [];
  const current = pvs.filter((pv) => pv.generation === slot.generation);
  const older = pvs.filter((pv) => pv.generation < slot.generation);
  const newer = pvs.filter((pv) => pv.generation > slot.generation);

  const claimed = slot.claimed || current.some((pv) => pv.claimRef);
  if (!slot.claimed && claimed) decisions.push({ action: 'claim' });

  for (const pv of older) {
    if (pv.deleting) continue; // pv-protection finishes it once it is unbound
    if (pv.phase === 'Bound') {
      decisions.push({ action: 'wait', why: `PersistentVolume ${pv.name} is Bound but names generation ${pv.generation}, which was erased: its claim sees no data; delete the claim`, problem: true });
      continue;
    }
    decisions.push({ action: 'delete-pv', pv, why: `generation ${pv.generation} was crypto-erased` });
  }
  for (const pv of newer) {
    decisions.push({ action: 'wait', why: `PersistentVolume ${pv.name} names generation ${pv.generation}, newer than the slot's ${slot.generation} (was the slot's state restored from a backup?); left alone`, problem: true });
  }

  if (current.length > 0) {
    const live = current.filter((pv) => !pv.deleting);
    if (live.length === 0) {
      decisions.push({ action: 'wait', why: `PersistentVolume ${current[0]!.name} is being deleted` });
      return decisions;
    }
    const released = live.find((pv) => pv.phase === 'Released');
    if (released !== undefined) {
      if ((released.reclaimPolicy ?? classReclaimPolicy) === 'Delete') decisions.push({ action: 'recycle', why: 'released', pv: released });
      else decisions.push({ action: 'wait', why: `PersistentVolume ${released.name} is Released with reclaim policy Retain: it stays locked until an admin runs \`fscrypt-local erase\`` });
    }
    return decisions;
  }

  if (claimed) {
    if (classReclaimPolicy === 'Delete') decisions.push({ action: 'recycle', why: 'claimed-without-pv' });
    else {
      decisions.push({
        action: 'wait',
        why: `generation ${slot.generation} was handed to a tenant and its PersistentVolume is gone; with reclaim policy Retain it is kept locked and never offered again: run \`fscrypt-local erase\` on the slot to offer it afresh`,
        problem: true,
      });
    }
    return decisions;
  }
  decisions.push({ action: 'create-pv' });
  return decisions;
}
