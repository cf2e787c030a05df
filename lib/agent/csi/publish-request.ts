// What a NodePublishVolumeRequest may ask for, checked before the volume is
// looked up (csi-sanity publishes random ids and expects INVALID_ARGUMENT for
// a missing field, in this order: volume_id, target_path,
// volume_capability): a mount volume (never block), a single-node access
// mode, and mount flags a bind mount can honour.
import { CsiError } from './errors.js';
import type { AccessModeName, NodePublishVolumeRequest } from './proto.js';

export interface PublishArgs {
  volumeId: string;
  target: string;
  /** The request's readonly, or a read-only access mode or `ro` flag. */
  readonly: boolean;
}

const SINGLE_NODE: ReadonlySet<AccessModeName> = new Set(['SINGLE_NODE_WRITER', 'SINGLE_NODE_READER_ONLY', 'SINGLE_NODE_SINGLE_WRITER', 'SINGLE_NODE_MULTI_WRITER']);
const MULTI_NODE: ReadonlySet<AccessModeName> = new Set(['MULTI_NODE_READER_ONLY', 'MULTI_NODE_SINGLE_WRITER', 'MULTI_NODE_MULTI_WRITER']);

/** Flags that ask for nothing a bind mount does not already do; `ro` is readonly. */
/**
 * Mount options a bind mount of the volume honours: `ro`, and the no-ops.
 * The controller checks a StorageClass's mountOptions against the same list
 * before it puts them on a PV.
 */
export const BIND_MOUNT_OPTIONS: ReadonlySet<string> = new Set(['ro', 'rw', 'defaults', 'bind']);
const HARMLESS_FLAGS = new Set(['rw', 'defaults', 'bind']);

export function checkPublishRequest(request: NodePublishVolumeRequest): PublishArgs {
  if (!request.volume_id) throw new CsiError('INVALID_ARGUMENT', 'volume_id is required');
  if (!request.target_path) throw new CsiError('INVALID_ARGUMENT', 'target_path is required');
  const capability = request.volume_capability;
  if (!capability) throw new CsiError('INVALID_ARGUMENT', 'volume_capability is required');
  if (capability.block) {
    throw new CsiError(
      'INVALID_ARGUMENT',
      'block volumes are not supported: fscrypt-local encrypts directories (fscrypt) and publishes them as mount volumes; for an encrypted raw block device use dm-crypt/LUKS (set volumeMode: Filesystem to use this driver)',
    );
  }
  if (!capability.mount) throw new CsiError('INVALID_ARGUMENT', 'volume_capability needs an access type: mount (block volumes are not supported)');
  const mode = capability.access_mode?.mode;
  if (typeof mode !== 'string' || mode === 'UNKNOWN' || !(SINGLE_NODE.has(mode) || MULTI_NODE.has(mode))) {
    throw new CsiError('INVALID_ARGUMENT', `volume_capability.access_mode is required and must be a known mode, got ${JSON.stringify(mode ?? null)}`);
  }
  // A node-local volume cannot be offered to several nodes. The spec's
  // NodePublishVolume table gives FAILED_PRECONDITION for a publish that
  // "exceeds the volume's capabilities" (no MULTI_NODE capability): the
  // request is well formed, the volume just cannot do it. (A second target
  // on this node stays allowed for the single-node modes: kubelet publishes
  // an RWO volume once per pod, and several pods of one node may share it.)
  if (MULTI_NODE.has(mode)) {
    throw new CsiError(
      'FAILED_PRECONDITION',
      `access mode ${mode} is not supported: an fscrypt-local volume lives on one node's disk (use ReadWriteOnce, ReadWriteOncePod or a single-node mode in the PersistentVolume's accessModes)`,
    );
  }
  if (capability.mount.volume_mount_group) {
    throw new CsiError('INVALID_ARGUMENT', 'volume_mount_group is not supported (this driver does not advertise VOLUME_MOUNT_GROUP); kubelet applies fsGroup itself');
  }
  let readonly = request.readonly || mode === 'SINGLE_NODE_READER_ONLY';
  const refused: string[] = [];
  for (const flag of capability.mount.mount_flags) {
    const name = flag.trim();
    if (name === 'ro') readonly = true;
    else if (!HARMLESS_FLAGS.has(name)) refused.push(name.includes('=') ? `${name.slice(0, name.indexOf('='))}=…` : name); // flags may hold secrets: values never shown
  }
  if (refused.length > 0) {
    throw new CsiError(
      'INVALID_ARGUMENT',
      `mount flags ${refused.join(', ')} cannot be honoured: the volume is a bind mount of an encrypted directory, which takes only ro (remove the others from the PersistentVolume's mountOptions)`,
    );
  }
  return { volumeId: request.volume_id, target: request.target_path, readonly };
}
