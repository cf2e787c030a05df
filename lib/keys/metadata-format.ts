// The bytes of the metadata files: google/fscrypt's ProtectorData and
// PolicyData (proto/fscrypt_metadata.proto) and fscrypt-local's KmsProtector
// (proto/fscrypt_local.proto). Encoding follows Go's proto.Marshal (fields in
// number order, proto3 defaults omitted), so a file we write is byte-for-byte
// what the stock tool would write for the same values.
//
// Decoding is strict on purpose: these files gate the keys to user data and
// may have been damaged or altered. A message is refused for an unknown field
// (a newer fscrypt writing fields we do not know gets a clear error rather
// than a silent partial read), a wrong wire type, a repeated singular field,
// an unknown enum value, invalid UTF-8, truncated or trailing bytes, and then
// for every value fscrypt's own checks (metadata/checks.go) would refuse, plus
// our limits on Argon2 costs (a tampered file must not exhaust memory).
import { BinaryReader, BinaryWriter, WireType } from '@bufbuild/protobuf/wire';
import { ENCRYPTION_MODES, FscryptError, VALID_MODE_PAIRS, type EncryptionMode } from '../kernel/index.js';
import { HMAC_SIZE, IV_SIZE, POLICY_KEY_SIZE, PROTECTOR_KEY_SIZE, SALT_SIZE, type WrappedKeyData } from './wrap.js';

/** Largest metadata file fscrypt reads (and we read). */
export const MAX_FSCRYPT_FILE_SIZE = 16 * 1024;
/** Largest KMS protector record: 1 KiB ciphertext + 1 KiB key_id + 32 KiB annotations + slack. */
export const MAX_KMS_RECORD_SIZE = 40 * 1024;

/** KMS v2 limits (k8s.io/apiserver kmsv2/envelope.go), applied to what we store too. */
export const KMS_LIMITS = { ciphertext: 1024, keyId: 1024, annotations: 32 * 1024 } as const;

/**
 * Upper bounds on the Argon2id costs a protector may ask for. fscrypt's own
 * calibration stays far below them (<= 128 MiB); they exist so that a
 * tampered protector cannot make an unlock allocate gigabytes or run for
 * minutes. Parallelism is capped at 255 because fscrypt <= 0.3.3 truncates it
 * to 8 bits.
 */
export const ARGON2_LIMITS = { maxTime: 256, maxMemoryKiB: 1024 * 1024, maxParallelism: 255 } as const;

export const MAX_NAME_BYTES = 1024;

export type SourceTypeName = 'pam_passphrase' | 'custom_passphrase' | 'raw_key';
const SOURCE_TYPES: Readonly<Record<number, SourceTypeName>> = { 1: 'pam_passphrase', 2: 'custom_passphrase', 3: 'raw_key' };
const SOURCE_NUMBERS: Readonly<Record<SourceTypeName, number>> = { pam_passphrase: 1, custom_passphrase: 2, raw_key: 3 };

export interface HashingCosts {
  time: number;
  /** KiB */
  memory: number;
  parallelism: number;
  /** fscrypt >= 0.3.4 sets it; it changes nothing for parallelism <= 255. */
  truncationFixed: boolean;
}

export interface ProtectorData {
  descriptor: string;
  source: SourceTypeName;
  name: string;
  /** Passphrase sources only. */
  costs?: HashingCosts;
  /** Passphrase sources only. */
  salt?: Uint8Array;
  uid: number;
  wrappedKey: WrappedKeyData;
}

export interface EncryptionOptions {
  padding: 4 | 8 | 16 | 32;
  contents: number;
  filenames: number;
  policyVersion: 1 | 2;
}

export interface WrappedPolicyKey {
  protectorDescriptor: string;
  wrappedKey: WrappedKeyData;
}

export interface PolicyData {
  /** v2: the 32-hex key identifier; v1: the 16-hex key descriptor. */
  keyDescriptor: string;
  options: EncryptionOptions;
  wrappedPolicyKeys: WrappedPolicyKey[];
}

export interface KmsProtectorRecord {
  descriptor: string;
  name: string;
  ciphertext: Uint8Array;
  keyId: string;
  annotations: Map<string, Uint8Array>;
}

