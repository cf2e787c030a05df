// Encryption policies: the typed shape, its validation, and the conversion to
// and from the kernel's fields.
import {
  ENCRYPTION_MODES,
  KEY_DESCRIPTOR_SIZE,
  KEY_IDENTIFIER_SIZE,
  PADDING_FLAGS,
  PADDING_MASK,
  POLICY_FLAGS,
  POLICY_VERSION_BYTE,
  VALID_MODE_PAIRS,
  type EncryptionMode,
  type Padding,
  type PolicyFlag,
} from './constants.js';
import type { RawPolicy } from './binding.js';
import { FscryptError } from './errors.js';
import { describe, describeName, parseHex } from './validate.js';

interface PolicyCommon {
  contents: EncryptionMode;
  filenames: EncryptionMode;
  /** Filename padding in bytes; 32 is recommended. */
  padding: Padding;
  /** Flags besides padding. Omitted or empty for ordinary policies. */
  flags?: PolicyFlag[];
}

/** A v2 policy (HKDF-SHA512 key derivation, verified key identifier). */
export interface PolicyV2 extends PolicyCommon {
  version: 2;
  /** 32 hex digits: the identifier addKey() returned. */
  identifier: string;
  /** log2 of the crypto data unit size; 0 (the default) means the block size. */
  log2DataUnitSize?: number;
}

/** A v1 policy. Legacy: kept for reading old directories and for tests. */
export interface PolicyV1 extends PolicyCommon {
  version: 1;
  /** 16 hex digits. */
  descriptor: string;
}

export type Policy = PolicyV1 | PolicyV2;

/** The recommended policy for a key: v2, AES-256-XTS / AES-256-CTS, PAD_32. */
export function defaultPolicy(identifier: string): PolicyV2 {
  return { version: 2, contents: 'AES_256_XTS', filenames: 'AES_256_CTS', padding: 32, identifier };
}

const MODE_NAMES = new Map<number, EncryptionMode>(
  Object.entries(ENCRYPTION_MODES).map(([name, number]) => [number, name as EncryptionMode]),
);
const FLAG_ENTRIES = Object.entries(POLICY_FLAGS) as [PolicyFlag, number][];
const PADDINGS = Object.entries(PADDING_FLAGS).map(([bytes, bits]) => [Number(bytes) as Padding, bits] as const);

/** Validates a policy and converts it to the fields the kernel takes. */
export function encodePolicy(policy: unknown): Omit<RawPolicy, 'key'> & { key: Buffer } {
  if (typeof policy !== 'object' || policy === null) {
    throw FscryptError.invalidArgument(`policy must be an object, got ${describe(policy)}`);
  }
  const p = policy as Record<keyof PolicyV1 | keyof PolicyV2, unknown>;
  if (p.version !== 1 && p.version !== 2) {
    throw FscryptError.invalidArgument(`policy.version must be 1 or 2 (use 2), got ${describe(p.version)}`);
  }
  const version = p.version;
  const contents = modeNumber(p.contents, 'policy.contents');
  const filenames = modeNumber(p.filenames, 'policy.filenames');
  const pairs = VALID_MODE_PAIRS[version];
  if (!pairs.some(([c, f]) => c === p.contents && f === p.filenames)) {
    throw FscryptError.invalidArgument(
      `v${version} policies cannot combine contents ${p.contents} with filenames ${p.filenames}; ` +
        `valid pairs: ${pairs.map(([c, f]) => `${c}/${f}`).join(', ')}`,
    );
  }
  const padding = PADDINGS.find(([bytes]) => bytes === p.padding);
  if (padding === undefined) {
    throw FscryptError.invalidArgument(`policy.padding must be 4, 8, 16 or 32 (use 32), got ${describe(p.padding)}`);
  }
  const flags = padding[1] | flagBits(p.flags, version, p.contents as EncryptionMode, p.filenames as EncryptionMode);

  if (version === 1) {
    return {
      version: POLICY_VERSION_BYTE[1],
      contents,
      filenames,
      flags,
      log2DataUnitSize: 0,
      key: parseHex(p.descriptor, KEY_DESCRIPTOR_SIZE, 'policy.descriptor'),
    };
  }
  const log2 = p.log2DataUnitSize ?? 0;
  if (typeof log2 !== 'number' || !Number.isInteger(log2) || (log2 !== 0 && (log2 < 9 || log2 > 16))) {
    throw FscryptError.invalidArgument(`policy.log2DataUnitSize must be 0 (default) or 9 to 16, got ${describe(log2)}`);
  }
  return {
    version: POLICY_VERSION_BYTE[2],
    contents,
    filenames,
    flags,
    log2DataUnitSize: log2,
    key: parseHex(p.identifier, KEY_IDENTIFIER_SIZE, 'policy.identifier'),
  };
}

