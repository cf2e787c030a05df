// The PersistentVolume the agent offers for one generation of one slot.
// Field by field it is what the upstream provisioner writes for a local
// volume (capacity, access mode, class, reclaim policy and mount options
// from the StorageClass, node affinity on the hostname label plus the
// class's selector terms, labels from nodeLabelsForPV and labelsForPV, an
// owner reference to the Node with setPVOwnerRef), except that the volume
// is a CSI volume of this driver: kubelet asks the agent to publish it, which
// is when its key goes into the kernel.
//
// Its name is new for every generation (so a new tenant never meets an old
// PV's name, events or history) and a pure function of (node, class, slot,
// slot protector, generation), so a restarted agent finds the PV it created
// before instead of creating a second one.
import { createHash } from 'node:crypto';
import type { V1PersistentVolume } from '@kubernetes/client-node';
import { BIND_MOUNT_OPTIONS, formatVolumeHandle, nodeTag } from '../csi/index.js';
import { capacityQuantity } from './capacity.js';
import {
  CLASS_LABEL,
  GENERATION_ANNOTATION,
  HOSTNAME_LABEL,
  KEY_IDENTIFIER_ANNOTATION,
  NODE_ANNOTATION,
  NODE_LABEL,
  POLICY_ANNOTATION,
  PROVISIONED_BY_ANNOTATION,
  SLOT_LABEL,
  SLOT_NAME_ANNOTATION,
} from './labels.js';
import type { NodeSelectorTerm } from '../config/types.js';

export type { NodeSelectorRequirement, NodeSelectorTerm } from '../config/types.js';

/** What the PV of one generation is made from. */
export interface PvInput {
  driverName: string;
  node: { name: string; uid?: string | undefined; labels: Record<string, string> };
  className: string;
  /** The slot directory's name under the class's hostDir. */
  slotName: string;
  /** The slot's protector descriptor. */
  slot: string;
  generation: number;
  /** The verified policy of the generation's directory (lib/volume verifiedEvidence). */
  evidence: { policyVersion: number; contents: string; filenames: string; padding: number; identifier: string };
  capacityBytes: number;
  accessMode: 'ReadWriteOnce' | 'ReadWriteOncePod';
  fsType?: string | undefined;
  selector: readonly NodeSelectorTerm[];
  reclaimPolicy: 'Delete' | 'Retain';
  mountOptions: readonly string[];
  nodeLabelsForPV: readonly string[];
  labelsForPV: Readonly<Record<string, string>>;
  setOwnerRef: boolean;
}

/** The PV name of a generation: fscrypt-<16 hex>-<generation>. */
export function pvName(input: { node: { name: string }; className: string; slotName: string; slot: string; generation: number }): string {
  const hash = createHash('sha256').update([input.node.name, input.className, input.slotName, input.slot].join('\0'), 'utf8').digest('hex').slice(0, 16);
  return `fscrypt-${hash}-${input.generation}`;
}

/** Mount options a bind mount cannot honour (kubelet would fail every publish with them). */
export function unsupportedMountOptions(options: readonly string[]): string[] {
  return options.filter((option) => !BIND_MOUNT_OPTIONS.has(option.trim()));
}

export function buildPv(input: PvInput): V1PersistentVolume {
  const refused = unsupportedMountOptions(input.mountOptions);
  if (refused.length > 0) throw new TypeError(`mount options ${refused.join(', ')} cannot be honoured by a bind mount`);
  const hostname = input.node.labels[HOSTNAME_LABEL] ?? input.node.name;
  const labels: Record<string, string> = {};
  // Upstream copies the listed Node labels that the Node has, then labelsForPV.
  for (const key of input.nodeLabelsForPV) {
    const value = input.node.labels[key];
    if (value !== undefined) labels[key] = value;
  }
  Object.assign(labels, input.labelsForPV, { [NODE_LABEL]: nodeTag(input.node.name), [SLOT_LABEL]: input.slot, [CLASS_LABEL]: labelValue(input.className) });
  const e = input.evidence;
  const pv: V1PersistentVolume = {
    apiVersion: 'v1',
    kind: 'PersistentVolume',
    metadata: {
      name: pvName(input),
      labels,
      annotations: {
        [PROVISIONED_BY_ANNOTATION]: input.driverName,
        [NODE_ANNOTATION]: input.node.name,
        [SLOT_NAME_ANNOTATION]: input.slotName,
        [GENERATION_ANNOTATION]: String(input.generation),
        [POLICY_ANNOTATION]: `v${e.policyVersion} ${e.contents}/${e.filenames} padding ${e.padding}`,
        [KEY_IDENTIFIER_ANNOTATION]: e.identifier,
      },
      ...(input.setOwnerRef && input.node.uid !== undefined
        ? { ownerReferences: [{ apiVersion: 'v1', kind: 'Node', name: input.node.name, uid: input.node.uid }] }
        : {}),
    },
    spec: {
      capacity: { storage: capacityQuantity(input.capacityBytes) },
      accessModes: [input.accessMode],
      persistentVolumeReclaimPolicy: input.reclaimPolicy,
      storageClassName: input.className,
      volumeMode: 'Filesystem',
      ...(input.mountOptions.length > 0 ? { mountOptions: [...input.mountOptions] } : {}),
      csi: {
        driver: input.driverName,
        volumeHandle: formatVolumeHandle({ nodeName: input.node.name, slot: input.slot, generation: input.generation, identifier: e.identifier }),
        ...(input.fsType ? { fsType: input.fsType } : {}),
      },
      nodeAffinity: {
        required: {
          // Terms are ORed: the hostname term, plus the class's selector terms (upstream's semantics).
          nodeSelectorTerms: [{ matchExpressions: [{ key: HOSTNAME_LABEL, operator: 'In', values: [hostname] }] }, ...input.selector.map(copyTerm)],
        },
      },
    },
  };
  return pv;
}

function copyTerm(term: NodeSelectorTerm): NodeSelectorTerm {
  return JSON.parse(JSON.stringify(term)) as NodeSelectorTerm;
}

/** A StorageClass name as a label value (at most 63 characters; longer names are hashed). */
function labelValue(name: string): string {
  if (name.length <= 63) return name;
  return `${name.slice(0, 46)}-${createHash('sha256').update(name).digest('hex').slice(0, 16)}`;
}
