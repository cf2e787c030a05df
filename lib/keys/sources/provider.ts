// The one interface every key source implements: seal a slot's protector key
// for storage, and unseal it again.
import type { KmsProtectorRecord, ProtectorData } from '../metadata-format.js';

/** What kind of protector a source makes. */
export type ProtectorSource = 'raw_key' | 'custom_passphrase' | 'kms';

/** A sealed protector key, as stored: fscrypt's ProtectorData, or our KMS record. */
export type ProtectorRecord = { storage: 'fscrypt'; data: ProtectorData } | { storage: 'kms'; data: KmsProtectorRecord };

export interface KeySourceProvider {
  readonly kind: 'file' | 'passphrase' | 'kms';
  readonly source: ProtectorSource;
  /** Secret-free, for messages: "the KEK file '/etc/kek'". */
  readonly description: string;
  /** Wraps a 32-byte protector key. */
  seal(protectorKey: Buffer, meta: { descriptor: string; name: string }): Promise<ProtectorRecord>;
  /**
   * Unwraps a protector key, or returns null when this source does not open
   * the record (a wrong KEK or passphrase, or a KMS that refuses it). Source
   * failures (unreadable file, unreachable plugin) throw ERR_KEY_SOURCE. The
   * caller wipes the result and checks it against the descriptor.
   */
  unseal(record: ProtectorRecord): Promise<Buffer | null>;
  /** Releases connections; holds no secret between calls. */
  close(): void;
}
