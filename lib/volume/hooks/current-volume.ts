// The volume a hook may act on, checked against the slot's own state. A
// Volume passed in by a caller (the CLI, the agent, a CSI volume id) is a
// claim: its slot, name and path must be exactly what the state derives, so
// no caller-supplied path (a subdirectory of the volume, which inherits its
// policy; a path through a symlink; another slot) is ever mounted or
// removed (DESIGN invariant 7).
import { FscryptError } from '../../kernel/index.js';
import type { Volume } from './hook-options.js';
import { isBindOf } from '../mounts/mounts.js';
import { volumePath } from '../slot/slot-layout.js';
import type { SlotState, TargetRecord, VolumeRecord } from '../slot/slot-state.js';
import { slotRoot } from '../slot/slot.js';

/** Throws unless `volume` is exactly what the slot's state describes. */
export async function checkVolumeClaim(volume: Volume, record: VolumeRecord): Promise<void> {
  const slot = await slotRoot(volume.slot);
  if (slot !== volume.slot || volume.name !== record.name || volume.path !== volumePath(slot, record.generation)) {
    throw new FscryptError(`${volume.path} is not the volume directory of slot '${slot}' (that is ${volumePath(slot, record.generation)})`, {
      code: 'ERR_UNSAFE_PATH',
      path: volume.path,
    });
  }
}

/** True if `volume` is the slot's current volume (whatever its phase). */
export function isCurrent(state: SlotState, volume: Volume): boolean {
  return state.volume !== null && state.volume.generation === volume.generation && state.volume.identifier === volume.identifier;
}

/** The state record of `volume`, which must be the slot's current, ready volume. */
export async function currentRecord(state: SlotState, volume: Volume, hook: string): Promise<VolumeRecord> {
  const record = state.volume;
  if (!record || !isCurrent(state, volume)) {
    throw new FscryptError(`cannot ${hook} ${volume.path}: it is not the current volume of slot '${volume.slot}' (erased or replaced)`, {
      code: 'ERR_NOT_CURRENT',
      path: volume.path,
    });
  }
  await checkVolumeClaim(volume, record);
  if (record.phase !== 'ready') {
    throw new FscryptError(`cannot ${hook} ${volume.path}: the volume is ${record.phase} (a prepare was interrupted). To fix: run \`fscrypt-local reconcile ${volume.slot}\``, {
      code: 'ERR_INTERRUPTED',
      path: volume.path,
    });
  }
  return record;
}

/** The recorded targets the kernel's mount table confirms. */
export async function stillPublished(volume: Volume, targets: TargetRecord[]): Promise<TargetRecord[]> {
  const checks = await Promise.all(targets.map((t) => isBindOf(t.path, volume.path, { readonly: t.readonly })));
  return targets.filter((_, i) => checks[i]);
}
