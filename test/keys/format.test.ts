// The metadata codec: byte-exact round trips of files written by the stock
// fscrypt v0.3.3 tool, a known-answer unwrap of an fscrypt passphrase
// protector (Argon2id + HKDF + AES-CTR + HMAC + descriptor), and every kind of
// malformed input the strict decoder must refuse with a clear message.
import { BinaryWriter, WireType } from '@bufbuild/protobuf/wire';
import t from 'tap';
import { FscryptError } from '../../lib/kernel/index.js';
import {
  decodeFile,
  decodeKmsProtector,
  decodePolicyData,
  decodeProtectorData,
  encodeKmsProtector,
  encodePolicyData,
  encodeProtectorData,
  FormatError,
  type ProtectorData,
} from '../../lib/keys/metadata-format.js';
import { deriveKek } from '../../lib/keys/sources/passphrase.js';
import { keyDescriptor, unwrapKey, wrapKey } from '../../lib/keys/wrap.js';
import { randomKey } from '../fixtures/helpers.js';

// Written by `fscrypt encrypt` (Debian fscrypt 0.3.3) on this project's dev VM:
// a raw_key protector "bg", a custom_passphrase protector "pp" (passphrase
// "pass word", t=19, m=128 MiB, p=2), and a v2 policy under "bg".
const FSCRYPT_RAW_KEY_PROTECTOR = Buffer.from(
  '0a1039316163393562313738383136393836100' +
    '31a0262673a560a10eadee42efd65b37331716e19615265a2122045d30627c129f0b8b206f43fe8d6eb778aacd74c936f8c2bc994d0672b6a62471a20' +
    '1f4325d38879c18f8ebae8bfb4d71084592289a37f272528b067bfa16595e539',
  'hex',
);
const FSCRYPT_PASSPHRASE_PROTECTOR = Buffer.from(
  '0a10336132333966663231393134623363661002' +
    '1a0270702208101318808008200' +
    '22a10c76e99d9d15d968ff72511d448c78e5e3a560a10c2ff90acf1a8b9b79c12319e362130a71220ce512b83ea2aa1462354de63b1f2f8ebd12d5b92fc36' +
    '396364a98a9412720109' +
    '1a2057d3eb7e950c79c23b4ad9751938e9e33d769f40f596c0d8ab3c220e0052c1e0',
  'hex',
);
const FSCRYPT_POLICY = Buffer.from(
  '0a203435346137323636636463336335313731393164666435623062326335383933' +
    '120808201001180420021a8a010a103931616339356231373838313639383612760a1082cc1d788dfc1c70f34aecc4af98093312405e1035e338425b3afd' +
    '45b9450c67da1d36fa49f3ecf7db32610711f7e5e74543ee94c2e44f71fb27be05830e3c3b12bffc7346b05b5c7ab218788e6223473d9d1a2028c5a15fa0c18c' +
    '8850136ff3f9e765677a2d45ebfa94f94e4a4925c8d0ec0224',
  'hex',
);

t.test('files written by the stock fscrypt tool decode, and re-encode byte for byte', async (t) => {
  t.equal(FSCRYPT_RAW_KEY_PROTECTOR.length, 112);
  t.equal(FSCRYPT_PASSPHRASE_PROTECTOR.length, 140);
  t.equal(FSCRYPT_POLICY.length, 185);
  const raw = decodeProtectorData(FSCRYPT_RAW_KEY_PROTECTOR);
  t.match(raw, { descriptor: '91ac95b178816986', source: 'raw_key', name: 'bg', uid: 0 });
  t.equal(raw.costs, undefined);
  t.same(Buffer.from(encodeProtectorData(raw)), FSCRYPT_RAW_KEY_PROTECTOR);

  const pass = decodeProtectorData(FSCRYPT_PASSPHRASE_PROTECTOR);
  t.match(pass, { descriptor: '3a239ff21914b3cf', source: 'custom_passphrase', name: 'pp', costs: { time: 19, memory: 131072, parallelism: 2, truncationFixed: false } });
  t.equal(pass.salt?.length, 16);
  t.same(Buffer.from(encodeProtectorData(pass)), FSCRYPT_PASSPHRASE_PROTECTOR);

  const policy = decodePolicyData(FSCRYPT_POLICY);
  t.match(policy, {
    keyDescriptor: '454a7266cdc3c517191dfd5b0b2c5893',
    options: { padding: 32, contents: 1, filenames: 4, policyVersion: 2 },
    wrappedPolicyKeys: [{ protectorDescriptor: '91ac95b178816986' }],
  });
  t.same(Buffer.from(encodePolicyData(policy)), FSCRYPT_POLICY);
});

