// The names under which the agent marks its PersistentVolumes. The informer
// selects this node's PVs by the node label; the slot label ties a PV to its
// slot (the slot's protector descriptor, the same name the volume handle
// uses); the generation annotation ties it to one generation of that slot.
// The volume handle in spec.csi is the authority: labels and annotations are
// for selection and for people, and a PV whose labels disagree with its
// handle is not ours to act on.
export const DOMAIN = 'fscrypt-local.github.io';

/** Label: the node tag (first 8 hex digits of sha256 of the node name; label values cannot hold every node name). */
export const NODE_LABEL = `${DOMAIN}/node`;
/** Label: the slot's protector descriptor. */
export const SLOT_LABEL = `${DOMAIN}/slot`;
/** Label: the StorageClass (as the upstream provisioner's PVs carry it in spec only; a label lets operators select). */
export const CLASS_LABEL = `${DOMAIN}/class`;

/** Annotation: the node name, exactly. */
export const NODE_ANNOTATION = `${DOMAIN}/node-name`;
/** Annotation: the slot directory's name under its class's hostDir. */
export const SLOT_NAME_ANNOTATION = `${DOMAIN}/slot-name`;
/** Annotation: the generation, decimal. */
export const GENERATION_ANNOTATION = `${DOMAIN}/generation`;
/** Annotations: encryption evidence (never key material): policy version, modes, key identifier. */
export const POLICY_ANNOTATION = `${DOMAIN}/policy`;
export const KEY_IDENTIFIER_ANNOTATION = `${DOMAIN}/key-identifier`;

/** The annotation every provisioner sets on the PVs it creates. */
export const PROVISIONED_BY_ANNOTATION = 'pv.kubernetes.io/provisioned-by';
/** The label kubelet sets on every Node, which the PV's node affinity names. */
export const HOSTNAME_LABEL = 'kubernetes.io/hostname';
