// Fuzzing the key metadata parsers with fast-check (issue 11; it replaces
// the hand-rolled keys-fuzz). Properties:
//  - a valid value (any ProtectorData, PolicyData, KmsProtector fast-check
//    builds) encodes and decodes back to exactly itself;
//  - every decoder, on random bytes and on valid encodings with byte flips,
//    truncations, insertions and duplications, either returns a value that
//    survives a canonical round trip or throws ERR_BAD_METADATA naming the
//    file (through decodeFile): never a TypeError, RangeError or a hang;
//  - the KMS plugin's replies: a valid reply decodes to what was sent;
//    arbitrary and mutated replies give a value or a FormatError;
//  - through SlotKeys on real files, a mutated protector or policy file is
//    refused with a clear FscryptError or still yields exactly the right
//    key: never a crash, never a silent wrong key.
// Replaying a failure: docs/testing.md, "Fuzzing".
import { readFile, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BinaryWriter, WireType } from '@bufbuild/protobuf/wire';
import fc from 'fast-check';
import t from 'tap';
import { ENCRYPTION_MODES, FscryptError, keyIdentifier, VALID_MODE_PAIRS } from '../../lib/kernel/index.js';
import { newPolicyKey, SlotKeys, slotLayout } from '../../lib/keys/index.js';
import {
  ARGON2_LIMITS,
  decodeFile,
  decodeKmsProtector,
  decodePolicyData,
  decodeProtectorData,
  encodeKmsProtector,
  encodePolicyData,
  encodeProtectorData,
  FormatError,
  type KmsProtectorRecord,
  type PolicyData,
  type ProtectorData,
} from '../../lib/keys/metadata-format.js';
import { decodeDecryptResponse, decodeEncryptResponse, decodeStatusResponse, type EncryptResponse, type StatusResponse } from '../../lib/keys/sources/kms-protocol.js';
import { fuzz, mutated } from '../fixtures/campaign/fuzz.js';
import { kekFile, secretsDir } from '../fixtures/keys-helpers.js';
import { tmpfs } from '../fixtures/system/scratch-fs.js';

const FILE = 'fuzz/metadata.test.ts';
const PATH = '/fuzz/file';

// ---------------------------------------------------------------- valid values

const hex = (bytes: number) => fc.uint8Array({ minLength: bytes, maxLength: bytes }).map((b) => Buffer.from(b).toString('hex'));
const bytesOf = (n: number) => fc.uint8Array({ minLength: n, maxLength: n }).map((b) => Buffer.from(b));
const wrapped = (keySize: number) => fc.record({ iv: bytesOf(16), encryptedKey: bytesOf(keySize), hmac: bytesOf(32) });
// Any Unicode text but lone surrogates (which UTF-8 cannot carry).
const text = (maxLength: number) => fc.string({ unit: 'binary', maxLength });

const costs = fc
  .record({
    time: fc.integer({ min: 1, max: ARGON2_LIMITS.maxTime }),
    parallelism: fc.integer({ min: 1, max: ARGON2_LIMITS.maxParallelism }),
    memoryOver: fc.integer({ min: 0, max: ARGON2_LIMITS.maxMemoryKiB }),
    truncationFixed: fc.boolean(),
  })
  .map(({ time, parallelism, memoryOver, truncationFixed }) => ({
    time,
    parallelism,
    memory: Math.min(ARGON2_LIMITS.maxMemoryKiB, 8 * parallelism + memoryOver),
    truncationFixed,
  }));

const protectorArb: fc.Arbitrary<ProtectorData> = fc.oneof(
  fc.record({ descriptor: hex(8), source: fc.constant('raw_key' as const), name: text(40), uid: fc.integer({ min: -(2 ** 31), max: 2 ** 32 - 1 }), wrappedKey: wrapped(32) }),
  fc.record({
    descriptor: hex(8),
    source: fc.constantFrom('custom_passphrase' as const, 'pam_passphrase' as const),
    name: text(40),
    costs,
    salt: bytesOf(16),
    uid: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
    wrappedKey: wrapped(32),
  }),
);