t.test('known answer: the fscrypt passphrase protector unwraps with Argon2id to a key whose descriptor is its name', async (t) => {
  const data = decodeProtectorData(FSCRYPT_PASSPHRASE_PROTECTOR);
  const kek = await deriveKek(Buffer.from('pass word'), data.salt!, data.costs!);
  const key = unwrapKey(kek, data.wrappedKey);
  t.ok(key, 'the HMAC verifies');
  t.equal(key!.length, 32);
  t.equal(keyDescriptor(key!), '3a239ff21914b3cf');
  const wrong = await deriveKek(Buffer.from('pass word!'), data.salt!, data.costs!);
  t.equal(unwrapKey(wrong, data.wrappedKey), null, 'a wrong passphrase fails the HMAC');
});

t.test('wrap/unwrap round trip; any changed bit fails the HMAC', async (t) => {
  const kek = randomKey(32);
  const secret = randomKey(64);
  const wrapped = wrapKey(kek, secret);
  t.equal(wrapped.iv.length, 16);
  t.equal(wrapped.hmac.length, 32);
  t.notSame(Buffer.from(wrapped.encryptedKey), secret);
  t.ok(unwrapKey(kek, wrapped)!.equals(secret));
  t.notSame(Buffer.from(wrapKey(kek, secret).iv), Buffer.from(wrapped.iv), 'a fresh IV every time');
  for (const field of ['iv', 'encryptedKey', 'hmac'] as const) {
    for (const bit of [0, 7, 100]) {
      const copy = { iv: Buffer.from(wrapped.iv), encryptedKey: Buffer.from(wrapped.encryptedKey), hmac: Buffer.from(wrapped.hmac) };
      const b = copy[field];
      const i = Math.floor(bit / 8) % b.length;
      b[i] = b[i]! ^ (1 << bit % 8);
      t.equal(unwrapKey(kek, copy), null, `${field} bit ${bit}`);
    }
  }
  t.throws(() => wrapKey(randomKey(31), secret), { code: 'ERR_INVALID_ARG' });
});

function caught(fn: () => unknown): Error | undefined {
  try {
    fn();
  } catch (error) {
    return error as Error;
  }
  return undefined;
}

function protector(overrides: Partial<ProtectorData> = {}): ProtectorData {
  return {
    descriptor: '0123456789abcdef',
    source: 'raw_key',
    name: 'p',
    uid: 0,
    wrappedKey: { iv: randomKey(16), encryptedKey: randomKey(32), hmac: randomKey(32) },
    ...overrides,
  };
}

/** A hand-built ProtectorData with arbitrary fields, to bypass the encoder's checks. */
function raw(build: (w: BinaryWriter) => void): Uint8Array {
  const w = new BinaryWriter();
  build(w);
  return w.finish();
}
const LEN = WireType.LengthDelimited;
const VAR = WireType.Varint;
const wrappedKeyBytes = (ivLen = 16, keyLen = 32, macLen = 32): Uint8Array =>
  raw((w) => w.tag(1, LEN).bytes(randomKey(ivLen || 1).subarray(0, ivLen)).tag(2, LEN).bytes(new Uint8Array(keyLen)).tag(3, LEN).bytes(new Uint8Array(macLen)));
const validRaw = (extra?: (w: BinaryWriter) => void): Uint8Array =>
  raw((w) => {
    w.tag(1, LEN).string('0123456789abcdef').tag(2, VAR).int32(3).tag(3, LEN).string('p').tag(7, LEN).bytes(wrappedKeyBytes());
    extra?.(w);
  });

