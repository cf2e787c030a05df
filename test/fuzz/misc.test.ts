// Fuzzing the small parsers: Go durations (minResyncPeriod), Go's
// filepath.Match (namePattern), key source texts (--key-source, the
// fscrypt: block) and CSI endpoints. Properties:
//  - a duration written from parts parses to exactly their sum, as Go
//    computes it in integer nanoseconds (overflow refused); any text gives
//    a number or a TypeError;
//  - on patterns and names over a small alphabet, matching agrees with a
//    reference (a regular expression built from the glob); on any pattern
//    and name, checking and matching never throw, and a pattern that
//    passes the check never fails at match time; splitting on ',' round trips;
//  - a key source parses or is refused as ERR_INVALID_ARG, and the message
//    never repeats what follows the kind (it may be a secret pasted by mistake);
//  - an endpoint gives an absolute path without NUL, or a TypeError.
// Replaying a failure: docs/testing.md, "Fuzzing".
import fc from 'fast-check';
import t from 'tap';
import { socketPath } from '../../lib/agent/csi/server.js';
import { checkNamePattern, matchesNamePattern, parseGoDuration, splitNamePattern } from '../../lib/agent/config/index.js';
import { FscryptError } from '../../lib/kernel/index.js';
import { parseKeySource } from '../../lib/keys/key-source.js';
import { fuzz } from '../fixtures/campaign/fuzz.js';

const FILE = 'fuzz/misc.test.ts';

const UNITS: [string, bigint][] = [['ns', 1n], ['us', 1_000n], ['\u00b5s', 1_000n], ['\u03bcs', 1_000n], ['ms', 1_000_000n], ['s', 1_000_000_000n], ['m', 60_000_000_000n], ['h', 3_600_000_000_000n]];
const MAX_NS = (1n << 63n) - 1n;

t.test('Go durations: parts parse to exactly their sum in nanoseconds; overflow is refused', async (t) => {
  const part = fc.record({
    whole: fc.oneof(fc.bigInt({ min: 0n, max: 1000n }), fc.bigInt({ min: 0n, max: 1n << 64n })),
    // A fraction of at most as many digits as the unit has powers of ten below it: exact in nanoseconds.
    fraction: fc.option(fc.stringMatching(/^[0-9]{1,3}$/), { nil: undefined }),
    unit: fc.constantFrom(...UNITS.filter(([, ns]) => ns >= 1_000n)),
  });
  const arb = fc.record({ sign: fc.constantFrom('', '+', '-'), parts: fc.array(part, { minLength: 1, maxLength: 4 }) });
  await fuzz(t, { parser: 'Go duration (written from parts)', file: FILE, runs: 5000 }, arb, ({ sign, parts }) => {
    const text = sign + parts.map((p) => `${p.whole}${p.fraction === undefined ? '' : `.${p.fraction}`}${p.unit[0]}`).join('');
    let total = 0n;
    let overflow = false;
    for (const p of parts) {
      let ns = p.whole * p.unit[1];
      if (p.fraction !== undefined) ns += (BigInt(p.fraction) * p.unit[1]) / 10n ** BigInt(p.fraction.length);
      if (p.whole > MAX_NS + 1n || ns > MAX_NS + 1n) overflow = true;
      total += ns;
      if (total > MAX_NS + 1n) overflow = true;
    }
    if (sign !== '-' && total > MAX_NS) overflow = true;
    let got: number;
    try {
      got = parseGoDuration(text);
    } catch (error) {
      if (error instanceof TypeError && overflow && /overflows/.test(error.message)) return;
      throw error;
    }
    if (overflow) throw new Error(`${JSON.stringify(text)} overflows in Go, parsed as ${got}`);
    const want = (sign === '-' ? -1 : 1) * (Number(total) / 1e6);
    if (!Object.is(got, want) && !(got === 0 && want === 0)) throw new Error(`${JSON.stringify(text)} parsed as ${got} ms, want ${want}`);
  });
});

t.test('Go durations: any text is a number or a TypeError', async (t) => {
  const text = fc.oneof(fc.string({ unit: 'binary', maxLength: 30 }), fc.string({ unit: fc.constantFrom('0', '1', '9', '.', '-', '+', 'h', 'm', 's', 'n', 'u', '\u00b5', 'x'), maxLength: 24 }), fc.anything());
  await fuzz(t, { parser: 'Go duration (arbitrary text)', file: FILE, runs: 1000 }, text, (input) => {
    try {
      const ms = parseGoDuration(input as string);
      if (typeof ms !== 'number' || Number.isNaN(ms)) throw new Error(`${JSON.stringify(input)} gave ${ms}`);
    } catch (error) {
      if (!(error instanceof TypeError)) throw error;
    }
  });
});

