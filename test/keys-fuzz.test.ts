// Fuzzing the metadata parsers with a fixed seed: thousands of random and
// mutated inputs. Properties:
//  - every decoder either returns or throws its own error type (never a
//    TypeError, RangeError or a hang); accepted input re-encodes canonically;
//  - through SlotKeys on real files, a mutated protector or policy file is
//    either refused with a clear FscryptError or still yields exactly the
//    right key: never a crash, never a silent wrong key.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { FscryptError, keyIdentifier } from '../lib/kernel/index.js';
import { newPolicyKey, SlotKeys, slotLayout } from '../lib/keys/index.js';
import {
  decodeFile,
  decodeKmsProtector,
  decodePolicyData,
  decodeProtectorData,
  encodeKmsProtector,
  encodePolicyData,
  encodeProtectorData,
  FormatError,
} from '../lib/keys/metadata-format.js';
import { decodeDecryptResponse, decodeEncryptResponse, decodeStatusResponse } from '../lib/keys/sources/kms-protocol.js';
import { kekFile, secretsDir } from './fixtures/keys-helpers.js';
import { tmpfs } from './fixtures/scratch-fs.js';

const SEED = 0x5eed_f5c7;

/** xorshift32: small, fast and the same on every machine. */
function prng(seed: number): { int(n: number): number; bytes(n: number): Buffer } {
  let x = seed >>> 0 || 1;
  const next = (): number => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
  return {
    int: (n) => next() % n,
    bytes: (n) => {
      const b = Buffer.alloc(n);
      for (let i = 0; i < n; i++) b[i] = next() & 0xff;
      return b;
    },
  };
}

type Rng = ReturnType<typeof prng>;

/** One random mutation of `input`. */
function mutate(rng: Rng, input: Buffer, corpus: Buffer[]): Buffer {
  const b = Buffer.from(input);
  const at = (): number => (b.length === 0 ? 0 : rng.int(b.length));
  switch (rng.int(9)) {
    case 0: {
      if (b.length === 0) return rng.bytes(1);
      const i = at();
      b[i] = b[i]! ^ (1 << rng.int(8));
      return b;
    }
    case 1: {
      if (b.length === 0) return b;
      b[at()] = [0x00, 0x7f, 0x80, 0xff, rng.int(256)][rng.int(5)]!;
      return b;
    }
    case 2: {
      const i = at();
      return Buffer.concat([b.subarray(0, i), rng.bytes(1 + rng.int(8)), b.subarray(i)]);
    }
    case 3: {
      const i = at();
      return Buffer.concat([b.subarray(0, i), b.subarray(i + 1 + rng.int(8))]);
    }
    case 4:
      return b.subarray(0, at());
    case 5: {
      const i = at();
      const j = i + rng.int(Math.max(1, b.length - i));
      return Buffer.concat([b.subarray(0, j), b.subarray(i, j), b.subarray(j)]);
    }
    case 6: {
      const other = corpus[rng.int(corpus.length)]!;
      const i = at();
      return Buffer.concat([b.subarray(0, i), other.subarray(rng.int(Math.max(1, other.length)))]);
    }
    case 7:
      return Buffer.concat([b, rng.bytes(1 + rng.int(16))]);
    default: {
      // Rewrite a byte that is likely a length prefix (the one after a tag).
      if (b.length < 2) return b;
      const i = 1 + rng.int(b.length - 1);
      b[i] = rng.int(256);
      return b;
    }
  }
}

function validCorpus(rng: Rng): Buffer[] {
  const wrapped = (size: number) => ({ iv: rng.bytes(16), encryptedKey: rng.bytes(size), hmac: rng.bytes(32) });
  return [
    Buffer.from(encodeProtectorData({ descriptor: 'a1b2c3d4e5f60718', source: 'raw_key', name: 'break-glass', uid: 0, wrappedKey: wrapped(32) })),
    Buffer.from(
      encodeProtectorData({
        descriptor: '0011223344556677',
        source: 'custom_passphrase',
        name: 'pw',
        costs: { time: 12, memory: 65536, parallelism: 1, truncationFixed: false },
        salt: rng.bytes(16),
        uid: 0,
        wrappedKey: wrapped(32),
      }),
    ),
    Buffer.from(
      encodePolicyData({
        keyDescriptor: 'ab'.repeat(16),
        options: { padding: 32, contents: 1, filenames: 4, policyVersion: 2 },
        wrappedPolicyKeys: [
          { protectorDescriptor: 'a1b2c3d4e5f60718', wrappedKey: wrapped(64) },
          { protectorDescriptor: '0011223344556677', wrappedKey: wrapped(64) },
        ],
      }),
    ),
    Buffer.from(encodeKmsProtector({ descriptor: 'a1b2c3d4e5f60718', name: 'kms', ciphertext: rng.bytes(60), keyId: 'kms-test', annotations: new Map([['version.encryption.remote.io', Buffer.from('1')]]) })),
  ];
}

const DECODERS = [
  ['ProtectorData', decodeProtectorData, encodeProtectorData],
  ['PolicyData', decodePolicyData, encodePolicyData],
  ['KmsProtector', decodeKmsProtector, encodeKmsProtector],
] as const;

