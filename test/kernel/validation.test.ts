// Bad input never reaches the kernel: each call below is rejected with a
// FscryptError (ERR_INVALID_ARG) that says what a good value looks like, and
// a recording stand-in for the native binding proves no ioctl was issued.
import t, { type Test } from 'tap';
import type * as KernelApi from '../../lib/kernel/api.js';
import { defaultPolicy, keyIdentifier, type Policy } from '../../lib/kernel/index.js';
import { randomKey } from '../fixtures/helpers.js';

const calls: string[] = [];
const callArgs: unknown[][] = [];
const recordingBinding = new Proxy(
  {},
  {
    get: (_target, name: string) => (...args: unknown[]) => {
      calls.push(name);
      callArgs.push(args);
      throw new Error(`native ${name} must not be called (args: ${args.length})`);
    },
  },
);

// (tap mocks the imports of the module it loads, so load api.ts itself: the
// package index only re-exports it.)
const { addKey, addKeyById, getKeyStatus, getNonce, getPolicy, probe, removeKey, setPolicy } = await t.mockImport<typeof KernelApi>(
  '../../lib/kernel/api.js',
  { '../../lib/kernel/binding.js': { native: () => recordingBinding } },
);

const ID = '0123456789abcdef0123456789abcdef';
const good = defaultPolicy(ID);

async function invalid(t: Test, promise: () => Promise<unknown>, message: RegExp): Promise<void> {
  const before = calls.length;
  let error: unknown;
  try {
    await promise();
  } catch (e) {
    error = e;
  }
  t.match(error, { name: 'FscryptError', code: 'ERR_INVALID_ARG', message });
  t.equal(calls.length, before, 'no native call');
}

t.test('key lengths and types', async (t) => {
  for (const size of [0, 1, 15, 65, 128]) {
    await invalid(t, () => addKey('/mnt', randomKey(size)), new RegExp(`16 to 64 bytes, got ${size}`));
  }
  await invalid(t, () => addKey('/mnt', 'secret' as unknown as Uint8Array), /Buffer or Uint8Array, got a string of 6 characters$/);
  await invalid(t, () => addKey('/mnt', null as unknown as Uint8Array), /got null/);
  t.throws(() => keyIdentifier(randomKey(15)), { code: 'ERR_INVALID_ARG' });
  await invalid(t, () => addKey('/mnt', randomKey(), { descriptor: 'xyz' }), /descriptor must be 16 hex digits/);
  for (const keyId of [0, -1, 1.5, 2 ** 31, Number.NaN]) {
    await invalid(t, () => addKeyById('/mnt', keyId), /positive key serial number/);
  }
});

t.test('paths', async (t) => {
  await invalid(t, () => getPolicy(''), /path must be a non-empty string, got an empty string/);
  await invalid(t, () => getPolicy(undefined as unknown as string), /got undefined/);
  await invalid(t, () => getNonce('/a\0b'), /must not contain a NUL byte/);
  await invalid(t, () => setPolicy('x'.repeat(5000), good), /longer than PATH_MAX/);
  await invalid(t, () => addKey('', randomKey()), /mountpoint must be a non-empty string/);
  await invalid(t, () => probe(''), /non-empty string/);
});

t.test('identifiers', async (t) => {
  for (const bad of ['', 'xyz', ID.slice(1), `${ID}0`, 'g'.repeat(32), 42]) {
    await invalid(t, () => removeKey('/mnt', bad as string), /v2 key identifier \(32 hex digits\) or a v1 key descriptor \(16 hex digits\)/);
    await invalid(t, () => getKeyStatus('/mnt', bad as string), /32 hex digits/);
  }
  await invalid(t, () => setPolicy('/d', { ...good, identifier: 'abc' }), /policy.identifier must be 32 hex digits, got a string of 3 characters/);
  await invalid(t, () => setPolicy('/d', { version: 1, contents: 'AES_256_XTS', filenames: 'AES_256_CTS', padding: 32, descriptor: ID }), /policy.descriptor must be 16 hex digits/);
});