t.test('the decoder accepts exactly the valid messages', async (t) => {
  t.ok(decodeProtectorData(validRaw()), 'the baseline is valid');
  const cases: [string, Uint8Array, RegExp][] = [
    ['empty', new Uint8Array(0), /protector_descriptor must be 16/],
    ['unknown field', validRaw((w) => w.tag(9, VAR).int32(1)), /unknown field number 9/],
    ['wrong wire type', raw((w) => w.tag(1, VAR).int32(5)), /protector_descriptor has wire type 0/],
    ['duplicate field', validRaw((w) => w.tag(3, LEN).string('again')), /name appears more than once/],
    ['unknown source', raw((w) => w.tag(1, LEN).string('0123456789abcdef').tag(2, VAR).int32(7).tag(7, LEN).bytes(wrappedKeyBytes())), /source is 7/],
    ['negative source', raw((w) => w.tag(1, LEN).string('0123456789abcdef').tag(2, VAR).int32(-1).tag(7, LEN).bytes(wrappedKeyBytes())), /source is -1/],
    ['no source', raw((w) => w.tag(1, LEN).string('0123456789abcdef').tag(7, LEN).bytes(wrappedKeyBytes())), /source is 0/],
    ['upper-case descriptor', raw((w) => w.tag(1, LEN).string('0123456789ABCDEF').tag(2, VAR).int32(3).tag(7, LEN).bytes(wrappedKeyBytes())), /16 lower-case hex/],
    ['short IV', raw((w) => w.tag(1, LEN).string('0123456789abcdef').tag(2, VAR).int32(3).tag(7, LEN).bytes(wrappedKeyBytes(15))), /IV must be 16 bytes, got 15/],
    ['long key', raw((w) => w.tag(1, LEN).string('0123456789abcdef').tag(2, VAR).int32(3).tag(7, LEN).bytes(wrappedKeyBytes(16, 33))), /encrypted_key must be 32 bytes/],
    ['short hmac', raw((w) => w.tag(1, LEN).string('0123456789abcdef').tag(2, VAR).int32(3).tag(7, LEN).bytes(wrappedKeyBytes(16, 32, 31))), /hmac must be 32 bytes/],
    ['no wrapped key', raw((w) => w.tag(1, LEN).string('0123456789abcdef').tag(2, VAR).int32(3)), /wrapped_key is missing/],
    ['raw_key with a salt', validRaw((w) => w.tag(5, LEN).bytes(randomKey(16))), /raw_key protector must not have costs or salt/],
    ['invalid UTF-8 name', raw((w) => w.tag(1, LEN).string('0123456789abcdef').tag(2, VAR).int32(3).tag(3, LEN).bytes(Buffer.from([0xff, 0xfe])).tag(7, LEN).bytes(wrappedKeyBytes())), /name is not valid UTF-8/],
    ['truncated', validRaw().subarray(0, 40), /not a valid protobuf message|premature EOF/],
    ['trailing zero byte', Buffer.concat([validRaw(), Buffer.from([0])]), /not a valid protobuf message/],
    ['trailing partial tag', Buffer.concat([validRaw(), Buffer.from([0x80])]), /not a valid protobuf message/],
    ['group wire type', Buffer.concat([validRaw(), Buffer.from([0x0b, 0x0c])]), /unknown field number 1|wire type 3/],
    ['huge length', Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]), /not a valid protobuf message/],
    ['overlong varint', Buffer.concat([Buffer.from([0x10]), Buffer.alloc(10, 0xff), Buffer.from([0x01])]), /not a valid protobuf message/],
  ];
  for (const [what, bytes, message] of cases) {
    const error = caught(() => decodeProtectorData(bytes));
    t.ok(error instanceof FormatError, `${what}: a FormatError`);
    t.match(error?.message, message, what);
  }
  // Passphrase protectors: costs and salt are required and bounded.
  const pass = (costs: Uint8Array | undefined, salt: Uint8Array | undefined): Uint8Array =>
    raw((w) => {
      w.tag(1, LEN).string('0123456789abcdef').tag(2, VAR).int32(2);
      if (costs) w.tag(4, LEN).bytes(costs);
      if (salt) w.tag(5, LEN).bytes(salt);
      w.tag(7, LEN).bytes(wrappedKeyBytes());
    });
  const costs = (time: number, memory: number, p: number): Uint8Array => raw((w) => w.tag(2, VAR).int64(time).tag(3, VAR).int64(memory).tag(4, VAR).int64(p));
  t.ok(decodeProtectorData(pass(costs(1, 8, 1), randomKey(16))));
  const passCases: [string, Uint8Array, RegExp][] = [
    ['no costs', pass(undefined, randomKey(16)), /costs is missing/],
    ['no salt', pass(costs(1, 1024, 1), undefined), /salt must be 16 bytes, got 0/],
    ['time 0', pass(costs(0, 1024, 1), randomKey(16)), /time is 0/],
    ['memory below 8p', pass(costs(1, 15, 2), randomKey(16)), /memory \(KiB\) is 15/],
    ['memory of 4 TiB', pass(costs(1, 2 ** 32 - 1, 1), randomKey(16)), /memory \(KiB\) is 4294967295, outside/],
    ['parallelism 256', pass(costs(1, 4096, 256), randomKey(16)), /parallelism is 256/],
    ['negative time', pass(costs(-1, 1024, 1), randomKey(16)), /time is -1/],
  ];
  for (const [what, bytes, message] of passCases) t.throws(() => decodeProtectorData(bytes), { message }, what);
});

