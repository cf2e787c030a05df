// Fuzzing the parsers of the /proc entries the blocker scan reads
// (lib/volume/mounts/blockers.ts: /proc/<pid>/maps, fdinfo, the fd/cwd/root links'
// " (deleted)" mark) and the text it makes of what it found. Properties:
//  - maps as the kernel writes it (any addresses, perms, devices, inodes,
//    padding; anonymous and [pseudo] mappings; paths with spaces, tabs,
//    backslashes, " (deleted)", newlines escaped as \012) gives exactly the
//    file paths, each once, in order: a name with a newline survives;
//  - fdinfo gives its mnt_id wherever the line is, NaN without one;
//  - any text through either never throws;
//  - " (deleted)" is split off exactly when it ends the link;
//  - describeBlockers makes one line per blocker, whatever the names hold.
// Mounts are mountinfo, fuzzed in test/fuzz/mountinfo.test.ts.
// Replaying a failure: docs/testing.md, "Fuzzing".
import fc from 'fast-check';
import t from 'tap';
import { describeBlockers, mappedPaths, mountIdOfFdinfo, splitDeleted, type Blocker, type BlockerKind } from '../../lib/volume/mounts/blockers.js';
import { fuzz, mutatedText } from '../fixtures/campaign/fuzz.js';

const FILE = 'fuzz/proc.test.ts';

// Any character but NUL and '/', and often the awkward ones.
const nameChar = fc.oneof(
  { arbitrary: fc.constantFrom(' ', '\t', '\n', '\\', '(', ')', '[', ']', '\u00e9', '\u{1f600}'), weight: 2 },
  { arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }).filter((c) => c !== '/' && c !== '\0'), weight: 3 },
);
// A literal "\012" in a name reads back as a newline: the kernel escapes
// nothing else in maps, so the text is ambiguous there (see the report).
const component = fc.string({ unit: nameChar, minLength: 1, maxLength: 10 }).filter((c) => !c.includes('\\012'));
const filePath = fc.tuple(fc.array(component, { minLength: 1, maxLength: 4 }), fc.boolean()).map(([parts, deleted]) => `/${parts.join('/')}${deleted ? ' (deleted)' : ''}`);
const hexWord = (max: bigint) => fc.bigInt({ min: 0n, max }).map((n) => n.toString(16).padStart(8, '0'));

const mapping = fc.record({
  start: hexWord((1n << 48n) - 1n),
  end: hexWord((1n << 48n) - 1n),
  perms: fc.stringMatching(/^[r-][w-][x-][ps]$/),
  offset: hexWord((1n << 40n) - 1n),
  dev: fc.tuple(fc.nat({ max: 255 }), fc.nat({ max: 255 })).map(([a, b]) => `${a.toString(16).padStart(2, '0')}:${b.toString(16).padStart(2, '0')}`),
  inode: fc.nat(),
  pad: fc.integer({ min: 1, max: 26 }),
  path: fc.oneof({ arbitrary: filePath, weight: 4 }, fc.constantFrom('', '[heap]', '[stack]', '[vdso]', '[anon:x y]')),
});
type Mapping = typeof mapping extends fc.Arbitrary<infer T> ? T : never;

/** One maps line, as show_map_vma() writes it: the path padded to a column, a newline in it as \012. */
function mapsLine(m: Mapping): string {
  const head = `${m.start}-${m.end} ${m.perms} ${m.offset} ${m.dev} ${m.inode}`;
  return m.path === '' ? `${head} ` : `${head}${' '.repeat(m.pad)}${m.path.replace(/\n/g, '\\012')}`;
}