/** A decoding failure; the caller turns it into ERR_BAD_METADATA naming the file. */
export class FormatError extends Error {
  override name = 'FormatError';
}

// ---------------------------------------------------------------- decoding

type FieldValue = bigint | Uint8Array;
interface FieldRule {
  name: string;
  wire: WireType.Varint | WireType.LengthDelimited;
  repeated?: boolean;
}
type Rules = Readonly<Record<number, FieldRule>>;

const VARINT = WireType.Varint;
const LEN = WireType.LengthDelimited;

class Fields {
  constructor(
    private readonly messageName: string,
    private readonly rules: Rules,
    private readonly values: Map<number, FieldValue[]>,
  ) {}

  private label(no: number): string {
    return `${this.messageName}.${this.rules[no]?.name ?? `#${no}`}`;
  }

  has(no: number): boolean {
    return this.values.has(no);
  }

  private one(no: number): FieldValue | undefined {
    return this.values.get(no)?.[0];
  }

  int64(no: number): bigint {
    const v = this.one(no);
    return typeof v === 'bigint' ? BigInt.asIntN(64, v) : 0n;
  }

  uint32(no: number): bigint {
    const v = this.one(no);
    if (typeof v !== 'bigint') return 0n;
    if (v > 0xffffffffn) throw new FormatError(`${this.label(no)} does not fit in 32 bits`);
    return v;
  }

  bool(no: number): boolean {
    const v = this.one(no);
    if (v === undefined) return false;
    if (v !== 0n && v !== 1n) throw new FormatError(`${this.label(no)} is not a boolean`);
    return v === 1n;
  }

  bytes(no: number): Uint8Array {
    const v = this.one(no);
    return v instanceof Uint8Array ? Buffer.from(v) : new Uint8Array(0);
  }

  /** A sub-message's bytes, or undefined when the field is absent. */
  message(no: number): Uint8Array | undefined {
    const v = this.one(no);
    return v instanceof Uint8Array ? v : undefined;
  }

  repeated(no: number): Uint8Array[] {
    return (this.values.get(no) ?? []).filter((v): v is Uint8Array => v instanceof Uint8Array);
  }

