// namePattern: upstream splits it on ',' and keeps an entry whose name any
// piece matches with Go's filepath.Match (on Linux). This is that function,
// rule for rule: `*` any run of characters but '/', `?` one character but
// '/', `[...]` a class of characters and ranges, `[^...]` its complement,
// `\` escapes the next character. An empty piece matches nothing (upstream
// skips it). The config is checked with checkNamePattern, so a pattern that
// Go would reject at discovery time is refused when the config is loaded.

/** Go's filepath.ErrBadPattern, as a value the matcher passes up. */
class BadPattern extends Error {}

interface Chunk {
  star: boolean;
  chunk: string[];
  rest: string[];
}

// Splits off the leading stars and the text up to the next star outside a class.
function scanChunk(pattern: string[]): Chunk {
  let start = 0;
  let star = false;
  while (pattern[start] === '*') {
    start++;
    star = true;
  }
  let inRange = false;
  let i = start;
  scan: for (; i < pattern.length; i++) {
    switch (pattern[i]) {
      case '\\':
        if (i + 1 < pattern.length) i++;
        break;
      case '[':
        inRange = true;
        break;
      case ']':
        inRange = false;
        break;
      case '*':
        if (!inRange) break scan;
        break;
    }
  }
  return { star, chunk: pattern.slice(start, i), rest: pattern.slice(i) };
}

// One class member, escapes resolved; Go's getEsc.
function classChar(chunk: string[], at: number): [char: string, next: number] {
  let i = at;
  if (i >= chunk.length || chunk[i] === '-' || chunk[i] === ']') throw new BadPattern();
  if (chunk[i] === '\\') {
    i++;
    if (i >= chunk.length) throw new BadPattern();
  }
  const char = chunk[i]!;
  i++;
  if (i >= chunk.length) throw new BadPattern();
  return [char, i];
}

// Matches `chunk` (no stars outside classes) at the start of `name`: the rest
// of name, or undefined. Like Go it parses the whole chunk even after a
// mismatch, so a malformed chunk is an error whatever the name.
function matchChunk(chunk: string[], name: string[], from: number): number | undefined {
  let c = 0;
  let n = from;
  let failed = false;
  while (c < chunk.length) {
    if (!failed && n >= name.length) failed = true;
    switch (chunk[c]) {
      case '[': {
        let char = '';
        if (!failed) char = name[n++]!;
        c++;
        let negated = false;
        if (chunk[c] === '^') {
          negated = true;
          c++;
        }
        let match = false;
        let ranges = 0;
        for (;;) {
          if (c < chunk.length && chunk[c] === ']' && ranges > 0) {
            c++;
            break;
          }
          let lo: string;
          [lo, c] = classChar(chunk, c);
          let hi = lo;
          if (chunk[c] === '-') [hi, c] = classChar(chunk, c + 1);
          const point = char.codePointAt(0) ?? 0;
          if (lo.codePointAt(0)! <= point && point <= hi.codePointAt(0)!) match = true;
          ranges++;
        }
        if (match === negated) failed = true;
        break;
      }
      case '?':
        if (!failed) {
          if (name[n] === '/') failed = true;
          n++;
        }
        c++;
        break;
      default: {
        // A '\\' makes the next character a literal, whatever it is.
        if (chunk[c] === '\\') {
          c++;
          if (c >= chunk.length) throw new BadPattern();
        }
        if (!failed) {
          if (chunk[c] !== name[n]) failed = true;
          n++;
        }
        c++;
      }
    }
  }
  return failed ? undefined : n;
}

function goMatch(patternText: string, nameText: string): boolean {
  // Code points, so `?` and classes take one character as Go takes one rune.
  let pattern = Array.from(patternText);
  const name = Array.from(nameText);
  let n = 0;
  next: while (pattern.length > 0) {
    const { star, chunk, rest } = scanChunk(pattern);
    pattern = rest;
    if (star && chunk.length === 0) return !name.slice(n).includes('/');
    const after = matchChunk(chunk, name, n);
    if (after !== undefined && (after === name.length || pattern.length > 0)) {
      n = after;
      continue;
    }
    if (star) {
      for (let i = n; i < name.length && name[i] !== '/'; i++) {
        const t = matchChunk(chunk, name, i + 1);
        if (t !== undefined) {
          if (pattern.length === 0 && t < name.length) continue;
          n = t;
          continue next;
        }
      }
    }
    // No match: Go still checks that the rest of the pattern is well formed.
    while (pattern.length > 0) {
      const more = scanChunk(pattern);
      pattern = more.rest;
      matchChunk(more.chunk, [], 0);
    }
    return false;
  }
  return n === name.length;
}

/** Why `pattern` is not a valid Go filepath.Match pattern, or undefined. */
export function checkNamePattern(pattern: string): string | undefined {
  try {
    goMatch(pattern, '');
    return undefined;
  } catch (error) {
    if (error instanceof BadPattern) return 'it is not a valid glob (an unclosed [ class, an empty range end, or a trailing \\)';
    throw error;
  }
}

/** Upstream's split: on ',', nothing trimmed; the default '*' for an empty or absent value. */
export function splitNamePattern(text: string | undefined): string[] {
  if (text === undefined || text === '') return ['*'];
  return text.split(',');
}

/**
 * True if `name` (one directory entry) matches one of `patterns`, as
 * upstream's discovery decides it. A malformed pattern matches nothing
 * (loadConfig refuses them, so a config never holds one).
 */
export function matchesNamePattern(patterns: readonly string[], name: string): boolean {
  for (const pattern of patterns) {
    if (pattern === '') continue;
    try {
      if (goMatch(pattern, name)) return true;
    } catch (error) {
      if (!(error instanceof BadPattern)) throw error;
    }
  }
  return false;
}