function modeNumber(mode: unknown, what: string): number {
  if (typeof mode === 'string' && Object.hasOwn(ENCRYPTION_MODES, mode)) {
    return ENCRYPTION_MODES[mode as EncryptionMode];
  }
  throw FscryptError.invalidArgument(`${what} must be one of ${Object.keys(ENCRYPTION_MODES).join(', ')}; got ${describeName(mode)}`);
}

function flagBits(flags: unknown, version: 1 | 2, contents: EncryptionMode, filenames: EncryptionMode): number {
  if (flags === undefined) return 0;
  if (!Array.isArray(flags)) {
    throw FscryptError.invalidArgument(`policy.flags must be an array of ${Object.keys(POLICY_FLAGS).join(', ')}`);
  }
  let bits = 0;
  for (const flag of flags) {
    if (typeof flag !== 'string' || !Object.hasOwn(POLICY_FLAGS, flag)) {
      throw FscryptError.invalidArgument(`unknown policy flag ${describeName(flag)}; known: ${Object.keys(POLICY_FLAGS).join(', ')}`);
    }
    bits |= POLICY_FLAGS[flag as PolicyFlag];
  }
  const chosen = FLAG_ENTRIES.filter(([, bit]) => bits & bit).map(([name]) => name);
  if (chosen.length > 1) {
    throw FscryptError.invalidArgument(`policy flags ${chosen.join(' and ')} are mutually exclusive`);
  }
  if (bits & POLICY_FLAGS.DIRECT_KEY && !(contents === 'ADIANTUM' && filenames === 'ADIANTUM')) {
    throw FscryptError.invalidArgument('DIRECT_KEY is only valid with ADIANTUM contents and filenames');
  }
  if (bits & (POLICY_FLAGS.IV_INO_LBLK_64 | POLICY_FLAGS.IV_INO_LBLK_32) && version !== 2) {
    throw FscryptError.invalidArgument(`${chosen[0]} needs a v2 policy`);
  }
  return bits;
}

/** Converts the kernel's fields back to a typed policy. */
export function decodePolicy(raw: RawPolicy): Policy {
  const contents = MODE_NAMES.get(raw.contents);
  const filenames = MODE_NAMES.get(raw.filenames);
  if (contents === undefined || filenames === undefined) {
    throw new FscryptError(
      `the kernel reported encryption modes ${raw.contents}/${raw.filenames}, which this version does not know`,
      { code: 'ERR_NOT_SUPPORTED' },
    );
  }
  const padding = PADDINGS.find(([, bits]) => bits === (raw.flags & PADDING_MASK));
  const flags = FLAG_ENTRIES.filter(([, bit]) => raw.flags & bit).map(([name]) => name);
  const common = { contents, filenames, padding: padding![0], flags };
  if (raw.version === POLICY_VERSION_BYTE[2]) {
    return { version: 2, ...common, identifier: raw.key.toString('hex'), log2DataUnitSize: raw.log2DataUnitSize };
  }
  if (raw.version === POLICY_VERSION_BYTE[1]) {
    return { version: 1, ...common, descriptor: raw.key.toString('hex') };
  }
  throw new FscryptError(`the kernel reported policy version byte ${raw.version}, which this version does not know`, {
    code: 'ERR_NOT_SUPPORTED',
  });
}

/** True when two policies would be the same policy to the kernel. */
export function samePolicy(a: Policy, b: Policy): boolean {
  const x = encodePolicy(a);
  const y = encodePolicy(b);
  return (
    x.version === y.version &&
    x.contents === y.contents &&
    x.filenames === y.filenames &&
    x.flags === y.flags &&
    x.log2DataUnitSize === y.log2DataUnitSize &&
    x.key.equals(y.key)
  );
}
