// The raw native binding, called directly (lib/kernel/binding.ts native()),
// without the TypeScript layer's validation in front of it: every promise it
// returns settles, whatever JS code it runs while settling throws.
import t from 'tap';
import { native } from '../lib/kernel/binding.js';
import { FscryptError } from '../lib/kernel/errors.js';

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
    t.same(await settled(binding.getPolicy(NO_FSCRYPT)), { status: 'rejected', reason: boom }, 'failed ioctl');
    t.same(await settled(binding.getPolicy(MISSING)), { status: 'rejected', reason: boom }, 'failed open');
  } finally {
    binding.setErrorClass(FscryptError);
  }
});

t.test('a constructor that throws a primitive, and a function that is no constructor', async (t) => {
  binding.setErrorClass(function throwsNumber() {
    throw 42;
  } as unknown as typeof FscryptError);
  try {
    t.same(await settled(binding.getNonce(NO_FSCRYPT)), { status: 'rejected', reason: 42 });
    binding.setErrorClass((() => undefined) as unknown as typeof FscryptError);
    const outcome = await settled(binding.getNonce(NO_FSCRYPT));
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
    ['syscall', () => binding.getPolicy(NO_FSCRYPT)], // building the error details
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
  const outcome = await settled(binding.getPolicy(NO_FSCRYPT));
  t.equal(outcome.status, 'rejected');
  t.ok((outcome as { reason: unknown }).reason instanceof FscryptError);
  t.match((outcome as { reason: unknown }).reason, { code: 'ENOTTY', path: NO_FSCRYPT });
  t.match(await settled(binding.probe(NO_FSCRYPT)), { status: 'fulfilled', value: { addKeyErrno: -25 } });
});
