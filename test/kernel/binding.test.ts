// The raw native binding, called directly (lib/kernel/binding.ts native()),
// without the TypeScript layer's validation in front of it: every promise it
// returns settles, whatever JS code it runs while settling throws.
import t from 'tap';
import { native } from '../../lib/kernel/binding.js';
import { FscryptError } from '../../lib/kernel/errors.js';

const binding = native();
t.teardown(() => binding.setErrorClass(FscryptError));

type Outcome = { status: 'fulfilled'; value: unknown } | { status: 'rejected'; reason: unknown };

/** How `promise` settles; fails (rather than hangs) if it does not settle within `ms`. */
async function settled(promise: Promise<unknown>, ms = 5000): Promise<Outcome> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the promise did not settle within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([
      promise.then(
        (value): Outcome => ({ status: 'fulfilled', value }),
        (reason: unknown): Outcome => ({ status: 'rejected', reason }),
      ),
      timeout,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

// /proc opens, but has no fscrypt: GET_POLICY_EX (and its fallback) fail
// with ENOTTY, ADD_KEY(NULL) in probe() reports ENOTTY as data.
const NO_FSCRYPT = '/proc';
const MISSING = '/nonexistent-fscrypt-local-path';

t.test('an error class whose constructor throws: the promise rejects with what it threw', async (t) => {
  const boom = new Error('the error class constructor threw');
  class Throwing {
    constructor() {
      throw boom;
    }
  }
  binding.setErrorClass(Throwing as unknown as typeof FscryptError);
  try {
    t.same(await settled(binding.getPolicy(NO_FSCRYPT, false)), { status: 'rejected', reason: boom }, 'failed ioctl');
    t.same(await settled(binding.getPolicy(MISSING, false)), { status: 'rejected', reason: boom }, 'failed open');
  } finally {
    binding.setErrorClass(FscryptError);
  }
});

t.test('a constructor that throws a primitive, and a function that is no constructor', async (t) => {
  binding.setErrorClass(function throwsNumber() {
    throw 42;
  } as unknown as typeof FscryptError);
  try {
    t.same(await settled(binding.getNonce(NO_FSCRYPT, false)), { status: 'rejected', reason: 42 });
    binding.setErrorClass((() => undefined) as unknown as typeof FscryptError);
    const outcome = await settled(binding.getNonce(NO_FSCRYPT, false));
    t.equal(outcome.status, 'rejected');
    t.match((outcome as { reason: unknown }).reason, { name: 'TypeError', message: /not a constructor/ });
  } finally {
    binding.setErrorClass(FscryptError);
  }
});

t.test('a property set that throws while the result is built: the promise rejects', async (t) => {
  const boom = new Error('a setter threw');
  // Object.prototype setters are reached by the addon's plain property sets.
  for (const [name, call] of [
    ['addKeyErrno', () => binding.probe(NO_FSCRYPT)], // building a resolved value
    ['syscall', () => binding.getPolicy(NO_FSCRYPT, false)], // building the error details
  ] as const) {
    Object.defineProperty(Object.prototype, name, {
      configurable: true,
      set() {
        throw boom;
      },
    });
    let outcome: Outcome;
    try {
      const promise = call();
      outcome = await settled(promise);
    } finally {
      delete (Object.prototype as Record<string, unknown>)[name];
    }
    t.same(outcome, { status: 'rejected', reason: boom }, name);
  }
});

t.test('with the real class restored, failures are FscryptErrors again', async (t) => {
  binding.setErrorClass(FscryptError);
  const outcome = await settled(binding.getPolicy(NO_FSCRYPT, false));
  t.equal(outcome.status, 'rejected');
  t.ok((outcome as { reason: unknown }).reason instanceof FscryptError);
  t.match((outcome as { reason: unknown }).reason, { code: 'ENOTTY', path: NO_FSCRYPT });
  t.match(await settled(binding.probe(NO_FSCRYPT)), { status: 'fulfilled', value: { addKeyErrno: -25 } });
});

/** The error `call` throws synchronously; a returned promise (the call got through) is drained and reported as undefined. */
function thrownBy(call: () => unknown): unknown {
  try {
    const result = call();
    if (result instanceof Promise) result.catch(() => undefined);
    return undefined;
  } catch (error) {
    return error;
  }
}

const ID = Buffer.alloc(16, 0xab);
const DESCRIPTOR = Buffer.alloc(8, 0xcd);

t.test('numbers the kernel keeps in a u8 are range-checked, not truncated (257 is not mode 1)', async (t) => {
  const setPolicy = (version: number, contents: number, filenames: number, flags: number, log2: number) => () =>
    binding.setPolicy(MISSING, version, contents, filenames, flags, log2, version === 0 ? DESCRIPTOR : ID, false);
  const cases: [string, () => unknown, RegExp][] = [
    ['contents 257', setPolicy(2, 257, 4, 3, 0), /^contents mode must be an integer from 0 to 255, got 257$/],
    ['filenames 260', setPolicy(2, 1, 260, 3, 0), /^filenames mode must be an integer from 0 to 255, got 260$/],
    ['flags 259', setPolicy(2, 1, 4, 259, 0), /^policy flags must be an integer from 0 to 255, got 259$/],
    ['log2 data unit size 268', setPolicy(2, 1, 4, 3, 268), /^log2 data unit size must be an integer from 0 to 255, got 268$/],
    ['version 258', setPolicy(258, 1, 4, 3, 0), /^policy version must be an integer from 0 to 255, got 258$/],
    ['version 2**32 + 2', setPolicy(2 ** 32 + 2, 1, 4, 3, 0), /^policy version must be an integer from 0 to 255, got 4294967298$/],
    ['contents -1', setPolicy(2, -1, 4, 3, 0), /contents mode .* got -1$/],
    ['contents 1.5', setPolicy(2, 1.5, 4, 3, 0), /contents mode .* got 1\.5$/],
    ['flags NaN', setPolicy(2, 1, 4, Number.NaN, 0), /policy flags .* got NaN$/],
    ['flags Infinity', setPolicy(2, 1, 4, Number.POSITIVE_INFINITY, 0), /policy flags .* got Infinity$/],
  ];
  for (const [name, call, message] of cases) {
    t.match(thrownBy(call), { name: 'RangeError', message }, name);
  }
  t.match(thrownBy(setPolicy(1, 1, 4, 3, 0)), { name: 'RangeError', message: 'policy version must be 0 (v1) or 2 (v2), got 1' });
  t.match(thrownBy(() => binding.setPolicy(MISSING, 2, '1' as unknown as number, 4, 3, 0, ID, false)), { name: 'TypeError', message: 'contents mode must be a number' });
  // The largest values pass the checks and reach open() (ENOENT here).
  t.match(await settled(binding.setPolicy(MISSING, 2, 255, 255, 255, 255, ID, false)), { status: 'rejected', reason: { code: 'ENOENT', syscall: 'open' } });
});

t.test('key specifier types, key_id, allUsers, noFollow and flock arguments are checked too', async (t) => {
  const cases: [string, () => unknown, string, RegExp][] = [
    ['spec type 2**32 + 2', () => binding.getKeyStatus(MISSING, 2 ** 32 + 2, ID), 'RangeError', /^key specifier type must be an integer from 0 to 4294967295, got 4294967298$/],
    ['spec type -1', () => binding.removeKey(MISSING, -1, ID, false), 'RangeError', /^key specifier type .* got -1$/],
    ['spec type 3', () => binding.getKeyStatus(MISSING, 3, ID), 'RangeError', /^key specifier type must be 1 \(descriptor\) or 2 \(identifier\), got 3$/],
    ['key_id 2**32 + 5', () => binding.addKey(MISSING, 2, undefined, null, 2 ** 32 + 5), 'RangeError', /^key_id must be an integer from 1 to 2147483647, got 4294967301$/],
    ['key_id -4 (the user keyring)', () => binding.addKey(MISSING, 2, undefined, null, -4), 'RangeError', /^key_id .* got -4$/],
    ['key_id 2**32 - 4', () => binding.addKey(MISSING, 2, undefined, null, 2 ** 32 - 4), 'RangeError', /^key_id .* got 4294967292$/],
    ['key_id 0', () => binding.addKey(MISSING, 2, undefined, null, 0), 'RangeError', /^key_id .* got 0$/],
    ['a 65-byte key', () => binding.addKey(MISSING, 2, undefined, Buffer.alloc(65), 0), 'RangeError', /^key must be 16 to 64 bytes, got 65$/],
    ['a 15-byte identifier', () => binding.getKeyStatus(MISSING, 2, Buffer.alloc(15)), 'RangeError', /^key identifier must be 16 bytes, got 15$/],
    ['allUsers 1', () => binding.removeKey(MISSING, 2, ID, 1 as unknown as boolean), 'TypeError', /^allUsers must be a boolean$/],
    ['flock fd 2**32', () => binding.flock(2 ** 32, 6), 'RangeError', /^fd must be an integer from 0 to 2147483647, got 4294967296$/],
    ['flock operation -1', () => binding.flock(0, -1), 'RangeError', /^flock operation .* got -1$/],
    ['noFollow undefined', () => binding.getPolicy(MISSING, undefined as unknown as boolean), 'TypeError', /^noFollow must be a boolean$/],
    ['noFollow "true"', () => binding.setPolicy(MISSING, 2, 1, 4, 3, 0, ID, 'true' as unknown as boolean), 'TypeError', /^noFollow must be a boolean$/],
    ['a path with a NUL byte', () => binding.getNonce('/proc\0/etc/passwd', false), 'TypeError', /^path must not contain a NUL byte$/],
  ];
  for (const [name, call, type, message] of cases) {
    t.match(thrownBy(call), { name: type, message }, name);
  }
  // The extreme valid values get through to open() (ENOENT).
  t.match(await settled(binding.addKey(MISSING, 2, undefined, null, 2 ** 31 - 1)), { status: 'rejected', reason: { code: 'ENOENT' } });
  t.match(await settled(binding.getKeyStatus(MISSING, 1, DESCRIPTOR)), { status: 'rejected', reason: { code: 'ENOENT' } });
});