t.test('policy files: options, identifiers and wrapped keys are checked', async (t) => {
  const good = decodePolicyData(FSCRYPT_POLICY);
  const rebuild = (f: (d: typeof good) => void): Uint8Array => {
    const copy = structuredClone(good);
    f(copy);
    // Encode without the encoder's own validation: assemble by hand.
    const w = new BinaryWriter();
    w.tag(1, LEN).string(copy.keyDescriptor);
    w.tag(2, LEN).fork().tag(1, VAR).int64(copy.options.padding).tag(2, VAR).int64(copy.options.contents).tag(3, VAR).int64(copy.options.filenames).tag(4, VAR).int64(copy.options.policyVersion).join();
    for (const e of copy.wrappedPolicyKeys) {
      w.tag(3, LEN).fork().tag(1, LEN).string(e.protectorDescriptor);
      w.tag(2, LEN).fork().tag(1, LEN).bytes(e.wrappedKey.iv).tag(2, LEN).bytes(e.wrappedKey.encryptedKey).tag(3, LEN).bytes(e.wrappedKey.hmac).join();
      w.join();
    }
    return w.finish();
  };
  t.same(Buffer.from(rebuild(() => undefined)), FSCRYPT_POLICY, 'the hand encoder matches');
  const cases: [string, (d: typeof good) => void, RegExp][] = [
    ['padding 3', (d) => ((d.options as { padding: number }).padding = 3), /padding is 3/],
    ['version 3', (d) => ((d.options as { policyVersion: number }).policyVersion = 3), /policy_version is 3/],
    ['v1 with a 32-hex descriptor', (d) => ((d.options as { policyVersion: number }).policyVersion = 1), /v1 policy must be 16/],
    ['unknown mode', (d) => (d.options.contents = 42), /contents is 42/],
    ['invalid pair', (d) => (d.options.filenames = 1), /cannot combine contents AES_256_XTS with filenames AES_256_XTS/],
    ['short identifier', (d) => (d.keyDescriptor = d.keyDescriptor.slice(2)), /32 lower-case hex/],
    ['repeated protector', (d) => d.wrappedPolicyKeys.push(d.wrappedPolicyKeys[0]!), /repeats protector/],
    ['32-byte policy key', (d) => (d.wrappedPolicyKeys[0]!.wrappedKey.encryptedKey = randomKey(32)), /encrypted_key must be 64 bytes/],
  ];
  for (const [what, change, message] of cases) t.throws(() => decodePolicyData(rebuild(change)), { message }, what);
  // A v1 policy of the old format (no policy_version) reads as v1.
  const v1 = decodePolicyData(
    rebuild((d) => {
      d.keyDescriptor = '0011223344556677';
      (d.options as { policyVersion: number }).policyVersion = 0;
    }),
  );
  t.equal(v1.options.policyVersion, 1);
});

t.test('KMS records round-trip and are checked like KMS v2 replies', async (t) => {
  const record = { descriptor: '0123456789abcdef', name: 'kms', ciphertext: randomKey(60), keyId: 'arn:aws:kms:key/1', annotations: new Map([['version.encryption.remote.io', Buffer.from('1')]]) };
  const decoded = decodeKmsProtector(encodeKmsProtector(record));
  t.same({ ...decoded, ciphertext: Buffer.from(decoded.ciphertext) }, record);
  t.throws(() => encodeKmsProtector({ ...record, ciphertext: new Uint8Array(0) }), { code: 'ERR_INVALID_ARG', message: /ciphertext is 0 bytes/ });
  t.throws(() => encodeKmsProtector({ ...record, keyId: '' }), { message: /key_id is 0 bytes/ });
  t.throws(() => encodeKmsProtector({ ...record, ciphertext: randomKey(1025) }), { message: /ciphertext is 1025 bytes/ });
  t.throws(() => encodeKmsProtector({ ...record, annotations: new Map([['nodots', Buffer.from('1')]]) }), { message: /fully qualified DNS name/ });
  t.throws(() => encodeKmsProtector({ ...record, annotations: new Map([['a.b', Buffer.alloc(33 * 1024)]]) }), { message: /at most 32768/ });
  const future = raw((w) => w.tag(1, VAR).uint32(2));
  t.throws(() => decodeKmsProtector(future), { message: /format_version is 2/ });
});

t.test('decodeFile turns any failure into ERR_BAD_METADATA naming the file', async (t) => {
  const error = t.throws(() => decodeFile(new Uint8Array([0xff]), '/slot/.fscrypt/protectors/x', decodeProtectorData)) as FscryptError;
  t.ok(error instanceof FscryptError);
  t.match(error, { code: 'ERR_BAD_METADATA', path: '/slot/.fscrypt/protectors/x', message: /'\/slot\/.fscrypt\/protectors\/x' is invalid: .*nothing was changed/ });
  const odd = t.throws(() =>
    decodeFile(new Uint8Array(0), '/f', () => {
      throw new TypeError('boom');
    }),
  ) as FscryptError;
  t.match(odd, { code: 'ERR_BAD_METADATA', message: /unexpected decoder failure \(TypeError\)/ });
});

t.test('the encoder refuses to write what the decoder would refuse', async (t) => {
  t.throws(() => encodeProtectorData(protector({ descriptor: 'xyz' })), { code: 'ERR_INVALID_ARG', message: /refusing to write invalid metadata/ });
  t.throws(() => encodeProtectorData(protector({ source: 'custom_passphrase' })), { code: 'ERR_INVALID_ARG' });
});