t.test('decoders: 6000 random and mutated inputs, each either decoded canonically or refused as ERR_BAD_METADATA', async (t) => {
  const rng = prng(SEED);
  const corpus = validCorpus(rng);
  const outcomes = { accepted: 0, refused: 0 };
  const failures: string[] = [];
  for (let i = 0; i < 6000; i++) {
    let input: Buffer;
    if (i % 4 === 0) input = rng.bytes(rng.int(300));
    else {
      input = corpus[rng.int(corpus.length)]!;
      for (let m = 1 + rng.int(4); m > 0; m--) input = mutate(rng, input, corpus);
    }
    for (const [name, decode, encode] of DECODERS) {
      try {
        const value = decodeFile(input, '/fuzz/file', decode as (b: Uint8Array) => unknown);
        outcomes.accepted++;
        // Accepted input must survive a canonical round trip.
        const again = (decode as (b: Uint8Array) => unknown)((encode as (v: unknown) => Uint8Array)(value));
        if (JSON.stringify(again, replacer) !== JSON.stringify(value, replacer)) failures.push(`${name} #${i}: round trip differs`);
      } catch (error) {
        if (error instanceof FscryptError && error.code === 'ERR_BAD_METADATA' && error.path === '/fuzz/file' && /is invalid: /.test(error.message)) {
          outcomes.refused++;
        } else failures.push(`${name} #${i} (${input.toString('hex').slice(0, 80)}): ${String(error)}`);
      }
    }
  }
  t.same(failures.slice(0, 10), [], 'no unexpected failure');
  t.ok(outcomes.accepted > 100, `some mutations stay valid (${outcomes.accepted})`);
  t.ok(outcomes.refused > 10000, `most are refused (${outcomes.refused})`);
});

function replacer(_key: string, value: unknown): unknown {
  if (value instanceof Uint8Array) return Buffer.from(value).toString('hex');
  if (value instanceof Map) return [...value.entries()];
  return value;
}

t.test('KMS replies: 3000 random and mutated replies are decoded or refused with a FormatError', async (t) => {
  const rng = prng(SEED + 1);
  const corpus = [
    Buffer.from('0a02763212026f6b1a086b6d732d74657374', 'hex'), // Status {v2, ok, kms-test}
    Buffer.concat([Buffer.from('0a20', 'hex'), rng.bytes(32)]), // Decrypt {32 bytes}
    Buffer.concat([Buffer.from('0a3c', 'hex'), rng.bytes(60), Buffer.from('12086b6d732d74657374', 'hex')]),
  ];
  const failures: string[] = [];
  for (let i = 0; i < 3000; i++) {
    let input = i % 3 === 0 ? rng.bytes(rng.int(120)) : corpus[rng.int(corpus.length)]!;
    for (let m = i % 3 === 0 ? 0 : 1 + rng.int(3); m > 0; m--) input = mutate(rng, input, corpus);
    for (const decode of [decodeStatusResponse, decodeEncryptResponse, decodeDecryptResponse]) {
      try {
        decode(Buffer.from(input));
      } catch (error) {
        if (!(error instanceof FormatError)) failures.push(`#${i} ${decode.name}: ${String(error)}`);
      }
    }
  }
  t.same(failures.slice(0, 10), []);
});

t.test('through SlotKeys on real files: 1500 mutated protector and policy files, never a crash or a wrong key', async (t) => {
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
  const protectorFile = join(layout.protectorsDir, open.descriptor);
  const policyFile = join(layout.policiesDir, identifier);
  const { readFile } = await import('node:fs/promises');
  const protectorBytes = await readFile(protectorFile);
  const policyBytes = await readFile(policyFile);
  const corpus = [protectorBytes, policyBytes];
  const rng = prng(SEED + 2);
  const codes = new Map<string, number>();
  const failures: string[] = [];
  let successes = 0;
  const expectedCodes = new Set(['ERR_BAD_METADATA', 'ERR_WRONG_KEY', 'ENOENT']);

  for (let i = 0; i < 1500; i++) {
    const target = i % 2 === 0 ? 'protector' : 'policy';
    let input: Buffer = target === 'protector' ? protectorBytes : policyBytes;
    for (let m = 1 + rng.int(3); m > 0; m--) input = mutate(rng, input, corpus);
    await writeFile(target === 'protector' ? protectorFile : policyFile, input, { mode: 0o600 });
    try {
      const opened = await slot.openProtector(spec);
      try {
        const got = await opened.unwrapPolicyKey(identifier);
        if (!got.equals(key)) failures.push(`#${i} ${target}: a WRONG KEY was returned`);
        else successes++;
      } finally {
        opened.close();
      }
    } catch (error) {
      if (error instanceof FscryptError && expectedCodes.has(String(error.code))) codes.set(String(error.code), (codes.get(String(error.code)) ?? 0) + 1);
      else failures.push(`#${i} ${target}: ${String(error)}`);
    }
    // Restore both files for the next round.
    await writeFile(protectorFile, protectorBytes, { mode: 0o600 });
    await writeFile(policyFile, policyBytes, { mode: 0o600 });
  }
  t.same(failures.slice(0, 10), [], 'no crash, no wrong key');
  t.ok((codes.get('ERR_BAD_METADATA') ?? 0) > 300, `refused as bad metadata: ${JSON.stringify([...codes])}`);
  t.ok((codes.get('ERR_WRONG_KEY') ?? 0) > 10, 'refused as a wrong key (changed wrapped bytes)');
  t.ok(successes > 0, `harmless mutations still give the right key (${successes})`);
});
