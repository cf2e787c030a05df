// Fuzzing the /proc/self/mountinfo parser (lib/kernel/mountinfo.ts) and the
// path arithmetic built on it. Properties:
//  - any text at all is parsed without throwing, to entries whose fields
//    are strings (numbers for the ids);
//  - lines written the way the kernel writes them (proc(5): space, tab,
//    newline and backslash in names escaped as \040 \011 \012 \134; zero or
//    more optional fields; any number of lines) parse back to exactly the
//    names and fields that were written: a path with spaces, newlines or
//    backslashes survives;
//  - isWithin and pathOnFilesystem agree with path arithmetic on
//    normalized absolute paths.
// Replaying a failure: docs/testing.md, "Fuzzing".
import { posix } from 'node:path';
import fc from 'fast-check';
import t from 'tap';
import { isWithin, parseMountInfo, type MountInfo } from '../../lib/kernel/mountinfo.js';
import { pathOnFilesystem } from '../../lib/volume/mounts/mounts-location.js';
import { fuzz, mutatedText } from '../fixtures/campaign/fuzz.js';

const FILE = 'fuzz/mountinfo.test.ts';

/** The kernel's mangle(): these four characters as octal escapes, everything else as is. */
function mangle(text: string): string {
  return text.replace(/[ \t\n\\]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, '0')}`);
}

// Names the kernel may print: any character (a path component can hold anything but '/' and NUL).
const nameChar = fc.oneof(
  { arbitrary: fc.constantFrom(' ', '\t', '\n', '\\', '-', '0', '4', '\u00e9', '\u{1f600}', '#', ':', ','), weight: 2 },
  { arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }).filter((c) => c !== '/' && c !== '\0'), weight: 3 },
);
const component = fc.string({ unit: nameChar, minLength: 1, maxLength: 12 });
const absolutePath = fc.array(component, { maxLength: 5 }).map((parts) => `/${parts.join('/')}`);
const word = fc.string({ unit: nameChar, minLength: 1, maxLength: 16 });
const options = fc.array(fc.stringMatching(/^[a-z_]{1,8}(=[a-z0-9]{1,4})?$/), { minLength: 1, maxLength: 4 });
const optionalField = fc.oneof(
  fc.nat({ max: 999 }).map((n) => `shared:${n}`),
  fc.nat({ max: 999 }).map((n) => `master:${n}`),
  fc.nat({ max: 999 }).map((n) => `propagate_from:${n}`),
  fc.constant('unbindable'),
);

const mountArb = fc.record({
  id: fc.nat({ max: 1 << 20 }),
  parentId: fc.nat({ max: 1 << 20 }),
  device: fc.tuple(fc.nat({ max: 4095 }), fc.nat({ max: 1 << 20 })).map(([a, b]) => `${a}:${b}`),
  root: absolutePath,
  mountPoint: absolutePath,
  options,
  optional: fc.array(optionalField, { maxLength: 3 }),
  fsType: fc.oneof(fc.constantFrom('ext4', 'tmpfs', 'proc', 'fuse.sshfs', 'overlay'), word),
  source: word,
  superOptions: options,
});
type Written = typeof mountArb extends fc.Arbitrary<infer T> ? T : never;

function line(m: Written): string {
  return [m.id, m.parentId, m.device, mangle(m.root), mangle(m.mountPoint), m.options.join(','), ...m.optional, '-', mangle(m.fsType), mangle(m.source), m.superOptions.join(',')].join(' ');
}

function expected(m: Written): MountInfo {
  const { optional: _optional, ...rest } = m;
  return rest;
}

t.test('mountinfo as the kernel writes it parses back to exactly what was written', async (t) => {
  await fuzz(t, { parser: 'mountinfo (kernel-written lines)', file: FILE, runs: 5000 }, fc.array(mountArb, { minLength: 1, maxLength: 6 }), (mounts) => {
    const parsed = parseMountInfo(`${mounts.map(line).join('\n')}\n`);
    const want = mounts.map(expected);
    if (JSON.stringify(parsed) !== JSON.stringify(want)) throw new Error(`parsed ${JSON.stringify(parsed)}\nwrote  ${JSON.stringify(want)}`);
  });
});

t.test('any text, and mutated mountinfo, parses without throwing', async (t) => {
  const text = fc.oneof(
    fc.string({ unit: 'binary', maxLength: 400 }),
    fc.array(fc.string({ unit: fc.constantFrom(' ', '-', '\\', '0', '1', '4', '7', 'a', '/', ':', '\n'), maxLength: 60 }), { maxLength: 8 }).map((lines) => lines.join('\n')),
    mutatedText(fc.array(mountArb, { minLength: 1, maxLength: 4 }).map((ms) => ms.map(line).join('\n')), 6),
  );
  await fuzz(t, { parser: 'mountinfo (arbitrary and mutated text)', file: FILE, runs: 5000 }, text, (input) => {
    for (const m of parseMountInfo(input)) {
      for (const field of [m.device, m.root, m.mountPoint, m.fsType, m.source]) if (typeof field !== 'string') throw new Error(`a field is ${typeof field}`);
      if (!m.options.every((o) => typeof o === 'string') || !m.superOptions.every((o) => typeof o === 'string')) throw new Error('an option is not a string');
      if (typeof m.id !== 'number' || typeof m.parentId !== 'number') throw new Error('an id is not a number');
    }
  });
});

t.test('isWithin and pathOnFilesystem agree with path arithmetic', async (t) => {
  const simple = fc.array(fc.constantFrom('a', 'b', 'ab', 'a b', 'a\nb', 'vol-1', 'vol-10'), { maxLength: 4 }).map((parts) => `/${parts.join('/')}`);
  await fuzz(t, { parser: 'mount paths (isWithin, pathOnFilesystem)', file: FILE, runs: 5000 }, fc.tuple(simple, simple, simple), ([path, dir, root]) => {
    const relative = posix.relative(dir, path);
    const within = relative === '' || (!relative.startsWith('..') && !posix.isAbsolute(relative));
    if (isWithin(path, dir) !== within) throw new Error(`isWithin(${JSON.stringify(path)}, ${JSON.stringify(dir)}) is ${!within}`);
    if (!within) return;
    const onFs = pathOnFilesystem(path, { mountPoint: dir, root } as MountInfo);
    if (onFs !== (relative === '' ? root : posix.join(root, relative))) throw new Error(`pathOnFilesystem gave ${JSON.stringify(onFs)}`);
  });
});

// The fuzzer's finds, kept as cases whatever the seed.
t.test('regression: a line cut short after the separator is skipped, not a TypeError; the type is unescaped', async (t) => {
  t.same(parseMountInfo('36 35 98:0 / /mnt rw shared:1 master:2 unbindable -\n'), [], 'cut right after the separator');
  t.same(parseMountInfo('36 35 98:0 / /mnt rw shared:1 master:2 - ext4\n'), [], 'cut after the type');
  const [fuse] = parseMountInfo('40 1 0:52 / /mnt/my\\040files rw,nosuid - fuse.my\\040fs my\\134src rw,user_id=0\n');
  t.match(fuse, { mountPoint: '/mnt/my files', fsType: 'fuse.my fs', source: 'my\\src', superOptions: ['rw', 'user_id=0'] });
});
