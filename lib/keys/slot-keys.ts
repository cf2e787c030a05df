// The key metadata of one slot (a mount root holding .fscrypt/): its
// protectors, its policies, and the operations of the key hierarchy.
//
//   key source --wraps--> protector key P (32 B) --wraps--> policy key K (64 B)
//
// Reading never modifies anything; a wrong key source is reported as
// ERR_WRONG_KEY naming the slot and the protector, with nothing changed.
import { randomFillSync } from 'node:crypto';
import { resolve } from 'node:path';
import { inspect } from 'node:util';
import { FscryptError } from '../kernel/index.js';
import { checkSlotMetadata, type MetadataProblem } from './check.js';
import { checkKeySource, type KeySourceSpec } from './key-source.js';
import { badMetadata } from './metadata-format.js';
import { eraseFile, MetadataStore, policyTag, protectorTag, PROTECTORS_LOCK, withMetadataLock } from './metadata-store.js';
import { OpenSlotProtector, type OpenProtector } from './open-protector.js';
import { rotateProtector, type RotationContext } from './rotation.js';
import { allocSecret, wipe } from './secret.js';
import {
  encodeProtector,
  normalizeHex,
  POLICY_IDENTIFIER,
  policyInfo,
  PROTECTOR_DESCRIPTOR,
  protectorInfo,
  SlotRecords,
  sourceOf,
  storageOf,
  type PolicyInfo,
  type ProtectorInfo,
} from './slot-records.js';
import { providerFor, type KeySourceProvider, type ProtectorRecord } from './sources/index.js';
import { processWarning, type KeysWarningHandler } from './warnings.js';
import { keyDescriptor, POLICY_KEY_SIZE, PROTECTOR_KEY_SIZE } from './wrap.js';

/** A fresh policy key: 64 bytes from the CSPRNG, in a Buffer outside Node's pool. */
export function newPolicyKey(): Buffer {
  return randomFillSync(allocSecret(POLICY_KEY_SIZE));
}

const SOURCE_KIND: Readonly<Record<ProtectorInfo['source'], KeySourceSpec['kind']>> = {
  raw_key: 'file',
  custom_passphrase: 'passphrase',
  kms: 'kms',
};

/** The durable steps of creating a protector, in order (crash tests kill the process after each). */
export type CreationStep = 'sealed' | 'dirs-made' | 'staged' | 'committed';

type CreationHook = (step: CreationStep) => void | Promise<void>;
let creationHook: CreationHook | undefined;

/**
 * For crash tests only: called after each step of every protector creation
 * in this process. Not exported from the package.
 */
export function setCreationStepHook(hook: CreationHook | undefined): void {
  creationHook = hook;
}

async function creationStep(step: CreationStep): Promise<void> {
  if (creationHook !== undefined) await creationHook(step);
}

function checkName(name: unknown): string {
  if (typeof name !== 'string' || name.length === 0 || Buffer.byteLength(name) > 256 || /[\p{Cc}]/u.test(name)) {
    throw FscryptError.invalidArgument('a protector name must be 1 to 256 bytes of printable text (it is shown by `fscrypt status`)');
  }
  return name;
}

export interface SlotKeysOptions {
  /**
   * Receives what is wrong but does not stop the operation (warnings.ts): a
   * KEK file others can read, a text KEK opening an old protector, another
   * user's entry in a shared metadata directory that was ignored. Default: a
   * process warning, once per message.
   */
  onWarning?: KeysWarningHandler;
}

export class SlotKeys {
  /** The slot root (absolute). */
  readonly root: string;
  readonly #records: SlotRecords;
  readonly #warn: KeysWarningHandler;

  constructor(root: string, options: SlotKeysOptions = {}) {
    if (typeof root !== 'string' || root.length === 0 || root.includes('\0')) {
      throw FscryptError.invalidArgument('a slot root must be a non-empty path');
    }
    if (options.onWarning !== undefined && typeof options.onWarning !== 'function') throw FscryptError.invalidArgument('onWarning must be a function');
    this.root = resolve(root);
    this.#warn = options.onWarning ?? processWarning;
    const warn = this.#warn;
    const store = new MetadataStore(this.root, ({ path, reason }) =>
      warn({
        code: 'FSCRYPT_LOCAL_IGNORED_ENTRY',
        path,
        message: `ignored '${path}': ${reason}. It is not metadata of this slot (the directory is shared, as \`fscrypt setup --all-users\` makes it, or it was tampered with); fscrypt-local never reads it. Remove it once you know where it came from`,
      }),
    );
    this.#records = new SlotRecords(store);
  }