/** The reference: a glob of letters, '*' and '?' as a regular expression (no classes, no escapes). */
function referenceMatch(pattern: string, name: string): boolean {
  const source = [...pattern].map((c) => (c === '*' ? '[^/]*' : c === '?' ? '[^/]' : c.replace(/[.+^${}()|[\]\\]/g, '\\$&'))).join('');
  return new RegExp(`^${source}$`, 'su').test(name);
}

t.test('namePattern: matching agrees with a reference on letters, * and ?', async (t) => {
  const arb = fc.tuple(fc.string({ unit: fc.constantFrom('a', 'b', '*', '?', '\u00e9'), maxLength: 8 }), fc.string({ unit: fc.constantFrom('a', 'b', '/', '\u00e9', '\u{1f600}'), maxLength: 8 }));
  await fuzz(t, { parser: 'namePattern (against a reference)', file: FILE, runs: 10_000 }, arb, ([pattern, name]) => {
    if (checkNamePattern(pattern) !== undefined) throw new Error(`${JSON.stringify(pattern)} refused`);
    const got = matchesNamePattern([pattern], name);
    if (got !== (pattern !== '' && referenceMatch(pattern, name))) throw new Error(`${JSON.stringify(pattern)} on ${JSON.stringify(name)}: ${got}`);
  });
});

t.test('namePattern: any pattern and name, checked and matched without a throw; split round trips', async (t) => {
  const patternChar = fc.constantFrom('a', '*', '?', '[', ']', '^', '-', '\\', ',', '/', '\u{1f600}');
  const arb = fc.tuple(fc.oneof(fc.string({ unit: patternChar, maxLength: 10 }), fc.string({ unit: 'binary', maxLength: 10 })), fc.string({ unit: fc.constantFrom('a', '-', ']', '[', '\\', '/', '\u{1f600}'), maxLength: 8 }));
  await fuzz(t, { parser: 'namePattern (arbitrary patterns)', file: FILE, runs: 10_000 }, arb, ([text, name]) => {
    const pieces = splitNamePattern(text);
    if (text !== '' && pieces.join(',') !== text) throw new Error('split does not round trip');
    for (const piece of pieces) {
      const why = checkNamePattern(piece);
      if (why !== undefined && typeof why !== 'string') throw new Error('check gave a non-string');
      // Never throws, valid or not (a malformed pattern matches nothing).
      const matched = matchesNamePattern([piece], name);
      if (why !== undefined && matched) throw new Error(`the malformed pattern ${JSON.stringify(piece)} matched ${JSON.stringify(name)}`);
    }
  });
});

t.test('key sources: a spec, or ERR_INVALID_ARG that never repeats the text after the kind', async (t) => {
  const secretish = fc.string({ unit: 'binary', minLength: 6, maxLength: 40 });
  const arb = fc.oneof(
    fc.tuple(fc.constantFrom('file', 'passphrase', 'kms', 'File', 'KMS', 'raw', ''), fc.constantFrom(':', ''), secretish).map(([k, c, s]) => `${k}${c}${s}`),
    fc.string({ unit: 'binary', maxLength: 40 }),
  );
  await fuzz(t, { parser: 'key source text', file: FILE, runs: 5000 }, arb, (text) => {
    try {
      const spec = parseKeySource(text);
      if (spec.kind === 'kms' ? !spec.socket.startsWith('/') : spec.path === '') throw new Error(`${JSON.stringify(text)} gave ${JSON.stringify(spec)}`);
    } catch (error) {
      if (!(error instanceof FscryptError) || error.code !== 'ERR_INVALID_ARG') throw error;
      const colon = text.indexOf(':');
      const after = colon < 0 ? text : text.slice(colon + 1);
      if (after.length >= 6 && error.message.includes(after)) throw new Error(`the message repeats the text: ${error.message}`);
    }
  });
});

t.test('CSI endpoints: an absolute path without NUL, or a TypeError', async (t) => {
  const arb = fc.tuple(fc.constantFrom('', 'unix://', 'unix:', 'unix:///', 'tcp://', 'UNIX://'), fc.string({ unit: 'binary', maxLength: 30 })).map(([a, b]) => a + b);
  await fuzz(t, { parser: 'CSI endpoint', file: FILE, runs: 5000 }, arb, (endpoint) => {
    try {
      const path = socketPath(endpoint);
      if (!path.startsWith('/') || path.includes('\0')) throw new Error(`${JSON.stringify(endpoint)} gave ${JSON.stringify(path)}`);
    } catch (error) {
      if (!(error instanceof TypeError)) throw error;
    }
  });
});
