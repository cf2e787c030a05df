// The CSI volume handle (a PV's spec.csi.volumeHandle, the volume_id of every
// node RPC): which volume of which slot on which node. The controller formats
// it when it creates a PV; the node service parses it on every call. It is a
// name, never a path: it is resolved only through the agent's own table of
// slots (slot-table.ts), so nothing in it is ever joined onto a directory
// (DESIGN invariant 7).
//
//   v1.<node>.<slot>.<generation>.<key>
//
//   v1          the grammar's version
//   <node>      the first 8 hex digits of sha256(node name): a handle of
//               another node is told apart without listing node names
//   <slot>      the slot's protector descriptor (16 hex digits): unique and
//               stable per slot, recorded in its slot state
//   <generation> decimal, 1 to 16 digits, no leading zero: the volume
//               directory vol-<generation>; generations are never reused
//   <key>       the first 16 hex digits of the volume's key identifier: the
//               handle names one key, so it never outlives a crypto-erase
//
// At most 62 bytes (the spec allows 128), lowercase hex only, anchored: no
// '/', '..', NUL, space or anything else can appear in a valid handle.
import { createHash } from 'node:crypto';

export const HANDLE_VERSION = 'v1';
/** The spec's limit for a volume id. */
export const MAX_HANDLE_BYTES = 128;

const HANDLE = /^v1\.([0-9a-f]{8})\.([0-9a-f]{16})\.([1-9][0-9]{0,15})\.([0-9a-f]{16})$/;
const DESCRIPTOR = /^[0-9a-f]{16}$/;
const IDENTIFIER = /^[0-9a-f]{32}$/;

export interface VolumeHandle {
  /** First 8 hex digits of sha256(node name). */
  node: string;
  /** The slot's protector descriptor. */
  slot: string;
  generation: number;
  /** First 16 hex digits of the volume's key identifier. */
  key: string;
}

/** The node part of a handle for a node name. */
export function nodeTag(nodeName: string): string {
  return createHash('sha256').update(nodeName, 'utf8').digest('hex').slice(0, 8);
}

/**
 * The handle of a volume: generation `generation` of the slot whose
 * protector is `slot`, with key identifier `identifier`, on node `nodeName`.
 */
export function formatVolumeHandle(volume: { nodeName: string; slot: string; generation: number; identifier: string }): string {
  const { nodeName, slot, generation, identifier } = volume;
  if (typeof nodeName !== 'string' || nodeName.length === 0) throw new TypeError('a volume handle needs the node name');
  if (typeof slot !== 'string' || !DESCRIPTOR.test(slot)) throw new TypeError(`a volume handle needs the slot's protector descriptor (16 lowercase hex digits), got ${JSON.stringify(slot)}`);
  if (!Number.isSafeInteger(generation) || generation < 1) throw new TypeError(`a volume handle needs a generation >= 1, got ${String(generation)}`);
  if (typeof identifier !== 'string' || !IDENTIFIER.test(identifier)) {
    throw new TypeError(`a volume handle needs the volume's v2 key identifier (32 lowercase hex digits), got ${JSON.stringify(identifier)}`);
  }
  return `${HANDLE_VERSION}.${nodeTag(nodeName)}.${slot}.${generation}.${identifier.slice(0, 16)}`;
}

/** The parts of a handle, or undefined for anything that is not exactly one. */
export function parseVolumeHandle(text: unknown): VolumeHandle | undefined {
  if (typeof text !== 'string' || text.length > MAX_HANDLE_BYTES) return undefined;
  const match = HANDLE.exec(text);
  if (match === null) return undefined;
  const generation = Number(match[3]);
  // 16 digits can exceed 2^53; such a generation cannot be a slot's.
  if (!Number.isSafeInteger(generation)) return undefined;
  return { node: match[1]!, slot: match[2]!, generation, key: match[4]! };
}