t.test('modes, pairs, padding, flags and versions', async (t) => {
  await invalid(t, () => setPolicy('/d', null as unknown as Policy), /policy must be an object/);
  await invalid(t, () => setPolicy('/d', { ...good, version: 3 as 2 }), /version must be 1 or 2/);
  await invalid(t, () => setPolicy('/d', { ...good, contents: 'AES_512_XTS' as 'AES_256_XTS' }), /policy.contents must be one of AES_256_XTS/);
  await invalid(t, () => setPolicy('/d', { ...good, filenames: 'ROT13' as 'AES_256_CTS' }), /policy.filenames must be one of/);
  await invalid(t, () => setPolicy('/d', { ...good, filenames: 'ADIANTUM' }), /cannot combine contents AES_256_XTS with filenames ADIANTUM; valid pairs: AES_256_XTS\/AES_256_CTS/);
  await invalid(t, () => setPolicy('/d', { ...good, contents: 'SM4_XTS', filenames: 'SM4_CTS', version: 1, descriptor: '00'.repeat(8) } as Policy), /v1 policies cannot combine contents SM4_XTS/);
  await invalid(t, () => setPolicy('/d', { ...good, padding: 3 as 4 }), /padding must be 4, 8, 16 or 32/);
  await invalid(t, () => setPolicy('/d', { ...good, flags: ['FAST' as 'DIRECT_KEY'] }), /unknown policy flag "FAST"/);
  await invalid(t, () => setPolicy('/d', { ...good, flags: 'DIRECT_KEY' as unknown as ['DIRECT_KEY'] }), /must be an array/);
  await invalid(t, () => setPolicy('/d', { ...good, flags: ['DIRECT_KEY'] }), /DIRECT_KEY is only valid with ADIANTUM/);
  await invalid(t, () => setPolicy('/d', { ...good, flags: ['IV_INO_LBLK_64', 'IV_INO_LBLK_32'] }), /IV_INO_LBLK_64 and IV_INO_LBLK_32 are mutually exclusive/);
  await invalid(
    t,
    () => setPolicy('/d', { version: 1, contents: 'AES_256_XTS', filenames: 'AES_256_CTS', padding: 32, descriptor: '00'.repeat(8), flags: ['IV_INO_LBLK_32'] }),
    /IV_INO_LBLK_32 needs a v2 policy/,
  );
  await invalid(t, () => setPolicy('/d', { ...good, log2DataUnitSize: 3 }), /log2DataUnitSize must be 0 \(default\) or 9 to 16/);
});

t.test('open options: an object whose only key is a boolean noFollow', async (t) => {
  await invalid(t, () => getPolicy('/d', null as unknown as object), /options must be an object such as \{ noFollow: true \}, got null/);
  await invalid(t, () => getPolicy('/d', 'noFollow' as unknown as object), /options must be an object.*got a string of 8 characters/);
  await invalid(t, () => getNonce('/d', [] as unknown as object), /options must be an object/);
  await invalid(t, () => getPolicy('/d', { noFollow: 'yes' as unknown as boolean }), /options.noFollow must be a boolean, got a string of 3 characters/);
  await invalid(t, () => setPolicy('/d', good, { noFollow: 1 as unknown as boolean }), /options.noFollow must be a boolean, got 1/);
  await invalid(t, () => getNonce('/d', { nofollow: true } as object), /unknown option "nofollow"; the only option is noFollow/);
  await invalid(t, () => setPolicy('/d', good, { noFollow: true, follow: false } as object), /unknown option "follow"/);
});

t.test('valid input does reach the binding', async (t) => {
  const before = calls.length;
  await t.rejects(getPolicy('/d'), /must not be called/);
  t.same(calls.slice(before), ['getPolicy'], 'the stand-in is what the API calls');
  t.same(callArgs.at(-1), ['/d', false], 'with noFollow false by default');
  await t.rejects(getPolicy('/d', { noFollow: true }), /must not be called/);
  t.same(callArgs.at(-1), ['/d', true]);
  await t.rejects(getNonce('/f', { noFollow: false }), /must not be called/);
  t.same(callArgs.at(-1), ['/f', false]);
  await t.rejects(setPolicy('/d', good, { noFollow: true }), /must not be called/);
  t.same(callArgs.at(-1), ['/d', 2, 1, 4, 3, 0, Buffer.from(ID, 'hex'), true], 'setPolicy: the raw policy, then noFollow');
  t.same(calls.slice(before), ['getPolicy', 'getPolicy', 'getNonce', 'setPolicy']);
});