const policyArb: fc.Arbitrary<PolicyData> = fc
  .record({
    version: fc.constantFrom(1 as const, 2 as const),
    pair: fc.nat(),
    padding: fc.constantFrom(4 as const, 8 as const, 16 as const, 32 as const),
    v1: hex(8),
    v2: hex(16),
    keys: fc.uniqueArray(fc.record({ protectorDescriptor: hex(8), wrappedKey: wrapped(64) }), { maxLength: 4, selector: (k) => k.protectorDescriptor }),
  })
  .map(({ version, pair, padding, v1, v2, keys }) => {
    const pairs = VALID_MODE_PAIRS[version];
    const [contents, filenames] = pairs[pair % pairs.length]!;
    return {
      keyDescriptor: version === 2 ? v2 : v1,
      options: { padding, contents: ENCRYPTION_MODES[contents], filenames: ENCRYPTION_MODES[filenames], policyVersion: version },
      wrappedPolicyKeys: keys,
    };
  });

const dnsLabel = fc.stringMatching(/^[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?$/);
const annotationKey = fc.array(dnsLabel, { minLength: 2, maxLength: 4 }).map((labels) => labels.join('.'));
const annotations = fc.uniqueArray(fc.tuple(annotationKey, fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b))), { maxLength: 4, selector: ([k]) => k }).map((entries) => new Map(entries));

const kmsArb: fc.Arbitrary<KmsProtectorRecord> = fc.record({
  descriptor: hex(8),
  name: text(40),
  ciphertext: fc.uint8Array({ minLength: 1, maxLength: 200 }).map((b) => Buffer.from(b)),
  keyId: text(40).filter((s) => s.length > 0),
  annotations,
});

/** A stable form for comparing decoded values: bytes as hex, maps as sorted entries, object keys sorted. */
function canonical(value: unknown): string {
  const plain = (v: unknown): unknown => {
    if (v instanceof Uint8Array) return Buffer.from(v).toString('hex');
    if (v instanceof Map) return [...v.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([k, x]) => [k, plain(x)]);
    if (Array.isArray(v)) return v.map(plain);
    if (v !== null && typeof v === 'object') return Object.fromEntries(Object.keys(v).sort().map((k) => [k, plain((v as Record<string, unknown>)[k])]));
    return v;
  };
  return JSON.stringify(plain(value));
}

const CODECS = [
  { name: 'ProtectorData', arb: protectorArb as fc.Arbitrary<unknown>, encode: encodeProtectorData as (v: unknown) => Uint8Array, decode: decodeProtectorData as (b: Uint8Array) => unknown },
  { name: 'PolicyData', arb: policyArb as fc.Arbitrary<unknown>, encode: encodePolicyData as (v: unknown) => Uint8Array, decode: decodePolicyData as (b: Uint8Array) => unknown },
  { name: 'KmsProtector', arb: kmsArb as fc.Arbitrary<unknown>, encode: encodeKmsProtector as (v: unknown) => Uint8Array, decode: decodeKmsProtector as (b: Uint8Array) => unknown },
];