t.test('maps as the kernel writes it gives exactly the mapped files, once each, in order', async (t) => {
  await fuzz(t, { parser: '/proc/<pid>/maps (kernel-written)', file: FILE, runs: 5000 }, fc.array(mapping, { maxLength: 12 }), (mappings) => {
    const got = mappedPaths(`${mappings.map(mapsLine).join('\n')}\n`);
    const want = [...new Set(mappings.map((m) => m.path).filter((p) => p.startsWith('/')))];
    if (JSON.stringify(got) !== JSON.stringify(want)) throw new Error(`got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
  });
});

t.test('fdinfo gives its mnt_id wherever the line is, NaN without one', async (t) => {
  const field = fc.oneof(
    fc.nat().map((n) => `pos:\t${n}`),
    fc.nat({ max: 0o7777777 }).map((n) => `flags:\t0${n.toString(8)}`),
    fc.nat().map((n) => `ino:\t${n}`),
    fc.string({ unit: fc.constantFrom('a', ':', ' ', '\t', '1', 'm', 'n', 't', '_', 'i', 'd'), maxLength: 20 }).filter((l) => !/^mnt_id:\s*\d+$/.test(l)),
  );
  const arb = fc.record({ before: fc.array(field, { maxLength: 4 }), id: fc.option(fc.nat(), { nil: undefined }), after: fc.array(field, { maxLength: 4 }) });
  await fuzz(t, { parser: '/proc/<pid>/fdinfo (kernel-written)', file: FILE, runs: 5000 }, arb, ({ before, id, after }) => {
    const text = [...before, ...(id === undefined ? [] : [`mnt_id:\t${id}`]), ...after].join('\n') + '\n';
    const got = mountIdOfFdinfo(text);
    if (id === undefined ? !Number.isNaN(got) : got !== id) throw new Error(`got ${got} for ${JSON.stringify(text)}`);
  });
});

t.test('any text through the maps and fdinfo parsers: no throw, only paths and numbers', async (t) => {
  const text = fc.oneof(
    fc.string({ unit: 'binary', maxLength: 300 }),
    mutatedText(fc.array(mapping, { minLength: 1, maxLength: 6 }).map((ms) => ms.map(mapsLine).join('\n')), 6),
    mutatedText(fc.nat().map((n) => `pos:\t0\nflags:\t02\nmnt_id:\t${n}\nino:\t12\n`), 4),
  );
  await fuzz(t, { parser: '/proc/<pid>/{maps,fdinfo} (arbitrary text)', file: FILE, runs: 5000 }, text, (input) => {
    if (!mappedPaths(input).every((p) => typeof p === 'string' && p.startsWith('/'))) throw new Error('a mapped path that is not absolute');
    const id = mountIdOfFdinfo(input);
    if (!Number.isNaN(id) && !(Number.isInteger(id) || id === Infinity)) throw new Error(`mnt_id ${id}`);
  });
});

t.test('" (deleted)" is split off exactly when it ends the link', async (t) => {
  await fuzz(t, { parser: 'fd/cwd/root links (deleted mark)', file: FILE, runs: 5000 }, fc.tuple(fc.string({ unit: nameChar, maxLength: 30 }), fc.boolean()), ([path, deleted]) => {
    const got = splitDeleted(deleted ? `${path} (deleted)` : path);
    const want = deleted ? { path, deleted: true } : path.endsWith(' (deleted)') ? { path: path.slice(0, -10), deleted: true } : { path, deleted: false };
    if (JSON.stringify(got) !== JSON.stringify(want)) throw new Error(`got ${JSON.stringify(got)}`);
  });
});

t.test('describeBlockers: one line per blocker, whatever the names, commands and sources hold', async (t) => {
  const kinds: BlockerKind[] = ['open-file', 'cwd', 'root', 'mmap', 'mount', 'mount-point'];
  const text = fc.string({ unit: nameChar, maxLength: 24 });
  const blocker: fc.Arbitrary<Blocker> = fc.record(
    { kind: fc.constantFrom(...kinds), pid: fc.nat(), command: text, path: text, deleted: fc.constant(true as const), source: text, detached: fc.constant(true as const) },
    { requiredKeys: ['kind', 'path'] },
  );
  await fuzz(t, { parser: 'blocker descriptions', file: FILE, runs: 3000 }, fc.tuple(fc.array(blocker, { maxLength: 30 }), fc.integer({ min: 1, max: 25 })), ([blockers, limit]) => {
    const lines = describeBlockers(blockers, limit).split('\n');
    const want = blockers.length === 0 ? 1 : Math.min(blockers.length, limit) + (blockers.length > limit ? 1 : 0);
    if (lines.length !== want) throw new Error(`${lines.length} lines for ${blockers.length} blockers (limit ${limit}): ${JSON.stringify(lines)}`);
  });
});

// The fuzzer's finds, kept as cases whatever the seed.
t.test('regression: a mapped name with a carriage return is found; a command or source with a newline stays on one line', async (t) => {
  t.same(mappedPaths('7f0000000000-7f0000001000 r--p 00000000 fd:01 1234    /vol/a\rb\u2028c\n'), ['/vol/a\rb\u2028c']);
  const text = describeBlockers([
    { kind: 'open-file', pid: 7, command: 'evil\npid 1 (init) has /etc open', path: '/vol/x' },
    { kind: 'mount-point', path: '/vol/m', source: 'src\nline' },
  ]);
  t.equal(text.split('\n').length, 2, text);
  t.match(text, /pid 7 \(evil\\npid 1 \(init\) has \/etc open\) has \/vol\/x open/);
});
