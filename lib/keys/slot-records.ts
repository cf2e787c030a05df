// A slot's metadata records, typed: protector records (fscrypt's
// ProtectorData in .fscrypt, our KmsProtector beside it) and policy files,
// read strictly, checked against their file names, and written atomically.
// Also the public, secret-free views of them (ProtectorInfo, PolicyInfo).
import { join } from 'node:path';
import { FscryptError } from '../kernel/index.js';
import type { Argon2Costs } from './key-source.js';
import {
  badMetadata,
  decodeFile,
  decodeKmsProtector,
  decodePolicyData,
  decodeProtectorData,
  encodeKmsProtector,
  encodePolicyData,
  encodeProtectorData,
  MAX_FSCRYPT_FILE_SIZE,
  MAX_KMS_RECORD_SIZE,
  type PolicyData,
} from './metadata-format.js';
import { MetadataStore, POLICY_FILE_NAME, PROTECTOR_FILE_NAME, policyTag, type IgnoredEntry } from './metadata-store.js';
import type { ProtectorRecord, ProtectorSource } from './sources/provider.js';

/** A protector as `list` and `inspect` show it: never a secret. */
export interface ProtectorInfo {
  descriptor: string;
  source: 'raw_key' | 'custom_passphrase' | 'kms';
  name: string;
  /** Argon2id costs (custom_passphrase only). */
  costs?: Argon2Costs;
  /** The KMS key_id that wrapped the protector key (kms only). */
  kmsKeyId?: string;
}

/** A policy (one volume's key) as `list` and `inspect` show it. */
export interface PolicyInfo {
  identifier: string;
  /** Descriptors of the protectors that each hold a wrapped copy of the key. */
  protectors: string[];
  options: { padding: number; contents: number; filenames: number; policyVersion: number };
}

export type RecordStorage = ProtectorRecord['storage'];

export function storageOf(source: ProtectorSource): RecordStorage {
  return source === 'kms' ? 'kms' : 'fscrypt';
}

/** The source of a record; pam_passphrase (login protectors) is not one of ours. */
export function sourceOf(record: ProtectorRecord): ProtectorSource | 'pam_passphrase' {
  return record.storage === 'kms' ? 'kms' : record.data.source;
}

export function protectorInfo(record: ProtectorRecord): ProtectorInfo {
  if (record.storage === 'kms') {
    return { descriptor: record.data.descriptor, source: 'kms', name: record.data.name, kmsKeyId: record.data.keyId };
  }
  const { data } = record;
  if (data.source === 'pam_passphrase') throw new FscryptError('login (pam_passphrase) protectors are not managed by fscrypt-local', { code: 'ERR_NOT_SUPPORTED' });
  const info: ProtectorInfo = { descriptor: data.descriptor, source: data.source, name: data.name };
  if (data.costs !== undefined) info.costs = { time: data.costs.time, memory: data.costs.memory, parallelism: data.costs.parallelism };
  return info;
}

export function policyInfo(data: PolicyData): PolicyInfo {
  return {
    identifier: data.keyDescriptor,
    protectors: data.wrappedPolicyKeys.map((w) => w.protectorDescriptor),
    options: { ...data.options },
  };
}

/** A descriptor or identifier from a caller: lower-cased hex of the right length, or ERR_INVALID_ARG. */
export function normalizeHex(value: unknown, pattern: RegExp, what: string): string {
  const lower = typeof value === 'string' ? value.toLowerCase() : '';
  if (!pattern.test(lower)) {
    throw FscryptError.invalidArgument(
      `${what} must be ${what === 'protector descriptor' ? '16' : '32 (or, for a v1 policy, 16)'} hex digits, got ${typeof value === 'string' ? `a string of ${value.length} characters` : typeof value}`,
    );
  }
  return lower;
}

export const PROTECTOR_DESCRIPTOR = PROTECTOR_FILE_NAME;
export const POLICY_IDENTIFIER = POLICY_FILE_NAME;

export class SlotRecords {
  constructor(readonly store: MetadataStore) {}

  get root(): string {
    return this.store.layout.root;
  }

  protectorPath(storage: RecordStorage, descriptor: string): string {
    const dir = storage === 'kms' ? this.store.layout.kmsProtectorsDir : this.store.layout.protectorsDir;
    return join(dir, descriptor);
  }

  policyPath(identifier: string): string {
    return join(this.store.layout.policiesDir, identifier);
  }

  /** The protector record of `descriptor` in one storage, or null. */
  async readProtector(storage: RecordStorage, descriptor: string): Promise<ProtectorRecord | null> {
    const path = this.protectorPath(storage, descriptor);
    const bytes = await this.store.read(path, storage === 'kms' ? MAX_KMS_RECORD_SIZE : MAX_FSCRYPT_FILE_SIZE);
    if (bytes === null) return null;
    const record: ProtectorRecord =
      storage === 'kms' ? { storage, data: decodeFile(bytes, path, decodeKmsProtector) } : { storage, data: decodeFile(bytes, path, decodeProtectorData) };
    if (record.data.descriptor !== descriptor) {
      throw badMetadata(path, `it holds protector ${record.data.descriptor}, not the ${descriptor} its name says`);
    }
    return record;
  }

  /** Every protector record of one storage (entries not ours are skipped: MetadataStore.listOwned). */
  async listProtectors(storage: RecordStorage): Promise<ProtectorRecord[]> {
    return (await this.listProtectorsAndIgnored(storage)).records;
  }

  /** listProtectors, and the entries it skipped. */
  async listProtectorsAndIgnored(storage: RecordStorage): Promise<{ records: ProtectorRecord[]; ignored: IgnoredEntry[] }> {
    const dir = storage === 'kms' ? this.store.layout.kmsProtectorsDir : this.store.layout.protectorsDir;
    const records: ProtectorRecord[] = [];
    const { names, ignored } = await this.store.listOwned(dir, PROTECTOR_FILE_NAME);
    for (const name of names) {
      const record = await this.readProtector(storage, name);
      if (record !== null) records.push(record);
    }
    return { records, ignored };
  }

  /** A policy file, or null when there is none. */
  async readPolicy(identifier: string): Promise<PolicyData | null> {
    const path = this.policyPath(identifier);
    const bytes = await this.store.read(path, MAX_FSCRYPT_FILE_SIZE);
    if (bytes === null) return null;
    const data = decodeFile(bytes, path, decodePolicyData);
    if (data.keyDescriptor !== identifier) {
      throw badMetadata(path, `it holds policy ${data.keyDescriptor}, not the ${identifier} its name says`);
    }
    return data;
  }

  async requirePolicy(identifier: string): Promise<PolicyData> {
    const data = await this.readPolicy(identifier);
    if (data === null) {
      throw new FscryptError(`slot '${this.root}' has no policy ${identifier} (no file ${this.policyPath(identifier)})`, {
        code: 'ENOENT',
        path: this.policyPath(identifier),
      });
    }
    return data;
  }

  /** Identifiers of the policy files that may be ours (MetadataStore.listOwned). */
  async listPolicyIdentifiers(): Promise<string[]> {
    return (await this.store.listOwned(this.store.layout.policiesDir, POLICY_FILE_NAME)).names;
  }

  async writePolicy(data: PolicyData): Promise<void> {
    await this.store.writeAtomic(this.policyPath(data.keyDescriptor), policyTag(data.keyDescriptor), encodePolicyData(data));
  }
}

export function encodeProtector(record: ProtectorRecord): Uint8Array {
  return record.storage === 'kms' ? encodeKmsProtector(record.data) : encodeProtectorData(record.data);
}