for (const codec of CODECS) {
  t.test(`${codec.name}: every valid value encodes and decodes back to itself`, async (t) => {
    await fuzz(t, { parser: `${codec.name} (valid values)`, file: FILE, runs: 3000 }, codec.arb, (value) => {
      const bytes = codec.encode(value);
      const back = codec.decode(bytes);
      if (canonical(back) !== canonical(value)) throw new Error(`decoded ${canonical(back)}, encoded ${canonical(value)}`);
      // Canonical: encoding the decoded value gives the same bytes.
      if (!Buffer.from(codec.encode(back)).equals(Buffer.from(bytes))) throw new Error('re-encoding changed the bytes');
    });
  });

  t.test(`${codec.name}: random and mutated bytes are decoded canonically or refused as ERR_BAD_METADATA`, async (t) => {
    const outcomes = { accepted: 0, refused: 0 };
    const input = fc.oneof(
      { arbitrary: fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b)), weight: 1 },
      // Mutations of any encoding, not only this codec's: a policy read as a protector, say.
      { arbitrary: mutated(fc.oneof(...CODECS.map((c) => c.arb.map((v) => c.encode(v))))), weight: 4 },
    );
    await fuzz(t, { parser: `${codec.name} (random and mutated bytes)`, file: FILE, runs: 5000 }, input, (bytes) => {
      let value: unknown;
      try {
        value = decodeFile(bytes, PATH, codec.decode);
      } catch (error) {
        if (error instanceof FscryptError && error.code === 'ERR_BAD_METADATA' && error.path === PATH && /is invalid: /.test(error.message) && !/unexpected decoder failure/.test(error.message)) {
          outcomes.refused++;
          return;
        }
        throw error;
      }
      outcomes.accepted++;
      const again = codec.decode(codec.encode(value));
      if (canonical(again) !== canonical(value)) throw new Error('an accepted input does not survive a round trip');
    });
    t.ok(outcomes.refused > 0, `refused: ${outcomes.refused}, accepted: ${outcomes.accepted}`);
  });
}

// ---------------------------------------------------------------- KMS replies

function encodeStatus(s: StatusResponse): Uint8Array {
  const w = new BinaryWriter();
  if (s.version !== '') w.tag(1, WireType.LengthDelimited).string(s.version);
  if (s.healthz !== '') w.tag(2, WireType.LengthDelimited).string(s.healthz);
  if (s.keyId !== '') w.tag(3, WireType.LengthDelimited).string(s.keyId);
  return w.finish();
}

function encodeEncrypt(r: EncryptResponse, unknownField?: Uint8Array): Uint8Array {
  const w = new BinaryWriter();
  w.tag(1, WireType.LengthDelimited).bytes(r.ciphertext);
  w.tag(2, WireType.LengthDelimited).string(r.keyId);
  for (const [key, value] of r.annotations) w.tag(3, WireType.LengthDelimited).fork().tag(1, WireType.LengthDelimited).string(key).tag(2, WireType.LengthDelimited).bytes(value).join();
  // A newer plugin's field: skipped, as proto3 requires.
  if (unknownField !== undefined) w.tag(15, WireType.LengthDelimited).bytes(unknownField);
  return w.finish();
}

const statusArb = fc.record({ version: text(10), healthz: text(10), keyId: text(30) });
const encryptArb = fc.record({ ciphertext: fc.uint8Array({ minLength: 1, maxLength: 200 }).map((b) => Buffer.from(b)), keyId: text(40).filter((s) => s.length > 0), annotations });

t.test('KMS replies: valid replies decode to what the plugin sent', async (t) => {
  const arb = fc.tuple(statusArb, encryptArb, fc.option(fc.uint8Array({ maxLength: 20 }), { nil: undefined }), fc.uint8Array({ maxLength: 64 }));
  await fuzz(t, { parser: 'KMS replies (valid)', file: FILE, runs: 3000 }, arb, ([status, encrypt, extra, plaintext]) => {
    if (canonical(decodeStatusResponse(encodeStatus(status))) !== canonical(status)) throw new Error('StatusResponse differs');
    if (canonical(decodeEncryptResponse(encodeEncrypt(encrypt, extra))) !== canonical(encrypt)) throw new Error('EncryptResponse differs');
    const reply = new BinaryWriter();
    if (plaintext.length > 0) reply.tag(1, WireType.LengthDelimited).bytes(plaintext);
    if (!decodeDecryptResponse(reply.finish()).equals(Buffer.from(plaintext))) throw new Error('DecryptResponse differs');
  });
});