  string(no: number): string {
    const v = this.one(no);
    if (!(v instanceof Uint8Array)) return '';
    return utf8(v, this.label(no));
  }
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function utf8(bytes: Uint8Array, label: string): string {
  try {
    return strictUtf8.decode(bytes);
  } catch {
    throw new FormatError(`${label} is not valid UTF-8`);
  }
}

/** Reads every field of one message, refusing anything the rules do not allow. */
function readFields(bytes: Uint8Array, message: string, rules: Rules): Fields {
  const values = new Map<number, FieldValue[]>();
  const reader = new BinaryReader(bytes);
  try {
    while (reader.pos < reader.len) {
      const [no, wire] = reader.tag();
      const rule = rules[no];
      if (rule === undefined) throw new FormatError(`${message} has an unknown field number ${no}`);
      if (wire !== rule.wire) {
        throw new FormatError(`${message}.${rule.name} has wire type ${wire}, expected ${rule.wire}`);
      }
      const value: FieldValue = wire === VARINT ? BigInt(reader.uint64()) : reader.bytes();
      const list = values.get(no);
      if (list === undefined) values.set(no, [value]);
      else if (rule.repeated) list.push(value);
      else throw new FormatError(`${message}.${rule.name} appears more than once`);
    }
  } catch (error) {
    if (error instanceof FormatError) throw error;
    // BinaryReader's own errors: truncated input, bad varints, bad tags.
    throw new FormatError(`${message} is not a valid protobuf message (${error instanceof Error ? error.message : String(error)})`);
  }
  if (reader.pos !== reader.len) throw new FormatError(`${message} is truncated`);
  return new Fields(message, rules, values);
}

function requireMessage(fields: Fields, no: number, label: string): Uint8Array {
  const bytes = fields.message(no);
  if (bytes === undefined) throw new FormatError(`${label} is missing`);
  return bytes;
}

function checkLength(bytes: Uint8Array, size: number, label: string): void {
  if (bytes.length !== size) throw new FormatError(`${label} must be ${size} bytes, got ${bytes.length}`);
}

const HEX16 = /^[0-9a-f]{16}$/;
const HEX32 = /^[0-9a-f]{32}$/;

function checkDescriptor(value: string, pattern: RegExp, digits: number, label: string): void {
  if (!pattern.test(value)) {
    throw new FormatError(`${label} must be ${digits} lower-case hex digits, got ${value.length === 0 ? 'nothing' : `a string of ${value.length} characters`}`);
  }
}

function checkName(value: string, label: string): void {
  if (Buffer.byteLength(value) > MAX_NAME_BYTES) throw new FormatError(`${label} is longer than ${MAX_NAME_BYTES} bytes`);
}

function smallInt(value: bigint, min: bigint, max: bigint, label: string): number {
  if (value < min || value > max) throw new FormatError(`${label} is ${value}, outside ${min}..${max}`);
  return Number(value);
}

const WRAPPED_KEY_RULES: Rules = {
  1: { name: 'IV', wire: LEN },
  2: { name: 'encrypted_key', wire: LEN },
  3: { name: 'hmac', wire: LEN },
};

function decodeWrappedKey(bytes: Uint8Array, keySize: number, label: string): WrappedKeyData {
  const f = readFields(bytes, label, WRAPPED_KEY_RULES);
  const iv = f.bytes(1);
  const encryptedKey = f.bytes(2);
  const hmac = f.bytes(3);
  checkLength(iv, IV_SIZE, `${label}.IV`);
  checkLength(encryptedKey, keySize, `${label}.encrypted_key`);
  checkLength(hmac, HMAC_SIZE, `${label}.hmac`);
  return { iv, encryptedKey, hmac };
}

const HASHING_COSTS_RULES: Rules = {
  2: { name: 'time', wire: VARINT },
  3: { name: 'memory', wire: VARINT },
  4: { name: 'parallelism', wire: VARINT },
  5: { name: 'truncation_fixed', wire: VARINT },
};

function decodeHashingCosts(bytes: Uint8Array, label: string): HashingCosts {
  const f = readFields(bytes, label, HASHING_COSTS_RULES);
  const parallelism = smallInt(f.int64(4), 1n, BigInt(ARGON2_LIMITS.maxParallelism), `${label}.parallelism`);
  const time = smallInt(f.int64(2), 1n, BigInt(ARGON2_LIMITS.maxTime), `${label}.time`);
  const memory = smallInt(f.int64(3), BigInt(8 * parallelism), BigInt(ARGON2_LIMITS.maxMemoryKiB), `${label}.memory (KiB)`);
  return { time, memory, parallelism, truncationFixed: f.bool(5) };
}

const PROTECTOR_RULES: Rules = {
  1: { name: 'protector_descriptor', wire: LEN },
  2: { name: 'source', wire: VARINT },
  3: { name: 'name', wire: LEN },
  4: { name: 'costs', wire: LEN },
  5: { name: 'salt', wire: LEN },
  6: { name: 'uid', wire: VARINT },
  7: { name: 'wrapped_key', wire: LEN },
};

export function decodeProtectorData(bytes: Uint8Array): ProtectorData {
  const f = readFields(bytes, 'ProtectorData', PROTECTOR_RULES);
  const descriptor = f.string(1);
  checkDescriptor(descriptor, HEX16, 16, 'ProtectorData.protector_descriptor');
  const sourceNumber = f.int64(2);
  const source = SOURCE_TYPES[Number(sourceNumber)];
  if (source === undefined || sourceNumber > 3n) {
    throw new FormatError(`ProtectorData.source is ${sourceNumber}, not one of pam_passphrase (1), custom_passphrase (2), raw_key (3)`);
  }
  const name = f.string(3);
  checkName(name, 'ProtectorData.name');
  const uid = smallInt(f.int64(6), source === 'pam_passphrase' ? 0n : -(2n ** 31n), 2n ** 32n - 1n, 'ProtectorData.uid');
  const wrappedKey = decodeWrappedKey(requireMessage(f, 7, 'ProtectorData.wrapped_key'), PROTECTOR_KEY_SIZE, 'ProtectorData.wrapped_key');
  const result: ProtectorData = { descriptor, source, name, uid, wrappedKey };
  if (source === 'raw_key') {
    if (f.has(4) || f.has(5)) throw new FormatError('ProtectorData of a raw_key protector must not have costs or salt');
  } else {
    result.costs = decodeHashingCosts(requireMessage(f, 4, 'ProtectorData.costs'), 'ProtectorData.costs');
    const salt = f.bytes(5);
    checkLength(salt, SALT_SIZE, 'ProtectorData.salt');
    result.salt = salt;
  }
  return result;
}

const OPTIONS_RULES: Rules = {
  1: { name: 'padding', wire: VARINT },
  2: { name: 'contents', wire: VARINT },
  3: { name: 'filenames', wire: VARINT },
  4: { name: 'policy_version', wire: VARINT },
};

const MODE_NAMES = new Map<number, EncryptionMode>(
  Object.entries(ENCRYPTION_MODES).map(([name, number]) => [number, name as EncryptionMode]),
);

function decodeOptions(bytes: Uint8Array, label: string): EncryptionOptions {
  const f = readFields(bytes, label, OPTIONS_RULES);
  const padding = f.int64(1);
  if (padding !== 4n && padding !== 8n && padding !== 16n && padding !== 32n) {
    throw new FormatError(`${label}.padding is ${padding}, not 4, 8, 16 or 32`);
  }
  const version = f.int64(4);
  if (version < 0n || version > 2n) throw new FormatError(`${label}.policy_version is ${version}, not 1 or 2`);
  // Files from fscrypt before v0.2.6 have no policy_version: they are v1.
  const policyVersion = version === 2n ? 2 : 1;
  const contents = MODE_NAMES.get(Number(f.int64(2)));
  const filenames = MODE_NAMES.get(Number(f.int64(3)));
  if (contents === undefined || f.int64(2) > 255n) throw new FormatError(`${label}.contents is ${f.int64(2)}, not a known encryption mode`);
  if (filenames === undefined || f.int64(3) > 255n) throw new FormatError(`${label}.filenames is ${f.int64(3)}, not a known encryption mode`);
  if (!VALID_MODE_PAIRS[policyVersion].some(([c, n]) => c === contents && n === filenames)) {
    throw new FormatError(`${label}: v${policyVersion} policies cannot combine contents ${contents} with filenames ${filenames}`);
  }
  return { padding: Number(padding) as 4 | 8 | 16 | 32, contents: ENCRYPTION_MODES[contents], filenames: ENCRYPTION_MODES[filenames], policyVersion };
}

const WRAPPED_POLICY_KEY_RULES: Rules = {
  1: { name: 'protector_descriptor', wire: LEN },
  2: { name: 'wrapped_key', wire: LEN },
};

const POLICY_RULES: Rules = {
  1: { name: 'key_descriptor', wire: LEN },
  2: { name: 'options', wire: LEN },
  3: { name: 'wrapped_policy_keys', wire: LEN, repeated: true },
};

export function decodePolicyData(bytes: Uint8Array): PolicyData {
  const f = readFields(bytes, 'PolicyData', POLICY_RULES);
  const options = decodeOptions(requireMessage(f, 2, 'PolicyData.options'), 'PolicyData.options');
  const keyDescriptor = f.string(1);
  if (options.policyVersion === 2) checkDescriptor(keyDescriptor, HEX32, 32, 'PolicyData.key_descriptor of a v2 policy');
  else checkDescriptor(keyDescriptor, HEX16, 16, 'PolicyData.key_descriptor of a v1 policy');
  const seen = new Set<string>();
  const wrappedPolicyKeys = f.repeated(3).map((entry, i) => {
    const label = `PolicyData.wrapped_policy_keys[${i}]`;
    const w = readFields(entry, label, WRAPPED_POLICY_KEY_RULES);
    const protectorDescriptor = w.string(1);
    checkDescriptor(protectorDescriptor, HEX16, 16, `${label}.protector_descriptor`);
    if (seen.has(protectorDescriptor)) throw new FormatError(`${label} repeats protector ${protectorDescriptor}`);
    seen.add(protectorDescriptor);
    const wrappedKey = decodeWrappedKey(requireMessage(w, 2, `${label}.wrapped_key`), POLICY_KEY_SIZE, `${label}.wrapped_key`);
    return { protectorDescriptor, wrappedKey };
  });
  return { keyDescriptor, options, wrappedPolicyKeys };
}

const KMS_RECORD_RULES: Rules = {
  1: { name: 'format_version', wire: VARINT },
  2: { name: 'protector_descriptor', wire: LEN },
  3: { name: 'name', wire: LEN },
  4: { name: 'ciphertext', wire: LEN },
  5: { name: 'key_id', wire: LEN },
  6: { name: 'annotations', wire: LEN, repeated: true },
};

const MAP_ENTRY_RULES: Rules = {
  1: { name: 'key', wire: LEN },
  2: { name: 'value', wire: LEN },
};

/**
 * Decodes a map<string, bytes> field's entries and applies the KMS v2 rules
 * (keys are fully qualified DNS names; keys and values at most 32 KiB).
 */
export function decodeAnnotations(entries: Uint8Array[], label: string): Map<string, Uint8Array> {
  const annotations = new Map<string, Uint8Array>();
  let total = 0;
  entries.forEach((entry, i) => {
    const f = readFields(entry, `${label}[${i}]`, MAP_ENTRY_RULES);
    const key = f.string(1);
    const value = f.bytes(2);
    checkAnnotationKey(key, `${label}[${i}].key`);
    if (annotations.has(key)) throw new FormatError(`${label} repeats the key ${JSON.stringify(key)}`);
    total += Buffer.byteLength(key) + value.length;
    annotations.set(key, value);
  });
  if (total > KMS_LIMITS.annotations) throw new FormatError(`${label} hold ${total} bytes; at most ${KMS_LIMITS.annotations} are allowed`);
  return annotations;
}

const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+$/;

function checkAnnotationKey(key: string, label: string): void {
  if (key.length > 253 || !DNS_SUBDOMAIN.test(key)) {
    throw new FormatError(`${label} must be a fully qualified DNS name (RFC 1123), got a string of ${key.length} characters`);
  }
}

export function checkKmsLimits(ciphertext: Uint8Array, keyId: string, label: string): void {
  if (ciphertext.length === 0 || ciphertext.length > KMS_LIMITS.ciphertext) {
    throw new FormatError(`${label}.ciphertext is ${ciphertext.length} bytes; 1 to ${KMS_LIMITS.ciphertext} are allowed`);
  }
  const keyIdBytes = Buffer.byteLength(keyId);
  if (keyIdBytes === 0 || keyIdBytes > KMS_LIMITS.keyId) {
    throw new FormatError(`${label}.key_id is ${keyIdBytes} bytes; 1 to ${KMS_LIMITS.keyId} are allowed`);
  }
}

export function decodeKmsProtector(bytes: Uint8Array): KmsProtectorRecord {
  const f = readFields(bytes, 'KmsProtector', KMS_RECORD_RULES);
  const version = f.uint32(1);
  if (version !== 1n) throw new FormatError(`KmsProtector.format_version is ${version}; this version of fscrypt-local reads version 1`);
  const descriptor = f.string(2);
  checkDescriptor(descriptor, HEX16, 16, 'KmsProtector.protector_descriptor');
  const name = f.string(3);
  checkName(name, 'KmsProtector.name');
  const ciphertext = f.bytes(4);
  const keyId = f.string(5);
  checkKmsLimits(ciphertext, keyId, 'KmsProtector');
  const annotations = decodeAnnotations(f.repeated(6), 'KmsProtector.annotations');
  return { descriptor, name, ciphertext, keyId, annotations };
}

// ---------------------------------------------------------------- encoding

function writeWrappedKey(w: BinaryWriter, no: number, data: WrappedKeyData): void {
  w.tag(no, LEN).fork();
  w.tag(1, LEN).bytes(data.iv);
  w.tag(2, LEN).bytes(data.encryptedKey);
  w.tag(3, LEN).bytes(data.hmac);
  w.join();
}

function writeString(w: BinaryWriter, no: number, value: string): void {
  if (value.length > 0) w.tag(no, LEN).string(value);
}

function writeInt(w: BinaryWriter, no: number, value: number | bigint): void {
  if (value !== 0 && value !== 0n) w.tag(no, VARINT).int64(value);
}

/** Encodes a ProtectorData after checking it would decode. */
export function encodeProtectorData(data: ProtectorData): Uint8Array {
  const w = new BinaryWriter();
  writeString(w, 1, data.descriptor);
  writeInt(w, 2, SOURCE_NUMBERS[data.source]);
  writeString(w, 3, data.name);
  if (data.costs !== undefined) {
    w.tag(4, LEN).fork();
    writeInt(w, 2, data.costs.time);
    writeInt(w, 3, data.costs.memory);
    writeInt(w, 4, data.costs.parallelism);
    if (data.costs.truncationFixed) w.tag(5, VARINT).bool(true);
    w.join();
  }
  if (data.salt !== undefined && data.salt.length > 0) w.tag(5, LEN).bytes(data.salt);
  writeInt(w, 6, data.uid);
  writeWrappedKey(w, 7, data.wrappedKey);
  return checked(w.finish(), decodeProtectorData);
}

export function encodePolicyData(data: PolicyData): Uint8Array {
  const w = new BinaryWriter();
  writeString(w, 1, data.keyDescriptor);
  w.tag(2, LEN).fork();
  writeInt(w, 1, data.options.padding);
  writeInt(w, 2, data.options.contents);
  writeInt(w, 3, data.options.filenames);
  writeInt(w, 4, data.options.policyVersion);
  w.join();
  for (const entry of data.wrappedPolicyKeys) {
    w.tag(3, LEN).fork();
    writeString(w, 1, entry.protectorDescriptor);
    writeWrappedKey(w, 2, entry.wrappedKey);
    w.join();
  }
  return checked(w.finish(), decodePolicyData);
}

/** Writes map<string, bytes> entries, sorted by key so the bytes are deterministic. */
export function writeAnnotations(w: BinaryWriter, no: number, annotations: ReadonlyMap<string, Uint8Array>): void {
  for (const key of [...annotations.keys()].sort()) {
    w.tag(no, LEN).fork();
    w.tag(1, LEN).string(key);
    const value = annotations.get(key)!;
    if (value.length > 0) w.tag(2, LEN).bytes(value);
    w.join();
  }
}

export function encodeKmsProtector(record: KmsProtectorRecord): Uint8Array {
  const w = new BinaryWriter();
  w.tag(1, VARINT).uint32(1);
  writeString(w, 2, record.descriptor);
  writeString(w, 3, record.name);
  w.tag(4, LEN).bytes(record.ciphertext);
  writeString(w, 5, record.keyId);
  writeAnnotations(w, 6, record.annotations);
  return checked(w.finish(), decodeKmsProtector);
}

/** Never write what we would refuse to read. */
function checked(bytes: Uint8Array, decode: (b: Uint8Array) => unknown): Uint8Array {
  try {
    decode(bytes);
  } catch (error) {
    throw FscryptError.invalidArgument(`refusing to write invalid metadata: ${error instanceof Error ? error.message : String(error)}`);
  }
  return bytes;
}

/** Runs a decoder and turns its failure into ERR_BAD_METADATA naming the file. */
export function decodeFile<T>(bytes: Uint8Array, path: string, decode: (b: Uint8Array) => T): T {
  try {
    return decode(bytes);
  } catch (error) {
    const detail = error instanceof FormatError ? error.message : `unexpected decoder failure (${error instanceof Error ? error.name : typeof error})`;
    throw badMetadata(path, detail);
  }
}

export function badMetadata(path: string, detail: string): FscryptError {
  return new FscryptError(
    `metadata file '${path}' is invalid: ${detail}. It was damaged or altered; nothing was changed. ` +
      'Restore the file from a backup, or recreate the protector or volume it belongs to',
    { code: 'ERR_BAD_METADATA', path },
  );
}
