// An open protector: a slot's protector key P, unwrapped once from its key
// source, then used to wrap and unwrap any number of policy keys with no KDF
// and no key-source call per volume. P lives in a secret Buffer until close().
import { timingSafeEqual } from 'node:crypto';
import { inspect } from 'node:util';
import { defaultPolicy, ENCRYPTION_MODES, FscryptError } from '../kernel/index.js';
import { policyKeyIdentifier } from './hkdf.js';
import { badMetadata, type PolicyData } from './metadata-format.js';
import { policyTag, withMetadataLock } from './metadata-store.js';
import { normalizeHex, POLICY_IDENTIFIER, policyInfo, type PolicyInfo, type ProtectorInfo, type SlotRecords } from './slot-records.js';
import { wipe } from './secret.js';
import { keyDescriptor, POLICY_KEY_SIZE, unwrapKey, wrapKey } from './wrap.js';

// The policy every volume gets (lib/kernel's defaultPolicy), as fscrypt's
// metadata records it: v2, AES-256-XTS / AES-256-CTS, 32-byte padding.
const VOLUME_POLICY = defaultPolicy('00'.repeat(16));
/** The options of every policy this library creates, in fscrypt's metadata numbering. */
export const POLICY_OPTIONS = Object.freeze({
  padding: VOLUME_POLICY.padding,
  contents: ENCRYPTION_MODES[VOLUME_POLICY.contents],
  filenames: ENCRYPTION_MODES[VOLUME_POLICY.filenames],
  policyVersion: VOLUME_POLICY.version,
});

export interface OpenProtector {
  readonly descriptor: string;
  /** The protector's public description (no secret). */
  readonly info: ProtectorInfo;
  /** The slot root. */
  readonly root: string;
  /**
   * Stores a volume's policy key, wrapped under this protector, in
   * .fscrypt/policies/<identifier> (identifier = the kernel's key identifier
   * of the key). Idempotent; adds this protector to an existing policy.
   */
  addPolicy(policyKey: Uint8Array): Promise<PolicyInfo>;
  /** A policy key, in a Buffer outside Node's pool that the caller must wipe. */
  unwrapPolicyKey(identifier: string): Promise<Buffer>;
  /** Wipes the protector key; any later use throws ERR_CLOSED. */
  close(): void;
}

export class OpenSlotProtector implements OpenProtector {
  #key: Buffer | null;
  readonly descriptor: string;
  readonly info: ProtectorInfo;

  constructor(
    private readonly records: SlotRecords,
    protectorKey: Buffer,
    info: ProtectorInfo,
  ) {
    this.#key = protectorKey;
    this.info = info;
    this.descriptor = info.descriptor;
  }

  get root(): string {
    return this.records.root;
  }

  get closed(): boolean {
    return this.#key === null;
  }

  private key(): Buffer {
    if (this.#key === null) {
      throw new FscryptError(`protector ${this.descriptor} of slot '${this.root}' was closed; open it again`, { code: 'ERR_CLOSED' });
    }
    return this.#key;
  }

  async addPolicy(policyKey: Uint8Array): Promise<PolicyInfo> {
    if (!(policyKey instanceof Uint8Array) || policyKey.length !== POLICY_KEY_SIZE) {
      throw FscryptError.invalidArgument(
        `a policy key must be ${POLICY_KEY_SIZE} bytes (use newPolicyKey()), got ${policyKey instanceof Uint8Array ? `${policyKey.length} bytes` : typeof policyKey}`,
      );
    }
    this.key();
    const identifier = policyKeyIdentifier(policyKey);
    return withMetadataLock(this.root, policyTag(identifier), async () => {
      const key = this.key();
      await this.records.store.ensureFscryptDirs();
      const existing = await this.records.readPolicy(identifier);
      let data: PolicyData;
      if (existing === null) {
        data = { keyDescriptor: identifier, options: { ...POLICY_OPTIONS }, wrappedPolicyKeys: [] };
      } else {
        const o = existing.options;
        if (o.policyVersion !== 2 || o.contents !== POLICY_OPTIONS.contents || o.filenames !== POLICY_OPTIONS.filenames || o.padding !== POLICY_OPTIONS.padding) {
          throw new FscryptError(`policy ${identifier} of slot '${this.root}' already exists with other options (v${o.policyVersion}, modes ${o.contents}/${o.filenames}, padding ${o.padding})`, {
            code: 'ERR_BAD_METADATA',
            path: this.records.policyPath(identifier),
          });
        }
        const mine = existing.wrappedPolicyKeys.find((w) => w.protectorDescriptor === this.descriptor);
        if (mine !== undefined) {
          const stored = unwrapKey(key, mine.wrappedKey);
          try {
            if (stored === null || !timingSafeEqual(stored, policyKey)) {
              throw badMetadata(this.records.policyPath(identifier), `its key wrapped under protector ${this.descriptor} does not match the key being added`);
            }
          } finally {
            wipe(stored);
          }
          return policyInfo(existing); // already there
        }
        data = existing;
      }
      data.wrappedPolicyKeys.push({ protectorDescriptor: this.descriptor, wrappedKey: wrapKey(key, policyKey) });
      if (existing === null) {
        await this.records.writePolicy(data);
      } else {
        // Replacing the file frees its old blocks, which hold K wrapped under
        // the other protectors: keep a link to them and overwrite them after,
        // so a later crypto-erase of this policy leaves no copy behind.
        const tag = policyTag(identifier);
        await this.records.store.linkToErase(this.records.policyPath(identifier), tag);
        await this.records.writePolicy(data);
        await this.records.store.sweep(tag);
      }
      return policyInfo(data);
    });
  }

  async unwrapPolicyKey(identifier: string): Promise<Buffer> {
    const id = normalizeHex(identifier, POLICY_IDENTIFIER, 'policy identifier');
    this.key();
    const data = await this.records.requirePolicy(id);
    const path = this.records.policyPath(id);
    const entry = data.wrappedPolicyKeys.find((w) => w.protectorDescriptor === this.descriptor);
    if (entry === undefined) {
      const holders = data.wrappedPolicyKeys.map((w) => w.protectorDescriptor).join(', ') || 'none';
      throw new FscryptError(`policy ${id} of slot '${this.root}' is not protected by protector ${this.descriptor} (its protectors: ${holders})`, {
        code: 'ERR_WRONG_KEY',
        path,
      });
    }
    const policyKey = unwrapKey(this.key(), entry.wrappedKey);
    if (policyKey === null) throw badMetadata(path, `the key wrapped under protector ${this.descriptor} fails authentication`);
    const actual = data.options.policyVersion === 2 ? policyKeyIdentifier(policyKey) : keyDescriptor(policyKey);
    if (actual !== id) {
      wipe(policyKey);
      throw badMetadata(path, `the key wrapped under protector ${this.descriptor} is not the key of policy ${id}`);
    }
    return policyKey;
  }

  close(): void {
    wipe(this.#key);
    this.#key = null;
  }

  [inspect.custom](): string {
    return `OpenProtector { descriptor: '${this.descriptor}', source: '${this.info.source}', slot: '${this.root}'${this.closed ? ', closed' : ''} }`;
  }

  toJSON(): { descriptor: string; source: string; root: string; closed: boolean } {
    return { descriptor: this.descriptor, source: this.info.source, root: this.root, closed: this.closed };
  }
}