t.test('KMS replies: arbitrary and mutated replies are decoded or refused with a FormatError', async (t) => {
  const valid = fc.oneof(statusArb.map(encodeStatus), encryptArb.map((e) => encodeEncrypt(e)), fc.uint8Array({ maxLength: 40 }).map((p) => new BinaryWriter().tag(1, WireType.LengthDelimited).bytes(p).finish()));
  const input = fc.oneof(fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b)), mutated(valid));
  let refused = 0;
  await fuzz(t, { parser: 'KMS replies (random and mutated)', file: FILE, runs: 5000 }, input, (bytes) => {
    for (const decode of [decodeStatusResponse, decodeEncryptResponse, decodeDecryptResponse]) {
      try {
        decode(Buffer.from(bytes)); // a copy: decodeDecryptResponse wipes its input
      } catch (error) {
        if (!(error instanceof FormatError)) throw error;
        refused++;
      }
    }
  });
  t.ok(refused > 0, `refused: ${refused}`);
});

// ---------------------------------------------------------------- through SlotKeys

t.test('through SlotKeys on real files: mutated protector and policy files never crash or give a wrong key', async (t) => {
  const fs = tmpfs(t);
  const root = join(fs.mountpoint, 'slot');
  await mkdir(root);
  const dir = await secretsDir(t);
  const { spec } = await kekFile(dir);
  const slot = new SlotKeys(root);
  const open = await slot.createAndOpenProtector(spec, { name: 'fuzzed' });
  const key = newPolicyKey();
  const identifier = keyIdentifier(key);
  await open.addPolicy(key);
  open.close();
  const layout = slotLayout(root);
  const files = { protector: join(layout.protectorsDir, open.descriptor), policy: join(layout.policiesDir, identifier) };
  const original = { protector: await readFile(files.protector), policy: await readFile(files.policy) };
  const codes = new Map<string, number>();
  let successes = 0;
  const expectedCodes = new Set(['ERR_BAD_METADATA', 'ERR_WRONG_KEY', 'ENOENT']);
  const arb = fc.constantFrom('protector' as const, 'policy' as const).chain((target) => fc.tuple(fc.constant(target), mutated(fc.constant(original[target]), 3)));
  // Two cases whatever the seed: the protector's name is not part of any
  // key, so changing it is harmless; a flipped bit of a wrapped key is a wrong key.
  const renamed = Buffer.from(original.protector);
  renamed[renamed.indexOf('fuzzed')] = 'F'.charCodeAt(0);
  const flipped = Buffer.from(original.policy);
  flipped[flipped.length - 40] = flipped[flipped.length - 40]! ^ 1;

  await fuzz(t, { parser: 'protector and policy files through SlotKeys', file: FILE, runs: 1500, examples: [['protector', renamed], ['policy', flipped]] }, arb, async ([target, bytes]) => {
    await writeFile(files[target], bytes, { mode: 0o600 });
    try {
      const opened = await slot.openProtector(spec);
      try {
        const got = await opened.unwrapPolicyKey(identifier);
        if (!got.equals(key)) throw new Error(`a WRONG KEY was returned for a mutated ${target} file`);
        successes++;
      } finally {
        opened.close();
      }
    } catch (error) {
      const code = String((error as { code?: unknown }).code);
      if (!(error instanceof FscryptError) || !expectedCodes.has(code)) throw error;
      codes.set(code, (codes.get(code) ?? 0) + 1);
    } finally {
      await writeFile(files[target], original[target], { mode: 0o600 });
    }
  });
  t.ok((codes.get('ERR_BAD_METADATA') ?? 0) > 0, `refused as bad metadata: ${JSON.stringify([...codes])}`);
  t.ok((codes.get('ERR_WRONG_KEY') ?? 0) > 0, 'refused as a wrong key (changed wrapped bytes)');
  t.ok(successes > 0, `harmless mutations still give the right key (${successes})`);
});