  /** Creates a protector with a new random protector key under `source`. */
  async createProtector(source: KeySourceSpec, options: { name: string }): Promise<ProtectorInfo> {
    const opened = await this.createAndOpenProtector(source, options);
    opened.close();
    return opened.info;
  }

  /**
   * createProtector(), returning it already open: saves a second key-source
   * round trip (an Argon2 run, a KMS call) when the caller needs it at once.
   *
   * Crash-safe: the record is staged in keys/tmp, fsynced, then renamed into
   * place. A process killed after staging leaves a temp file holding P
   * wrapped under the key source, for a protector that never came to be and
   * that nothing would ever name again; the next creation in the slot (so the
   * next init-slot) crypto-erases such orphans first (#sweepOrphanProtectors).
   */
  async createAndOpenProtector(source: KeySourceSpec, options: { name: string }): Promise<OpenProtector> {
    const name = checkName(options?.name);
    const provider = providerFor(checkKeySource(source), this.#warn);
    try {
      return await withMetadataLock(this.root, PROTECTORS_LOCK, async () => {
        const storage = storageOf(provider.source);
        const { store } = this.#records;
        const key = randomFillSync(allocSecret(PROTECTOR_KEY_SIZE));
        try {
          const descriptor = keyDescriptor(key);
          // The key source first: if it fails, the slot is left exactly as it was.
          const record = await provider.seal(key, { descriptor, name });
          await creationStep('sealed');
          if (storage === 'fscrypt') await store.ensureFscryptDirs();
          else await store.ensureLocalDirs();
          await creationStep('dirs-made');
          await this.#sweepOrphanProtectors();
          const path = this.#records.protectorPath(storage, descriptor);
          if (await store.exists(path)) {
            throw new FscryptError(`protector ${descriptor} already exists in slot '${this.root}'`, { code: 'EEXIST' });
          }
          const staged = await store.stage(protectorTag(descriptor), encodeProtector(record));
          await creationStep('staged');
          try {
            await store.commit(staged, path);
          } catch (error) {
            await eraseFile(staged).catch(() => undefined); // the next creation's sweep retries
            throw error;
          }
          await creationStep('committed');
          return new OpenSlotProtector(this.#records, key, protectorInfo(record));
        } catch (error) {
          wipe(key);
          throw error;
        }
      });
    } finally {
      provider.close();
    }
  }

  /**
   * Crypto-erases temp files of protectors that have no record in either
   * storage: creations killed between staging and the rename. Runs under
   * the protectors lock, so no creation or rotation of this process is
   * under way, and never touches a temp file of an existing protector (an
   * interrupted rotation's, which its next run needs to clean up in order).
   * Returns how many it erased.
   */
  async #sweepOrphanProtectors(): Promise<number> {
    const { store } = this.#records;
    let erased = 0;
    for (const { tag, id } of await store.leftoverTags('tmp')) {
      if (!tag.startsWith('protector.') || !PROTECTOR_DESCRIPTOR.test(id)) continue;
      if ((await store.exists(this.#records.protectorPath('fscrypt', id))) || (await store.exists(this.#records.protectorPath('kms', id)))) continue;
      erased += await store.sweep(tag);
    }
    return erased;
  }

  /**
   * Finishes what interrupted writes left in keys/tmp and keys/erase: temp
   * files of crashed writes and creations, old records of a rotation, earlier
   * versions of rewritten policies, policies half crypto-erased. Each file's
   * leftovers are erased under that file's lock, as the next operation on it
   * would (so, within this process, never under an operation in flight).
   * Across processes it relies on the caller holding the slot (lib/volume's
   * slot lock, as reconcile does): another process's rotation or write in
   * flight would lose its staged file. Returns how many files it erased.
   */
  async sweepLeftovers(): Promise<number> {
    const { store } = this.#records;
    const tags = new Set((await Promise.all([store.leftoverTags('tmp'), store.leftoverTags('erase')])).flat().map((l) => l.tag));
    let erased = 0;
    for (const tag of [...tags].sort()) {
      const lock = tag.startsWith('protector.') ? PROTECTORS_LOCK : tag;
      erased += await withMetadataLock(this.root, lock, () => store.sweep(tag));
    }
    return erased;
  }

  /**
   * Opens a protector with its key source. Without a descriptor, the slot
   * must have exactly one protector of the source's kind.
   */
  async openProtector(source: KeySourceSpec, descriptor?: string): Promise<OpenProtector> {
    const provider = providerFor(checkKeySource(source), this.#warn);
    try {
      const record = await this.#resolve(provider, descriptor);
      const key = await this.#unseal(provider, record);
      return new OpenSlotProtector(this.#records, key, protectorInfo(record));
    } finally {
      provider.close();
    }
  }

  /** Every protector of the slot (fscrypt's login protectors excepted). */
  async listProtectors(): Promise<ProtectorInfo[]> {
    const records = [...(await this.#records.listProtectors('fscrypt')), ...(await this.#records.listProtectors('kms'))];
    return records.filter((r) => sourceOf(r) !== 'pam_passphrase').map(protectorInfo);
  }

  async listPolicies(): Promise<PolicyInfo[]> {
    const result: PolicyInfo[] = [];
    for (const id of await this.#records.listPolicyIdentifiers()) {
      const data = await this.#records.readPolicy(id);
      if (data !== null) result.push(policyInfo(data));
    }
    return result;
  }

  /** A policy's public description; ENOENT when the slot has no such policy. */
  async readPolicy(identifier: string): Promise<PolicyInfo> {
    const id = normalizeHex(identifier, POLICY_IDENTIFIER, 'policy identifier');
    return policyInfo(await this.#records.requirePolicy(id));
  }

  async hasPolicy(identifier: string): Promise<boolean> {
    const id = normalizeHex(identifier, POLICY_IDENTIFIER, 'policy identifier');
    return this.#records.store.owns(this.#records.policyPath(id));
  }

  /**
   * Checks, without the key source, that the protector `descriptor` and the
   * policies `identifiers` (what a slot's state names) exist, parse and fit
   * together: every policy wrapped under that protector, with the options
   * fscrypt-local makes. Returns the problems found, [] for a slot that
   * should unlock; reads only. A wrapped key that fails authentication is
   * only found with the key (openProtector, unwrapPolicyKey). See check.ts.
   */
  async check(descriptor: string, identifiers: string[] = []): Promise<MetadataProblem[]> {
    const d = normalizeHex(descriptor, PROTECTOR_DESCRIPTOR, 'protector descriptor');
    if (!Array.isArray(identifiers)) throw FscryptError.invalidArgument('policy identifiers must be an array');
    const ids = [...new Set(identifiers.map((id) => normalizeHex(id, POLICY_IDENTIFIER, 'policy identifier')))];
    return checkSlotMetadata(this.#records, d, ids);
  }

  /**
   * Crypto-erases a policy file: moved out of .fscrypt atomically, its blocks
   * overwritten in place with random bytes, fsynced, unlinked, the directory
   * fsynced; leftovers of interrupted writes of the same policy go too.
   * Idempotent: an absent policy is fine. (Removing the key from the kernel
   * is the caller's part: lib/volume's erase.)
   */
  async destroyPolicy(identifier: string): Promise<void> {
    const id = normalizeHex(identifier, POLICY_IDENTIFIER, 'policy identifier');
    const tag = policyTag(id);
    await withMetadataLock(this.root, tag, async () => {
      const { store } = this.#records;
      await store.moveToErase(this.#records.policyPath(id), tag);
      await store.sweep(tag);
    });
  }

  /**
   * Rewraps the protector key under a new key source; nothing else changes
   * (descriptor, policies, data). Crash-safe and resumable: see rotation.ts.
   */
  async rotate(oldSource: KeySourceSpec, newSource: KeySourceSpec, descriptor?: string): Promise<ProtectorInfo> {
    const oldProvider = providerFor(checkKeySource(oldSource), this.#warn);
    const newProvider = providerFor(checkKeySource(newSource), this.#warn);
    try {
      const ctx: RotationContext = {
        records: this.#records,
        resolve: (provider, d) => this.#resolve(provider, d),
        unseal: (provider, record) => this.#unseal(provider, record),
      };
      return await withMetadataLock(this.root, PROTECTORS_LOCK, () => rotateProtector(ctx, oldProvider, newProvider, descriptor));
    } finally {
      oldProvider.close();
      newProvider.close();
    }
  }

  /** The record a provider should open. */
  async #resolve(provider: KeySourceProvider, descriptor?: string): Promise<ProtectorRecord> {
    const storage = storageOf(provider.source);
    if (descriptor !== undefined) {
      const d = normalizeHex(descriptor, PROTECTOR_DESCRIPTOR, 'protector descriptor');
      const record = (await this.#records.readProtector(storage, d)) ?? (await this.#records.readProtector(storage === 'kms' ? 'fscrypt' : 'kms', d));
      if (record === null) {
        throw new FscryptError(`slot '${this.root}' has no protector ${d}`, { code: 'ENOENT', path: this.#records.protectorPath(storage, d) });
      }
      const kind = sourceOf(record);
      if (kind !== provider.source) {
        const hint = kind === 'pam_passphrase' ? 'it is a login protector, which fscrypt-local does not open' : `open it with a '${SOURCE_KIND[kind]}:' key source`;
        throw new FscryptError(`${provider.description} cannot open protector ${d} of slot '${this.root}': it is a ${kind} protector (${hint})`, {
          code: 'ERR_WRONG_KEY',
          path: this.#records.protectorPath(record.storage, d),
        });
      }
      return record;
    }
    const { records, ignored } = await this.#records.listProtectorsAndIgnored(storage);
    const candidates = records.filter((r) => sourceOf(r) === provider.source);
    if (candidates.length === 1) return candidates[0]!;
    if (candidates.length === 0) {
      const first = ignored[0];
      const skipped = first === undefined ? '' : ` (ignored ${ignored.length} entr${ignored.length === 1 ? 'y' : 'ies'} that ${ignored.length === 1 ? 'is' : 'are'} not ours, e.g. '${first.path}': ${first.reason})`;
      throw new FscryptError(`slot '${this.root}' has no ${provider.source} protector for ${provider.description}${skipped}; create one first`, { code: 'ERR_WRONG_KEY' });
    }
    throw new FscryptError(
      `slot '${this.root}' has ${candidates.length} ${provider.source} protectors (${candidates.map((r) => r.data.descriptor).join(', ')}); name the one to open by its descriptor`,
      { code: 'ERR_BAD_METADATA' },
    );
  }

  /** P from a record, checked against the record's descriptor. */
  async #unseal(provider: KeySourceProvider, record: ProtectorRecord): Promise<Buffer> {
    const d = record.data.descriptor;
    const key = await provider.unseal(record);
    const where = `protector ${d} (${JSON.stringify(record.data.name.slice(0, 64))}) of slot '${this.root}'`;
    const path = this.#records.protectorPath(record.storage, d);
    if (key === null) {
      const why = record.storage === 'kms' ? 'the plugin refused to decrypt it (another KEK, or an altered record)' : 'wrong key, or the protector file was altered';
      throw new FscryptError(`${provider.description} does not open ${where}: ${why}. Nothing was changed`, { code: 'ERR_WRONG_KEY', path });
    }
    if (key.length !== PROTECTOR_KEY_SIZE || keyDescriptor(key) !== d) {
      wipe(key);
      if (record.storage === 'kms') {
        throw new FscryptError(`${provider.description} does not open ${where}: it decrypted to a different key. Nothing was changed`, { code: 'ERR_WRONG_KEY', path });
      }
      throw badMetadata(path, 'the key it wraps does not match its descriptor');
    }
    return key;
  }

  [inspect.custom](): string {
    return `SlotKeys { root: '${this.root}' }`;
  }
}
