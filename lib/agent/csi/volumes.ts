// From a volume handle to the volume it names, through the server's table of
// slots only: the handle's slot descriptor is looked up in the table (never
// joined onto a directory), then the slot's own state must confirm the
// generation and the key. Anything else is NOT_FOUND, before anything is
// unlocked or mounted.
import type { OpenProtector } from '../../keys/open-protector.js';
import { isSlot, resolveVolume, type Volume } from '../../volume/index.js';
import { CsiError } from './errors.js';
import type { Readiness } from './identity.js';
import { nodeTag, parseVolumeHandle, type VolumeHandle } from './volume-handle.js';

/** One slot the node service serves. */
export interface SlotEntry {
  /** The slot root (a mount point). */
  readonly root: string;
  /** Its open protector; absent while its key source cannot be opened (publishes then answer UNAVAILABLE). */
  readonly protector?: OpenProtector | undefined;
  /** Without a protector: why, in words for an operator (e.g. the key source's error naming the KMS plugin's socket). */
  readonly unavailable?: string | undefined;
}

/**
 * The slots of this node, by protector descriptor. The controller fills it
 * (and may change it while the server runs); a Map is one.
 */
export interface SlotTable {
  get(descriptor: string): SlotEntry | undefined;
}

export interface ResolvedVolume {
  handle: VolumeHandle;
  entry: SlotEntry;
  volume: Volume;
}

/** A handle shown in a message: quoted, cut, control characters escaped. */
export function shownId(volumeId: string): string {
  return JSON.stringify(volumeId.length > 140 ? `${volumeId.slice(0, 140)}…` : volumeId);
}

export class VolumeResolver {
  readonly #tag: string;
  /**
   * Volumes this server resolved, by handle: lets an unpublish still find
   * the volume (its full key identifier) when its slot's disk was unmounted
   * under a published target, so lib/volume's lock can take the target down.
   */
  readonly #seen = new Map<string, Volume>();
  /**
   * The handle each slot's entry in #seen is for: one per slot, since only
   * a slot's current generation can be published. Without it #seen kept
   * every generation ever served (a new handle per tenant), which the soak
   * (test/agent/soak.test.ts) saw as a heap that grew with the cycles.
   */
  readonly #seenOfSlot = new Map<string, string>();

  constructor(
    private readonly slots: SlotTable,
    private readonly nodeId: string,
    /** Not ready: the agent is still starting, and its slot table may not have every slot yet. */
    private readonly readiness: () => Readiness | Promise<Readiness> = () => ({ ready: true }),
  ) {
    this.#tag = nodeTag(nodeId);
  }

  /**
   * The volume a handle names on this node, or NOT_FOUND saying why not.
   * For an unpublish, a volume this server resolved before is still found
   * when its slot's disk is gone (lock then unmounts the target).
   */
  async resolve(volumeId: string, options: { unpublish?: boolean } = {}): Promise<ResolvedVolume> {
    const handle = parseVolumeHandle(volumeId);
    if (handle === undefined) {
      throw new CsiError('NOT_FOUND', 'not a volume handle of this driver (v1.<node>.<slot>.<generation>.<key>)');
    }
    if (handle.node !== this.#tag) throw new CsiError('NOT_FOUND', `the volume belongs to another node, not to ${this.nodeId}`);
    const entry = this.slots.get(handle.slot);
    if (entry === undefined) {
      // A restarted agent sets its slots up before it is ready. NOT_FOUND then
      // would be final for kubelet, which backs off for minutes and delays
      // the pod; UNAVAILABLE is retried at once.
      const ready = await this.readiness();
      if (!ready.ready) {
        throw new CsiError('UNAVAILABLE', `the node agent is still starting (${ready.reason}): slot ${handle.slot} is not set up yet; kubelet retries`);
      }
      throw new CsiError('NOT_FOUND', `its slot ${handle.slot} is not served by this node's agent: is the slot's disk mounted, and in the agent's configuration?`);
    }
    if (entry.protector !== undefined && entry.protector.descriptor !== handle.slot) {
      throw new CsiError('INTERNAL', `the agent's slot table is wrong: slot ${handle.slot} maps to ${entry.root}, whose protector is ${entry.protector.descriptor}`);
    }
    let volume: Volume;
    try {
      if (!(await isSlot(entry.root))) {
        throw new CsiError(
          'FAILED_PRECONDITION',
          `its slot ${entry.root} has no slot state: is the slot's disk mounted there? Mount it, then run \`fscrypt-local reconcile ${entry.root}\``,
        );
      }
      volume = await resolveVolume(entry.root);
    } catch (error) {
      const seen = this.#seen.get(volumeId);
      // The slot's disk went from under a published target: lock can still unmount it.
      if (options.unpublish && seen !== undefined) return { handle, entry, volume: seen };
      throw error;
    }
    if (volume.generation !== handle.generation) {
      throw new CsiError('NOT_FOUND', `generation ${handle.generation} of slot ${entry.root} was erased (the slot's current volume is ${volume.name})`);
    }
    if (!volume.identifier.startsWith(handle.key)) {
      throw new CsiError('NOT_FOUND', `the handle names key ${handle.key}…, but ${volume.path} has key ${volume.identifier.slice(0, 16)}…: not the same volume`);
    }
    const previous = this.#seenOfSlot.get(handle.slot);
    if (previous !== undefined && previous !== volumeId) this.#seen.delete(previous);
    this.#seenOfSlot.set(handle.slot, volumeId);
    this.#seen.set(volumeId, volume);
    return { handle, entry, volume };
  }

  /** How many volumes it remembers for an unpublish under a gone disk (at most one per slot). */
  get remembered(): number {
    return this.#seen.size;
  }
}
