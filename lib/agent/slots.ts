// The slots this node serves, as the controller found them, and the table
// the CSI node service resolves volume handles through (by protector
// descriptor). A slot keeps its record when its disk goes away, so an
// unpublish of a volume on it still finds it.
import type { OpenProtector } from '../keys/open-protector.js';
import type { SlotEntry, SlotTable } from './csi/index.js';
import type { AgentClass } from './agent-types.js';

export type SlotCondition = 'pending' | 'ready' | 'refused' | 'gone';

export interface SlotRecord {
  /** className/name: stable across restarts, the work queue's key. */
  readonly key: string;
  readonly className: string;
  readonly name: string;
  readonly root: string;
  class: AgentClass;
  condition: SlotCondition;
  /** Why the slot is refused, gone or pending, in words for an operator. */
  problem?: string | undefined;
  descriptor?: string | undefined;
  protector?: OpenProtector | undefined;
  /** For a refused slot: what would change the answer (slot-setup.ts SlotRefused.retryOn), and the key source it was refused under. */
  refusal?: { retryOn: 'contents' | 'config'; keySourceText: string } | undefined;
  /** The last refusal's message, so a refusal looked at again is told once. */
  lastRefusal?: string | undefined;
  /** Start-up reconcile has run for this slot since the agent started. */
  reconciled: boolean;
}

export function slotKey(className: string, name: string): string {
  return `${className}/${name}`;
}

export class SlotRegistry implements SlotTable {
  readonly #byKey = new Map<string, SlotRecord>();
  readonly #byDescriptor = new Map<string, SlotRecord>();

  get(descriptor: string): SlotEntry | undefined {
    const record = this.#byDescriptor.get(descriptor);
    if (record === undefined) return undefined;
    if (record.condition === 'ready') return { root: record.root, protector: record.protector };
    return { root: record.root, protector: undefined, unavailable: record.problem };
  }

  byKey(key: string): SlotRecord | undefined {
    return this.#byKey.get(key);
  }

  records(): SlotRecord[] {
    return [...this.#byKey.values()];
  }

  add(record: SlotRecord): void {
    this.#byKey.set(record.key, record);
  }

  /** Records the slot's protector descriptor once its protector is open. */
  index(record: SlotRecord): void {
    if (record.descriptor !== undefined) this.#byDescriptor.set(record.descriptor, record);
  }

  /** Closes (wipes) every open protector: at shutdown, after the last hook returned. */
  closeAll(): void {
    for (const record of this.#byKey.values()) {
      record.protector?.close();
      record.protector = undefined;
    }
  }
}
