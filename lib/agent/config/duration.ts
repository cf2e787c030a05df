// Go's time.ParseDuration, which upstream's minResyncPeriod goes through
// (metav1.Duration): `5m0s`, `1h30m`, `1.5h`, `300ms`, `-2s`, `0`. Computed
// in integer nanoseconds as Go does, so the same texts overflow, and the
// same texts are refused.

const UNIT_NS: ReadonlyMap<string, bigint> = new Map([
  ['ns', 1n],
  ['us', 1_000n],
  ['\u00b5s', 1_000n], // MICRO SIGN
  ['\u03bcs', 1_000n], // GREEK SMALL LETTER MU
  ['ms', 1_000_000n],
  ['s', 1_000_000_000n],
  ['m', 60_000_000_000n],
  ['h', 3_600_000_000_000n],
]);

const MAX_NS = (1n << 63n) - 1n;
const isDigit = (c: string | undefined): boolean => c !== undefined && c >= '0' && c <= '9';

function invalid(text: string, why: string): TypeError {
  return new TypeError(`invalid duration ${JSON.stringify(text)}: ${why} (a Go duration: a number and a unit, ns us ms s m h, repeated, e.g. 5m0s, 1h30m, 300ms)`);
}

/** Milliseconds (fractional below 1 ms) of a Go duration; TypeError for anything Go refuses. */
export function parseGoDuration(text: string): number {
  if (typeof text !== 'string') throw new TypeError(`a duration must be a string, not ${typeof text}`);
  let s = text;
  let negative = false;
  if (s[0] === '-' || s[0] === '+') {
    negative = s[0] === '-';
    s = s.slice(1);
  }
  if (s === '0') return 0;
  if (s === '') throw invalid(text, 'it is empty');
  let total = 0n;
  while (s !== '') {
    if (!(s[0] === '.' || isDigit(s[0]))) throw invalid(text, 'a number must come first');
    let i = 0;
    while (isDigit(s[i])) i++;
    const whole = s.slice(0, i);
    let fraction = '';
    if (s[i] === '.') {
      const start = ++i;
      while (isDigit(s[i])) i++;
      fraction = s.slice(start, i);
    }
    if (whole === '' && fraction === '') throw invalid(text, 'a number needs a digit');
    const unitStart = i;
    while (i < s.length && s[i] !== '.' && !isDigit(s[i])) i++;
    const unitText = s.slice(unitStart, i);
    if (unitText === '') throw invalid(text, 'a number has no unit');
    const unit = UNIT_NS.get(unitText);
    if (unit === undefined) throw invalid(text, `unknown unit ${JSON.stringify(unitText)}`);
    const value = BigInt(whole === '' ? '0' : whole);
    if (value > MAX_NS + 1n) throw invalid(text, 'it overflows');
    let ns = value * unit;
    if (fraction !== '') {
      // Go keeps at most the digits that fit in 63 bits and truncates the product.
      let digits = fraction;
      while (digits.length > 0 && BigInt(digits) > (1n << 63n)) digits = digits.slice(0, -1);
      ns += BigInt(Math.trunc(Number(digits) * (Number(unit) / 10 ** digits.length)));
    }
    if (ns > MAX_NS + 1n) throw invalid(text, 'it overflows');
    total += ns;
    if (total > MAX_NS + 1n) throw invalid(text, 'it overflows');
    s = s.slice(i);
  }
  if (!negative && total > MAX_NS) throw invalid(text, 'it overflows');
  const ms = Number(total) / 1e6;
  return negative ? -ms : ms;
}
