// lib/agent/config: the upstream ConfigMap format read as upstream reads it,
// every rule of ours on top, and the reloader. Every config is a real
// directory laid out as kubelet mounts a ConfigMap (..data link, a
// generation directory, one link per key) in a scratch directory; every
// refusal is checked for the file and key it names.
import { execFileSync } from 'node:child_process';
import { mkdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { FscryptError } from '../../lib/kernel/errors.js';
import {
  CONFIG_DIR_ENV,
  ConfigError,
  ConfigReloader,
  DEFAULT_CONFIG_DIR,
  formatKeyPath,
  formatWarning,
  loadConfig,
  MAX_FILE_BYTES,
  matchesNamePattern,
  parseGoDuration,
  resolveConfigDir,
  type ConfigProblem,
  type ConfigWarning,
  type LoadedConfig,
} from '../../lib/agent/config/index.js';
import { updateConfigMapMount, writeConfigMapMount } from '../fixtures/agent/configmap-mount.js';
import { failure } from '../fixtures/helpers.js';
import { scratchDir } from '../fixtures/system/scratch-fs.js';

const KEK = 'file:/etc/fscrypt-local/keys/kek';
const FSCRYPT = `  fscrypt:\n    keySource: ${KEK}\n`;

/** A class entry of storageClassMap with an fscrypt block, plus `extra` lines (two-space indented). */
function encrypted(name: string, hostDir: string, extra = ''): string {
  return `${name}:\n  hostDir: ${hostDir}\n${extra}${FSCRYPT}`;
}

function mount(t: Test, data: Record<string, string>): string {
  const dir = join(scratchDir(t), 'config');
  mkdirSync(dir);
  writeConfigMapMount(dir, data);
  return dir;
}

async function load(t: Test, data: Record<string, string>): Promise<LoadedConfig> {
  return loadConfig(mount(t, data));
}

async function refused(t: Test, data: Record<string, string>): Promise<ConfigError> {
  const error = await failure(() => load(t, data));
  if (!(error instanceof ConfigError)) throw new Error(`expected a ConfigError, got ${error.message}`);
  return error;
}

/** The one problem at file/key; fails the test if there is none. */
function problemAt(t: Test, error: ConfigError, file: string | undefined, key: string): ConfigProblem | undefined {
  const found = error.problems.find((p) => p.file === file && p.key === key);
  t.ok(found, `a problem at ${file}: ${key} (got: ${error.message})`);
  return found;
}

function warningAt(t: Test, warnings: readonly ConfigWarning[], file: string | undefined, key: string, message: RegExp): void {
  const found = warnings.find((w) => w.file === file && w.key === key && message.test(w.message));
  t.ok(found, `a warning at ${file}: ${key} matching ${message} (got: ${warnings.map(formatWarning).join(' | ')})`);
}

t.test('a ConfigMap mount: ..data and the generation directory are skipped, each key is a file', async (t) => {
  const dir = mount(t, { storageClassMap: encrypted('fast-disks', '/mnt/fast-disks'), useNodeNameOnly: 'true' });
  const loaded = await loadConfig(dir);
  t.equal(loaded.config.classes.length, 1);
  t.equal(loaded.config.useNodeNameOnly, true);
  t.same(loaded.warnings, [], 'neither ..data nor the ..2026_... directory is taken for a key');
  t.match(loaded.digest, /^[0-9a-f]{64}$/);
  t.equal((await loadConfig(dir)).digest, loaded.digest, 'the same content, the same digest');
  updateConfigMapMount(dir, { storageClassMap: encrypted('fast-disks', '/mnt/fast-disks'), useNodeNameOnly: 'false' });
  t.not((await loadConfig(dir)).digest, loaded.digest, 'another content, another digest');
});

t.test('a plain directory of files (not a ConfigMap mount) is read the same way', async (t) => {
  const dir = scratchDir(t);
  writeFileSync(join(dir, 'storageClassMap'), encrypted('a', '/mnt/a'));
  t.equal((await loadConfig(dir)).config.classes[0]!.className, 'a');
});

t.test('defaults: upstream values where upstream has them, mountDir = hostDir, the chart taint key', async (t) => {
  const { config, warnings } = await load(t, { storageClassMap: encrypted('fast-disks', '/mnt/fast-disks') });
  t.same(config, {
    classes: [
      {
        className: 'fast-disks',
        hostDir: '/mnt/fast-disks',
        mountDir: '/mnt/fast-disks',
        namePatterns: ['*'],
        volumeMode: 'Filesystem',
        accessMode: 'ReadWriteOnce',
        selector: [],
        fscrypt: { keySource: { kind: 'file', path: '/etc/fscrypt-local/keys/kek' }, keySourceText: KEK },
      },
    ],
    nodeLabelsForPV: [],
    labelsForPV: {},
    useNodeNameOnly: false,
    setPVOwnerRef: false,
    minResyncPeriodMs: 5 * 60 * 1000,
    removeNodeNotReadyTaint: false,
    notReadyTaintKey: 'sig-storage-local-static-provisioner/agent-not-ready',
  });
  t.notOk('fsType' in config.classes[0]!, 'no fsType unless given');
  t.same(warnings, [], 'a missing mountDir is no warning (the chart defaults it to hostDir too)');
});

t.test('every upstream key with a value, and the values as given', async (t) => {
  const { config } = await load(t, {
    storageClassMap:
      encrypted('b-class', '/mnt/b/', '  mountDir: /agent//b/./\n  fsType: xfs\n  accessMode: ReadWriteOncePod\n  volumeMode: Filesystem\n  namePattern: "nvme*,ssd?"\n') +
      encrypted('a-class', '/mnt/a'),
    nodeLabelsForPV: '- kubernetes.io/hostname\n- topology.kubernetes.io/zone\n',
    labelsForPV: 'tier: fast\nexample.com/owner: storage-team\nempty:\n',
    useNodeNameOnly: 'true',
    setPVOwnerRef: 'true',
    minResyncPeriod: '1h30m',
    removeNodeNotReadyTaint: 'true',
    provisionerNotReadyNodeTaintKey: 'example.com/fscrypt-not-ready',
  });
  t.same(
    config.classes.map((c) => c.className),
    ['a-class', 'b-class'],
    'classes sorted by name',
  );
  const b = config.classes[1]!;
  t.equal(b.hostDir, '/mnt/b', 'hostDir cleaned as Go joins paths');
  t.equal(b.mountDir, '/agent/b');
  t.equal(b.fsType, 'xfs');
  t.equal(b.accessMode, 'ReadWriteOncePod');
  t.same(b.namePatterns, ['nvme*', 'ssd?']);
  t.same(config.nodeLabelsForPV, ['kubernetes.io/hostname', 'topology.kubernetes.io/zone']);
  t.same(config.labelsForPV, { tier: 'fast', 'example.com/owner': 'storage-team', empty: '' });
  t.equal(config.useNodeNameOnly, true);
  t.equal(config.setPVOwnerRef, true);
  t.equal(config.minResyncPeriodMs, 90 * 60 * 1000);
  t.equal(config.removeNodeNotReadyTaint, true);
  t.equal(config.notReadyTaintKey, 'example.com/fscrypt-not-ready');
});

t.test('YAML 1.1 as upstream decodes it: yes/on/y are true, no/off are false, numbers where strings belong become text', async (t) => {
  for (const [text, expected] of [
    ['yes', true],
    ['Yes', true],
    ['on', true],
    ['y', true],
    ['TRUE', true],
    ['no', false],
    ['off', false],
    ['n', false],
    ['false', false],
    ['', false],
  ] as const) {
    const { config } = await load(t, { setPVOwnerRef: text, useNodeNameOnly: `${text}\n` });
    t.equal(config.setPVOwnerRef, expected, `setPVOwnerRef: ${JSON.stringify(text)}`);
    t.equal(config.useNodeNameOnly, expected, 'a trailing newline changes nothing');
  }
  const { config } = await load(t, { labelsForPV: 'version: 2\nbeta: yes\nwhen: 2024-01-01\n', storageClassMap: encrypted('a', '/mnt/a', '  fsType: 010\n  namePattern: 10:30\n') });
  t.same(config.labelsForPV, { version: '2', beta: 'true', when: '2024-01-01' }, 'a number or boolean becomes its text; a date stays text, as go-yaml v2 leaves it');
  t.same(config.classes[0]!.namePatterns, ['10:30'], 'a sexagesimal number stays text too');
  t.equal(config.classes[0]!.fsType, '8', 'a YAML 1.1 octal is a number, then its text (what upstream gets too)');
});

t.test('a quoted "true" is a string where a boolean belongs: refused, as upstream refuses it, with the hint', async (t) => {
  const error = await refused(t, { setPVOwnerRef: '"true"' });
  const p = problemAt(t, error, 'setPVOwnerRef', '');
  t.match(p?.why, /must be true or false, not a string \(write true or false without quotes/);
  t.match(error.message, /^config setPVOwnerRef \(line 1\): must be true or false/);
});

t.test('what the decoder does silently is warned: a repeated key, a key YAML 1.1 reads as a boolean, merge keys work', async (t) => {
  const { config, warnings } = await load(t, {
    storageClassMap: `base: &base\n  hostDir: /mnt/base\n${FSCRYPT.replace(/^/gm, '')}derived:\n  <<: *base\n  hostDir: /mnt/derived\n  hostDir: /mnt/derived2\n`,
    labelsForPV: 'on: x\n',
  });
  t.same(
    config.classes.map((c) => [c.className, c.hostDir]),
    [
      ['base', '/mnt/base'],
      ['derived', '/mnt/derived2'],
    ],
    'the merge key brings the fscrypt block; the last hostDir wins',
  );
  warningAt(t, warnings, 'storageClassMap', 'derived.hostDir', /given more than once: the last one is used/);
  const repeated = warnings.find((w) => w.key === 'derived.hostDir');
  t.equal(repeated?.line, 8, 'with the line of the repeat');
  warningAt(t, warnings, 'labelsForPV', 'true', /the key "on" reads as "true" in YAML 1\.1.*quote it/);
  t.same(config.labelsForPV, { true: 'x' }, 'read as upstream reads it');
});

t.test('invalid YAML: refused with its file and line', async (t) => {
  const error = await refused(t, { storageClassMap: 'a:\n  hostDir: /mnt/a\n   bad: [\n', labelsForPV: 'x: 1\n---\ny: 2\n' });
  const yaml = problemAt(t, error, 'storageClassMap', '');
  t.match(yaml?.why, /^not valid YAML: /);
  t.type(yaml?.line, 'number');
  t.match(problemAt(t, error, 'labelsForPV', '')?.why, /multiple documents/);
  t.same([...new Set(error.problems.map((p) => p.file))], ['labelsForPV', 'storageClassMap'], 'both files reported in one error');
});

t.test('an alias bomb is refused, not expanded', async (t) => {
  const lines = ['a: &a [x, x, x, x, x, x, x, x, x, x]'];
  for (let i = 1; i < 10; i++) lines.push(`${String.fromCharCode(97 + i)}: &${String.fromCharCode(97 + i)} [${Array(10).fill(`*${String.fromCharCode(96 + i)}`).join(', ')}]`);
  const error = await refused(t, { labelsForPV: `${lines.join('\n')}\n` });
  t.match(problemAt(t, error, 'labelsForPV', '')?.why, /^not usable YAML: .*alias/i);
});

t.test('hostDir and mountDir: required, absolute, not /', async (t) => {
  const error = await refused(t, {
    storageClassMap:
      `no-host:\n  mountDir: /m\n${FSCRYPT}` +
      encrypted('relative', 'mnt/disks') +
      encrypted('root', '//', '  mountDir: /m2\n') +
      encrypted('bad-mount', '/mnt/ok', '  mountDir: ./here\n') +
      encrypted('nul', '"/mnt/a\\0b"'),
  });
  t.match(problemAt(t, error, 'storageClassMap', 'no-host.hostDir'), { why: 'is required', line: 1 }, 'a missing key points at its class');
  t.match(problemAt(t, error, 'storageClassMap', 'relative.hostDir')?.why, /"mnt\/disks" must be an absolute path/);
  t.match(problemAt(t, error, 'storageClassMap', 'root.hostDir')?.why, /must not be \/ itself/);
  t.match(problemAt(t, error, 'storageClassMap', 'bad-mount.mountDir')?.why, /must be an absolute path/);
  t.match(problemAt(t, error, 'storageClassMap', 'nul.hostDir')?.why, /NUL/);
  t.match(error.message, /^config storageClassMap: bad-mount\.mountDir \(line \d+\): "\.\/here" must be an absolute path$/m, 'the message: config FILE: KEY (line N): WHY');
  t.ok(error instanceof FscryptError, 'a FscryptError');
  t.equal(error.code, 'ERR_INVALID_ARG');
  t.equal(error.problems.length, 5, 'every problem listed');
  t.equal(error.message.split('\n').length, 5, 'one line each');
  t.equal(error.file, error.problems[0]!.file, 'file, key and why are the first problem');
  t.equal(error.key, error.problems[0]!.key);
  t.equal(error.why, error.problems[0]!.why);
});

t.test('each hostDir belongs to one class; two classes never share a mountDir', async (t) => {
  const error = await refused(t, {
    storageClassMap:
      encrypted('a', '/mnt/disks') +
      encrypted('b', '/mnt/disks/') +
      encrypted('c', '/mnt/c', '  mountDir: /agent/shared\n') +
      encrypted('d', '/mnt/d', '  mountDir: /agent/shared\n') +
      encrypted('e', '/mnt/upstream') +
      'upstream-class:\n  hostDir: /mnt/upstream\n',
  });
  t.match(problemAt(t, error, 'storageClassMap', 'b.hostDir')?.why, /"\/mnt\/disks" is also the hostDir of class "a": each hostDir belongs to one class only/);
  t.match(problemAt(t, error, 'storageClassMap', 'd.mountDir')?.why, /"\/agent\/shared" is also the mountDir of class "c"/);
  t.match(problemAt(t, error, 'storageClassMap', 'e.hostDir')?.why, /also the hostDir of class "upstream-class", which has no fscrypt: block/);
  t.equal(error.problems.length, 3);
});

t.test('namePattern: comma-separated Go globs, checked when loaded', async (t) => {
  const { config, warnings } = await load(t, { storageClassMap: encrypted('a', '/mnt/a', '  namePattern: "vol*, ssd*,,[a-c]?"\n') });
  t.same(config.classes[0]!.namePatterns, ['vol*', ' ssd*', '', '[a-c]?'], 'split on commas, nothing trimmed (as upstream)');
  warningAt(t, warnings, 'storageClassMap', 'a.namePattern', /" ssd\*" has spaces at an end/);
  const error = await refused(t, { storageClassMap: encrypted('a', '/mnt/a', '  namePattern: "ok*,[z-"\n') + encrypted('b', '/mnt/b', '  namePattern: "x\\\\"\n') });
  t.match(problemAt(t, error, 'storageClassMap', 'a.namePattern')?.why, /pattern 2 of 2 \("\[z-"\): it is not a valid glob/);
  t.match(problemAt(t, error, 'storageClassMap', 'b.namePattern')?.why, /"x\\\\": it is not a valid glob/);
});

t.test("matchesNamePattern is Go's filepath.Match", async (t) => {
  // Each row's answer is what Go's path/filepath.Match gives (its own test table, and the rules of its doc).
  const rows: [pattern: string, name: string, match: boolean][] = [
    ['abc', 'abc', true],
    ['*', 'abc', true],
    ['*c', 'abc', true],
    ['a*', 'a', true],
    ['a*', 'abc', true],
    ['a*', 'ab/c', false],
    ['a*/b', 'abc/b', true],
    ['a*/b', 'a/c/b', false],
    ['a*b*c*d*e*/f', 'axbxcxdxe/f', true],
    ['a*b*c*d*e*/f', 'axbxcxdxexxx/f', true],
    ['a*b*c*d*e*/f', 'axbxcxdxe/xxx/f', false],
    ['a*b*c*d*e*/f', 'axbxcxdxexxx/fff', false],
    ['a*b?c*x', 'abxbbxdbxebxczzx', true],
    ['a*b?c*x', 'abxbbxdbxebxczzy', false],
    ['ab[c]', 'abc', true],
    ['ab[b-d]', 'abc', true],
    ['ab[e-g]', 'abc', false],
    ['ab[^c]', 'abc', false],
    ['ab[^b-d]', 'abc', false],
    ['ab[^e-g]', 'abc', true],
    ['a\\*b', 'a*b', true],
    ['a\\*b', 'ab', false],
    ['a?b', 'a☺b', true],
    ['a[^a]b', 'a☺b', true],
    ['a???b', 'a☺b', false],
    ['a[^a][^a][^a]b', 'a☺b', false],
    ['[a-ζ]*', 'α', true],
    ['*[a-ζ]', 'A', false],
    ['a?b', 'a/b', false],
    ['a*b', 'a/b', false],
    ['[\\]a]', ']', true],
    ['[\\-]', '-', true],
    ['[x\\-]', 'x', true],
    ['[x\\-]', '-', true],
    ['[x\\-]', 'z', false],
    ['[\\-x]', 'x', true],
    ['[\\-x]', '-', true],
    ['[\\-x]', 'a', false],
    ['*x', 'xxx', true],
    ['.fscrypt', '.fscrypt', true],
    ['*', '.fscrypt', true],
    ['*', 'lost+found', true],
    ['vol-[0-9]*', 'vol-12', true],
    ['vol-[0-9]*', 'vol-x', false],
  ];
  for (const [pattern, name, match] of rows) t.equal(matchesNamePattern([pattern], name), match, `Match(${JSON.stringify(pattern)}, ${JSON.stringify(name)})`);
  // Malformed patterns: Go returns ErrBadPattern, discovery keeps nothing; loadConfig refuses them.
  for (const bad of ['[]a]', '[-]', '[x-]', '[-x]', '\\', '[a-b-c]', '[', '[^', '[^bc', 'a[', 'a*[', '*x[']) {
    t.equal(matchesNamePattern([bad], 'a'), false, `${JSON.stringify(bad)} matches nothing`);
  }
  t.equal(matchesNamePattern(['nvme*', 'ssd*'], 'ssd1'), true, 'any pattern of the list');
  t.equal(matchesNamePattern(['', 'x'], 'y'), false, 'an empty pattern matches nothing');
  t.equal(matchesNamePattern([''], ''), false);
  t.equal(matchesNamePattern(['[', 'a'], 'a'), true, 'a bad pattern does not stop the others');
});

t.test('volumeMode: Filesystem; Block with fscrypt is refused and points to dm-crypt/LUKS; Block without fscrypt is left to upstream', async (t) => {
  const error = await refused(t, { storageClassMap: encrypted('blocks', '/mnt/blocks', '  volumeMode: Block\n') + encrypted('odd', '/mnt/odd', '  volumeMode: Raw\n') });
  const block = problemAt(t, error, 'storageClassMap', 'blocks.volumeMode');
  t.match(block?.why, /fscrypt encrypts directories.*for block volumes use dm-crypt\/LUKS/);
  t.equal(block?.line, 3);
  t.match(problemAt(t, error, 'storageClassMap', 'odd.volumeMode')?.why, /"Raw" is not a volume mode/);

  const { config, warnings } = await load(t, { storageClassMap: 'blocks:\n  hostDir: /mnt/blocks\n  volumeMode: Block\n' + encrypted('fs', '/mnt/fs', '  volumeMode: Filesystem\n') });
  t.same(
    config.classes.map((c) => c.className),
    ['fs'],
  );
  warningAt(t, warnings, 'storageClassMap', 'blocks', /has no fscrypt: block: ignored.*upstream provisioner can serve it/);
});

t.test('accessMode: ReadWriteOnce (default) or ReadWriteOncePod; ReadWriteMany and ReadOnlyMany refused', async (t) => {
  const error = await refused(t, {
    storageClassMap:
      encrypted('many', '/mnt/many', '  accessMode: ReadWriteMany\n') +
      encrypted('ro', '/mnt/ro', '  accessMode: ReadOnlyMany\n') +
      encrypted('bogus', '/mnt/bogus', '  accessMode: rwo\n'),
  });
  t.equal(
    formatProblemOf(error, 'many.accessMode'),
    'config storageClassMap: many.accessMode (line 3): ReadWriteMany is not supported: an fscrypt-local volume lives on one node; use ReadWriteOnce or ReadWriteOncePod',
  );
  t.match(problemAt(t, error, 'storageClassMap', 'ro.accessMode')?.why, /^ReadOnlyMany is not supported: an fscrypt-local volume lives on one node/);
  t.match(problemAt(t, error, 'storageClassMap', 'bogus.accessMode')?.why, /"rwo" is not an access mode/);
  const { config } = await load(t, { storageClassMap: encrypted('pod', '/mnt/pod', '  accessMode: ReadWriteOncePod\n') + encrypted('once', '/mnt/once', '  accessMode: ReadWriteOnce\n') });
  t.same(
    config.classes.map((c) => c.accessMode),
    ['ReadWriteOnce', 'ReadWriteOncePod'],
  );
});

function formatProblemOf(error: ConfigError, key: string): string | undefined {
  return error.message.split('\n').find((line) => line.includes(` ${key} `));
}

t.test('parseGoDuration is time.ParseDuration', async (t) => {
  const ok: [string, number][] = [
    ['0', 0],
    ['5m0s', 300_000],
    ['1h', 3_600_000],
    ['300ms', 300],
    ['1.5h', 5_400_000],
    ['2h45m', 9_900_000],
    ['-2s', -2000],
    ['+5s', 5000],
    ['.5s', 500],
    ['1.s', 1000],
    ['1us', 0.001],
    ['1µs', 0.001],
    ['1μs', 0.001],
    ['1000ns', 0.001],
    ['1h1m1s1ms', 3_661_001],
    ['0.000000001s', 0.000001],
    ['9223372036854775807ns', 9223372036854.775807],
    ['-9223372036854775808ns', -9223372036854.775808],
    ['2562047h', 2562047 * 3_600_000],
  ];
  for (const [text, ms] of ok) t.ok(Math.abs(parseGoDuration(text) - ms) <= Math.abs(ms) * 1e-12, `${text} = ${ms} ms (got ${parseGoDuration(text)})`);
  for (const bad of ['', '5', '-', '.s', '1d', '1 s', 's', '5m0', '9223372036854775808ns', '2562048h', '3000000h', '1.5.5s', '++5s']) {
    t.throws(() => parseGoDuration(bad), TypeError, `${JSON.stringify(bad)} is refused`);
  }
  t.throws(() => parseGoDuration('1d'), /invalid duration "1d": unknown unit "d"/);
  t.throws(() => parseGoDuration(5 as unknown as string), /must be a string/);
});

t.test('minResyncPeriod: a Go duration, 0 means none, negative or unitless refused', async (t) => {
  t.equal((await load(t, { minResyncPeriod: '2h45m' })).config.minResyncPeriodMs, 9_900_000);
  t.equal((await load(t, { minResyncPeriod: '0' })).config.minResyncPeriodMs, 0);
  t.equal((await load(t, { minResyncPeriod: '' })).config.minResyncPeriodMs, 300_000, 'empty: the default');
  const error = await refused(t, { minResyncPeriod: '-1m' });
  t.match(problemAt(t, error, 'minResyncPeriod', '')?.why, /"-1m" is negative/);
  const unitless = await refused(t, { minResyncPeriod: '300' });
  t.match(problemAt(t, unitless, 'minResyncPeriod', '')?.why, /invalid duration "300": a number has no unit/);
});

t.test('removeNodeNotReadyTaint: the chart default key, a key of ours, an invalid key, a key without the flag', async (t) => {
  const chart = await load(t, { removeNodeNotReadyTaint: 'true' });
  t.equal(chart.config.notReadyTaintKey, 'sig-storage-local-static-provisioner/agent-not-ready');
  const error = await refused(t, { removeNodeNotReadyTaint: 'true', provisionerNotReadyNodeTaintKey: 'not a/valid/key' });
  t.match(problemAt(t, error, 'provisionerNotReadyNodeTaintKey', '')?.why, /is not a valid taint key/);
  const unused = await load(t, { provisionerNotReadyNodeTaintKey: 'example.com/x' });
  t.equal(unused.config.removeNodeNotReadyTaint, false);
  warningAt(t, unused.warnings, 'provisionerNotReadyNodeTaintKey', '', /unused: removeNodeNotReadyTaint is not true/);
});

t.test('selector: NodeSelectorTerms, shaped and checked as the API server checks them; a warning that it widens placement', async (t) => {
  const selector = [
    '  selector:',
    '    - matchExpressions:',
    '        - {key: topology.kubernetes.io/zone, operator: In, values: [a, b]}',
    '        - {key: example.com/ssd, operator: Exists}',
    '        - {key: example.com/gen, operator: Gt, values: [3]}',
    '      matchFields:',
    '        - {key: metadata.name, operator: NotIn, values: [node-9]}',
    '    - matchExpressions:',
    '        - {key: example.com/x, operator: DoesNotExist, values: []}',
    '',
  ].join('\n');
  const { config, warnings } = await load(t, { storageClassMap: encrypted('a', '/mnt/a', selector) });
  t.same(config.classes[0]!.selector, [
    {
      matchExpressions: [
        { key: 'topology.kubernetes.io/zone', operator: 'In', values: ['a', 'b'] },
        { key: 'example.com/ssd', operator: 'Exists' },
        { key: 'example.com/gen', operator: 'Gt', values: ['3'] },
      ],
      matchFields: [{ key: 'metadata.name', operator: 'NotIn', values: ['node-9'] }],
    },
    { matchExpressions: [{ key: 'example.com/x', operator: 'DoesNotExist', values: [] }] },
  ]);
  warningAt(t, warnings, 'storageClassMap', 'a.selector', /ORed with this node's hostname/);

  const bad = [
    '  selector:',
    '    - matchExpressions:',
    '        - {key: zone, operator: In}',
    '        - {key: zone, operator: Exists, values: [x]}',
    '        - {key: zone, operator: Lt, values: [1, 2]}',
    '        - {key: zone, operator: Like, values: [x]}',
    '        - {key: "-bad-", operator: Exists}',
    '        - {operator: Exists}',
    '      matchFields:',
    '        - {key: metadata.labels, operator: Exists}',
    '        - {key: metadata.name, operator: In, values: [a, b]}',
    '      matchLabels: {x: y}',
    '    - notATerm',
    '',
  ].join('\n');
  const error = await refused(t, { storageClassMap: encrypted('a', '/mnt/a', bad) });
  const why = (key: string): string | undefined => problemAt(t, error, 'storageClassMap', `a.selector${key}`)?.why;
  t.match(why('[0].matchExpressions[0].values'), /at least one value with operator In/);
  t.match(why('[0].matchExpressions[1].values'), /must be empty with operator Exists/);
  t.match(why('[0].matchExpressions[2].values'), /exactly one value with operator Lt/);
  t.match(why('[0].matchExpressions[3].operator'), /"Like" is not an operator: In, NotIn, Exists, DoesNotExist, Gt, Lt/);
  t.match(why('[0].matchExpressions[4].key'), /"-bad-" is not a valid label key/);
  t.match(why('[0].matchExpressions[5].key'), /is required/);
  t.match(why('[0].matchFields[0].key'), /only metadata\.name/);
  t.match(why('[0].matchFields[0].operator'), /In or NotIn/);
  t.match(why('[0].matchFields[1].values'), /exactly one value \(a node name\)/);
  t.match(why('[1]'), /must be a mapping, not a string/);
  const lines = error.problems.map((p) => p.line);
  t.ok(lines.every((line) => typeof line === 'number' && line >= 3), `every problem has its line (${lines.join(',')})`);
});

t.test('labelsForPV and nodeLabelsForPV: Kubernetes label syntax', async (t) => {
  const error = await refused(t, {
    labelsForPV: 'good: ok\n"bad key!": x\nexample.com/v: "not valid value"\nlong: ' + 'x'.repeat(64) + '\n',
    nodeLabelsForPV: '- kubernetes.io/hostname\n- a/b/c\n- ""\n',
  });
  t.match(problemAt(t, error, 'labelsForPV', '["bad key!"]')?.why, /is not a valid label key/);
  t.match(problemAt(t, error, 'labelsForPV', '["example.com/v"]')?.why, /a label value must be letters/);
  t.match(problemAt(t, error, 'labelsForPV', 'long')?.why, /at most 63 characters/);
  t.match(problemAt(t, error, 'nodeLabelsForPV', '[1]')?.why, /"a\/b\/c" is not a valid label key: a label key has at most one '\/'/);
  t.match(problemAt(t, error, 'nodeLabelsForPV', '[2]')?.why, /its name part is empty/);
  const shape = await refused(t, { labelsForPV: '- a\n', nodeLabelsForPV: 'a: b\n' });
  t.match(problemAt(t, shape, 'labelsForPV', '')?.why, /must be a mapping, not a list/);
  t.match(problemAt(t, shape, 'nodeLabelsForPV', '')?.why, /must be a list, not a mapping/);
  const prefix = await refused(t, { nodeLabelsForPV: '- Example.COM/x\n- ' + 'a'.repeat(64) + '\n- ' + 'a.'.repeat(130) + 'b/x\n' });
  t.match(problemAt(t, prefix, 'nodeLabelsForPV', '[0]')?.why, /its prefix \(before '\/'\) is not a DNS subdomain/);
  t.match(problemAt(t, prefix, 'nodeLabelsForPV', '[1]')?.why, /longer than 63/);
  t.match(problemAt(t, prefix, 'nodeLabelsForPV', '[2]')?.why, /longer than 253/);
});

t.test('fscrypt.keySource: parsed with parseKeySource; its message, never the text, with file and key', async (t) => {
  const { config } = await load(t, {
    storageClassMap:
      'f:\n  hostDir: /mnt/f\n  fscrypt:\n    keySource: file:/keys/kek\n' +
      'p:\n  hostDir: /mnt/p\n  fscrypt:\n    keySource: passphrase:/keys/pass\n' +
      'k:\n  hostDir: /mnt/k\n  fscrypt:\n    keySource: kms:unix:///run/kms.sock\n',
  });
  t.same(
    config.classes.map((c) => [c.className, c.fscrypt]),
    [
      ['f', { keySource: { kind: 'file', path: '/keys/kek' }, keySourceText: 'file:/keys/kek' }],
      ['k', { keySource: { kind: 'kms', socket: '/run/kms.sock' }, keySourceText: 'kms:unix:///run/kms.sock' }],
      ['p', { keySource: { kind: 'passphrase', path: '/keys/pass' }, keySourceText: 'passphrase:/keys/pass' }],
    ],
  );
  const secret = 'hunter2-correct-horse-battery';
  const error = await refused(t, {
    storageClassMap:
      `pasted:\n  hostDir: /mnt/a\n  fscrypt:\n    keySource: ${secret}:staple\n` +
      `nokind:\n  hostDir: /mnt/b\n  fscrypt:\n    keySource: ${secret}\n` +
      'relative:\n  hostDir: /mnt/c\n  fscrypt:\n    keySource: passphrase:keys/pass\n' +
      'missing:\n  hostDir: /mnt/d\n  fscrypt:\n' +
      'number:\n  hostDir: /mnt/e\n  fscrypt:\n    keySource: 12345\n' +
      'notmap:\n  hostDir: /mnt/f\n  fscrypt: file:/keys/kek\n',
  });
  t.notMatch(error.message, secret, 'the text is never repeated');
  t.notMatch(error.message, 'staple');
  t.notMatch(error.message, '12345');
  t.match(problemAt(t, error, 'storageClassMap', 'pasted.fscrypt.keySource')?.why, /a key source is 'file:PATH', 'passphrase:PATH' or 'kms:SOCKET'.*not one of these kinds/);
  t.match(problemAt(t, error, 'storageClassMap', 'nokind.fscrypt.keySource')?.why, /has no kind/);
  t.match(problemAt(t, error, 'storageClassMap', 'relative.fscrypt.keySource')?.why, /the passphrase path must be absolute/);
  t.match(problemAt(t, error, 'storageClassMap', 'missing.fscrypt.keySource')?.why, /^is required: file:PATH, passphrase:PATH or kms:SOCKET$/);
  t.match(problemAt(t, error, 'storageClassMap', 'number.fscrypt.keySource')?.why, /must be a string, not a number/);
  t.match(problemAt(t, error, 'storageClassMap', 'notmap.fscrypt')?.why, /must be a mapping, not a string/);
});

t.test('unknown keys at every level are warnings with file, key path and line; upstream keys match regardless of case', async (t) => {
  const { config, warnings } = await load(t, {
    storageClassMap:
      'a:\n  HostDir: /mnt/a\n  mountdir: /agent/a\n  hostPath: /typo\n  selector:\n    - matchExpressions: [{key: x, operator: Exists, valuez: [1]}]\n' +
      '  fscrypt:\n    keySource: file:/k\n    policy: v1\n',
    StorageClassMap: 'ignored:\n  hostDir: /x\n',
    useNodeNameOnlyy: 'true',
    LabelsForPV: 'x: v\n',
  });
  t.same([config.classes[0]!.hostDir, config.classes[0]!.mountDir], ['/mnt/a', '/agent/a'], 'HostDir and mountdir read as hostDir and mountDir');
  t.same(config.labelsForPV, { x: 'v' }, 'a file LabelsForPV read as labelsForPV');
  warningAt(t, warnings, 'storageClassMap', 'a.HostDir', /read as hostDir \(upstream matches keys regardless of case\)/);
  warningAt(t, warnings, 'storageClassMap', 'a.hostPath', /unknown key: ignored/);
  warningAt(t, warnings, 'storageClassMap', 'a.selector[0].matchExpressions[0].valuez', /unknown key/);
  warningAt(t, warnings, 'storageClassMap', 'a.fscrypt.policy', /unknown key/);
  warningAt(t, warnings, 'StorageClassMap', '', /ignored: storageClassMap is also given/);
  warningAt(t, warnings, 'useNodeNameOnlyy', '', /unknown key/);
  warningAt(t, warnings, 'LabelsForPV', '', /read as labelsForPV/);
  t.equal(warnings.find((w) => w.key === 'a.hostPath')?.line, 4, 'the line of the unknown key');
  const both = await load(t, { storageClassMap: encrypted('a', '/mnt/a', '  HOSTDIR: /other\n') });
  t.equal(both.config.classes[0]!.hostDir, '/mnt/a', 'the key spelt right wins over its other spelling');
  warningAt(t, both.warnings, 'storageClassMap', 'a.HOSTDIR', /ignored: hostDir is also given/);
});

t.test('block-only and obsolete keys: accepted, reported as unused', async (t) => {
  const { config, warnings } = await load(t, {
    storageClassMap: encrypted('a', '/mnt/a', '  blockCleanerCommand:\n    - "/scripts/shred.sh"\n    - "2"\n'),
    useJobForCleaning: 'yes',
    jobTolerations: '- effect: NoSchedule\n  key: node-role.kubernetes.io/master\n',
    useAlphaAPI: 'true',
  });
  t.equal(config.classes.length, 1);
  warningAt(t, warnings, 'storageClassMap', 'a.blockCleanerCommand', /unused: a block-only key/);
  warningAt(t, warnings, 'useJobForCleaning', '', /unused: a block-only key/);
  warningAt(t, warnings, 'jobTolerations', '', /unused: a block-only key/);
  warningAt(t, warnings, 'useAlphaAPI', '', /unused: fscrypt-local always writes spec\.nodeAffinity/);
});

t.test('classes: no fscrypt block, empty, not a mapping, an invalid StorageClass name; no classes at all', async (t) => {
  const { config, warnings } = await load(t, { storageClassMap: 'upstream:\n  hostDir: /mnt/u\nempty:\n' + encrypted('ours', '/mnt/o') });
  t.same(
    config.classes.map((c) => c.className),
    ['ours'],
  );
  warningAt(t, warnings, 'storageClassMap', 'upstream', /has no fscrypt: block/);
  warningAt(t, warnings, 'storageClassMap', 'empty', /empty: ignored/);
  const error = await refused(t, { storageClassMap: 'listed: [1, 2]\n' + encrypted('Bad_Name', '/mnt/b') });
  t.match(problemAt(t, error, 'storageClassMap', 'listed')?.why, /must be a mapping of the class settings/);
  t.match(problemAt(t, error, 'storageClassMap', 'Bad_Name')?.why, /is not a valid StorageClass name: it must be lower case/);
  const notMap = await refused(t, { storageClassMap: '- a\n' });
  t.match(problemAt(t, notMap, 'storageClassMap', '')?.why, /must be a mapping from storage class name/);
  warningAt(t, (await load(t, {})).warnings, undefined, 'storageClassMap', /absent: no storage class is configured/);
  warningAt(t, (await load(t, { storageClassMap: 'u:\n  hostDir: /mnt/u\n' })).warnings, 'storageClassMap', '', /no class has an fscrypt: block/);
  t.same((await load(t, { storageClassMap: '# nothing yet\n' })).config.classes, [], 'an empty storageClassMap is no classes');
});

t.test('the directory: missing, not a directory, unreadable entries; what upstream would crash on is skipped with a warning', async (t) => {
  const root = scratchDir(t);
  const missing = await failure(() => loadConfig(join(root, 'nope')));
  t.ok(missing instanceof ConfigError);
  t.match(missing.message, new RegExp(`^config ${root}/nope: the config directory does not exist: mount the ConfigMap there, or pass --config DIR \\(env FSCRYPT_LOCAL_CONFIG\\)$`));
  writeFileSync(join(root, 'file'), '');
  t.match((await failure(() => loadConfig(join(root, 'file')))).message, /the config path is not a directory/);

  const dir = mount(t, { storageClassMap: encrypted('a', '/mnt/a') });
  execFileSync('mkfifo', [join(dir, 'fifo')]);
  mkdirSync(join(dir, 'real-dir'));
  mkdirSync(join(dir, '..data', 'nested'));
  symlinkSync('..data/nested', join(dir, 'nested'));
  symlinkSync('..data/gone', join(dir, 'dangling'));
  const loaded = await loadConfig(dir);
  t.equal(loaded.config.classes.length, 1, 'the config still loads');
  warningAt(t, loaded.warnings, 'fifo', '', /not a regular file: skipped/);
  warningAt(t, loaded.warnings, 'nested', '', /a link to a directory: skipped/);
  warningAt(t, loaded.warnings, 'dangling', '', /gone or a symbolic link to nothing/);
  t.notOk(loaded.warnings.some((w) => w.file === 'real-dir'), 'a directory is skipped silently, as upstream skips it');

  writeFileSync(join(dir, 'labelsForPV'), Buffer.alloc(MAX_FILE_BYTES + 1, 0x20));
  t.match((await failure(() => loadConfig(dir))).message, /^config labelsForPV: is larger than 1048576 bytes/m);
  rmSync(join(dir, 'labelsForPV'));
  // A read fault, injected: the reader's own /proc/self/mem fails with EIO at offset 0.
  symlinkSync('/proc/self/mem', join(dir, 'mem'));
  const unreadable = await failure(() => loadConfig(dir));
  t.ok(unreadable instanceof ConfigError);
  t.equal(unreadable.message, 'config mem: cannot be read (EIO)', 'a file that fails to read is a problem named by its file');
});

t.test('formatKeyPath quotes segments that would read as several', async (t) => {
  t.equal(formatKeyPath(['fast-disks', 'selector', 0, 'key']), 'fast-disks.selector[0].key');
  t.equal(formatKeyPath(['local.storage', 'hostDir']), '["local.storage"].hostDir');
  t.equal(formatKeyPath(['a b', '']), '["a b"][""]');
  t.equal(formatKeyPath([]), '');
});

t.test('the config directory: --config, then FSCRYPT_LOCAL_CONFIG, then upstream\'s path', async (t) => {
  t.equal(CONFIG_DIR_ENV, 'FSCRYPT_LOCAL_CONFIG');
  t.equal(DEFAULT_CONFIG_DIR, '/etc/provisioner/config');
  t.equal(resolveConfigDir('/opt/cfg', { FSCRYPT_LOCAL_CONFIG: '/env' }), '/opt/cfg');
  t.equal(resolveConfigDir(undefined, { FSCRYPT_LOCAL_CONFIG: '/env' }), '/env');
  t.equal(resolveConfigDir('', { FSCRYPT_LOCAL_CONFIG: '' }), '/etc/provisioner/config');
  t.equal(resolveConfigDir(undefined, {}), '/etc/provisioner/config');
});

t.test('ConfigError needs a problem', async (t) => {
  t.throws(() => new ConfigError([]), TypeError);
  const e = new ConfigError([{ file: undefined, key: 'storageClassMap', why: 'x' }]);
  t.equal(e.message, 'config: storageClassMap: x');
  t.equal(e.name, 'ConfigError');
});

// ---- the reloader ----

interface Recorder {
  changes: [LoadedConfig, LoadedConfig][];
  rejections: ConfigError[];
  options: { periodMs: number; onChange(next: LoadedConfig, previous: LoadedConfig): void; onRejected(error: ConfigError): void };
}

function recorder(periodMs = 3_600_000): Recorder {
  const r: Recorder = {
    changes: [],
    rejections: [],
    options: {
      periodMs,
      onChange: (next, previous) => void r.changes.push([next, previous]),
      onRejected: (error) => void r.rejections.push(error),
    },
  };
  return r;
}

t.test('reloader: a valid change applied, an invalid one rejected once while the last good stays, a fix accepted', async (t) => {
  const dir = mount(t, { storageClassMap: encrypted('a', '/mnt/a') });
  const r = recorder();
  const reloader = new ConfigReloader(dir, r.options);
  t.teardown(() => reloader.stop());
  const first = await reloader.start();
  t.equal(reloader.current(), first);
  t.equal(await reloader.reloadNow(), 'unchanged');

  updateConfigMapMount(dir, { storageClassMap: encrypted('a', '/mnt/a') + encrypted('b', '/mnt/b') });
  t.equal(await reloader.reloadNow(), 'applied');
  t.equal(r.changes.length, 1);
  t.same(
    r.changes[0]![0].config.classes.map((c) => c.className),
    ['a', 'b'],
  );
  t.equal(r.changes[0]![1], first, 'with the previous config');
  const good = reloader.current();
  t.equal(good, r.changes[0]![0]);

  updateConfigMapMount(dir, { storageClassMap: encrypted('a', '/mnt/a', '  accessMode: ReadWriteMany\n') });
  t.equal(await reloader.reloadNow(), 'rejected');
  t.equal(await reloader.reloadNow(), 'still-rejected');
  t.equal(await reloader.reloadNow(), 'still-rejected');
  t.equal(r.rejections.length, 1, 'reported once, not every period');
  t.match(r.rejections[0]!.message, /config storageClassMap: a\.accessMode \(line 3\): ReadWriteMany is not supported/);
  t.equal(reloader.current(), good, 'the agent keeps its last good config');

  updateConfigMapMount(dir, { storageClassMap: encrypted('a', '/mnt/a', '  accessMode: ReadOnlyMany\n') });
  t.equal(await reloader.reloadNow(), 'rejected', 'another invalid content is news');
  t.equal(r.rejections.length, 2);

  updateConfigMapMount(dir, { storageClassMap: encrypted('a', '/mnt/a', '  accessMode: ReadWriteOncePod\n') });
  t.equal(await reloader.reloadNow(), 'applied', 'the fix is accepted');
  t.equal(reloader.current().config.classes[0]!.accessMode, 'ReadWriteOncePod');
  t.equal(r.changes.length, 2);
  t.equal(r.rejections.length, 2);
});

t.test('reloader: back to the good content after a rejection, then the same bad content again is reported again', async (t) => {
  const good = { storageClassMap: encrypted('a', '/mnt/a') };
  const bad = { storageClassMap: encrypted('a', 'relative') };
  const dir = mount(t, good);
  const r = recorder();
  const reloader = new ConfigReloader(dir, r.options);
  t.teardown(() => reloader.stop());
  await reloader.start();
  updateConfigMapMount(dir, bad);
  t.equal(await reloader.reloadNow(), 'rejected');
  updateConfigMapMount(dir, good);
  t.equal(await reloader.reloadNow(), 'unchanged', 'the content of the current config: nothing to apply');
  updateConfigMapMount(dir, bad);
  t.equal(await reloader.reloadNow(), 'rejected');
  t.equal(r.rejections.length, 2);
  t.equal(r.changes.length, 0);
});

t.test('reloader: the directory gone is a rejection (once), its return is no change', async (t) => {
  const root = scratchDir(t);
  const dir = join(root, 'config');
  mkdirSync(dir);
  writeConfigMapMount(dir, { storageClassMap: encrypted('a', '/mnt/a') });
  const r = recorder();
  const reloader = new ConfigReloader(dir, r.options);
  t.teardown(() => reloader.stop());
  const first = await reloader.start();
  renameSync(dir, join(root, 'aside'));
  t.equal(await reloader.reloadNow(), 'rejected');
  t.equal(await reloader.reloadNow(), 'still-rejected');
  t.match(r.rejections[0]!.message, /the config directory does not exist/);
  renameSync(join(root, 'aside'), dir);
  t.equal(await reloader.reloadNow(), 'unchanged');
  t.equal(reloader.current(), first);
});

t.test('reloader: start() refuses an invalid first config; bad options and misuse are errors', async (t) => {
  const dir = mount(t, { storageClassMap: encrypted('a', '/mnt/a', '  volumeMode: Block\n') });
  const reloader = new ConfigReloader(dir, recorder().options);
  const error = await failure(() => reloader.start());
  t.ok(error instanceof ConfigError);
  t.match(error.message, /dm-crypt\/LUKS/);
  t.throws(() => reloader.current(), /before start\(\)/);
  t.throws(() => new ConfigReloader(dir, { ...recorder().options, periodMs: 0 }), TypeError);
  const ok = new ConfigReloader(mount(t, {}), recorder().options);
  t.teardown(() => ok.stop());
  await ok.start();
  await t.rejects(ok.start(), /already called/);
});

t.test('reloader: a ConfigMap update done the way kubelet does it is picked up by the period', async (t) => {
  const dir = mount(t, { storageClassMap: encrypted('a', '/mnt/a') });
  // Settled by the first outcome either way, so a rejection fails the test instead of hanging it.
  let settle: (outcome: LoadedConfig | ConfigError) => void = () => {};
  const outcome = new Promise<LoadedConfig | ConfigError>((resolve) => (settle = resolve));
  const reloader = new ConfigReloader(dir, { periodMs: 20, onChange: settle, onRejected: settle });
  t.teardown(() => reloader.stop());
  await reloader.start();
  updateConfigMapMount(dir, { storageClassMap: encrypted('a', '/mnt/a'), useNodeNameOnly: 'true', setPVOwnerRef: 'yes' });
  const next = await outcome;
  if (next instanceof ConfigError) throw next;
  t.equal(next.config.useNodeNameOnly, true, 'a key added by the update is read');
  t.equal(next.config.setPVOwnerRef, true);
  t.equal(reloader.current(), next);
});

t.test('reloader: mid-update (after the ..data switch, before the old links go) the new generation is read whole', async (t) => {
  const dir = mount(t, { storageClassMap: encrypted('a', '/mnt/a'), labelsForPV: 'old: "yes"\n' });
  const r = recorder();
  const reloader = new ConfigReloader(dir, r.options);
  t.teardown(() => reloader.stop());
  await reloader.start();
  const finish = updateConfigMapMount(dir, { storageClassMap: encrypted('b', '/mnt/b') }, { stopAfterSwap: true });
  t.equal(await reloader.reloadNow(), 'applied');
  const mid = reloader.current();
  t.same(
    mid.config.classes.map((c) => c.className),
    ['b'],
    'the new storageClassMap, not the old',
  );
  t.same(mid.config.labelsForPV, {}, 'the removed key is not read from the old generation');
  warningAt(t, mid.warnings, 'labelsForPV', '', /gone or a symbolic link to nothing/);
  finish();
  t.equal(await reloader.reloadNow(), 'unchanged', 'the finished update is the same content');
});

t.test('reloader: a callback that throws goes to onError, and the period goes on', async (t) => {
  const dir = mount(t, { storageClassMap: encrypted('a', '/mnt/a') });
  const errors: unknown[] = [];
  let resolveError: () => void = () => {};
  const failed = new Promise<void>((resolve) => (resolveError = resolve));
  let calls = 0;
  let resolveSecond: () => void = () => {};
  let rejectAll: (error: ConfigError) => void = () => {};
  const second = new Promise<void>((resolve, reject) => {
    resolveSecond = resolve;
    rejectAll = reject;
  });
  second.catch(() => {}); // awaited below; a rejection before then must not be unhandled
  const reloader = new ConfigReloader(dir, {
    periodMs: 20,
    onChange: () => {
      calls++;
      if (calls === 1) throw new Error('a bug in the caller');
      resolveSecond();
    },
    onRejected: (e) => {
      rejectAll(e);
      resolveError();
    },
    onError: (error) => {
      errors.push(error);
      resolveError();
    },
  });
  t.teardown(() => reloader.stop());
  await reloader.start();
  updateConfigMapMount(dir, { storageClassMap: encrypted('a', '/mnt/a'), useNodeNameOnly: 'true' });
  await failed;
  t.match(errors[0], { message: 'a bug in the caller' }, 'the error reached onError');
  updateConfigMapMount(dir, { storageClassMap: encrypted('a', '/mnt/a'), useNodeNameOnly: 'false' });
  await second;
  t.equal(calls, 2, 'the next change still arrives');
});

t.test('reloader: after stop(), a reload calls back nothing', async (t) => {
  const dir = mount(t, { storageClassMap: encrypted('a', '/mnt/a') });
  const r = recorder();
  const reloader = new ConfigReloader(dir, r.options);
  const first = await reloader.start();
  reloader.stop();
  updateConfigMapMount(dir, { storageClassMap: encrypted('a', '/mnt/a'), useNodeNameOnly: 'true' });
  await reloader.reloadNow();
  updateConfigMapMount(dir, { storageClassMap: encrypted('a', 'bad') });
  await reloader.reloadNow();
  t.same([r.changes.length, r.rejections.length], [0, 0]);
  t.equal(reloader.current(), first);
});
