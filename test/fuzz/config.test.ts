// Fuzzing the agent config (lib/agent/config: one file per ConfigMap key,
// YAML 1.1 as upstream reads it, then the schema). Properties:
//  - arbitrary YAML documents (any value fast-check builds, written out by
//    the yaml package) under any top-level key, and raw byte mutations of
//    upstream's example ConfigMaps (test/fixtures/lsp-configs), give either
//    a config or a ConfigError whose every problem names a file of the
//    directory (or none, for an absent key), a key path and a reason:
//    never another exception;
//  - a valid config generated from the schema's rules loads to exactly the
//    meaning it was generated with (defaults applied, paths cleaned).
// Replaying a failure: docs/testing.md, "Fuzzing".
import { readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import t from 'tap';
import { stringify } from 'yaml';
import { ConfigError, configFromSnapshot, DEFAULT_MIN_RESYNC_PERIOD_MS, DEFAULT_NOT_READY_TAINT_KEY, type AgentConfig, type ClassConfig, type ConfigFile } from '../../lib/agent/config/index.js';
import { TOP_LEVEL_KEYS } from '../../lib/agent/config/schema.js';
import { readConfigMapFixture } from '../fixtures/agent/configmap-mount.js';
import { fuzz, mutatedText } from '../fixtures/campaign/fuzz.js';

const FILE = 'fuzz/config.test.ts';
const FIXTURES = fileURLToPath(new URL('../fixtures/lsp-configs/', import.meta.url));

function snapshotOf(files: ConfigFile[]) {
  const sorted = [...files].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return { dir: '/fuzz/config', files: sorted, digest: 'fuzz', warnings: [] };
}

/** A config, or the ConfigError checked to name a file of the directory, a key path and a reason for each problem. */
function loadOrRefuse(files: ConfigFile[]): AgentConfig | ConfigError {
  try {
    return configFromSnapshot(snapshotOf(files)).config;
  } catch (error) {
    if (!(error instanceof ConfigError) || error.code !== 'ERR_INVALID_ARG') throw error;
    const names = new Set(files.map((f) => f.name));
    for (const p of error.problems) {
      if (p.file !== undefined && !names.has(p.file)) throw new Error(`a problem names a file that is not there: ${JSON.stringify(p)}`);
      if (typeof p.key !== 'string' || typeof p.why !== 'string' || p.why === '') throw new Error(`a problem without a key path or reason: ${JSON.stringify(p)}`);
      if (p.line !== undefined && !(Number.isInteger(p.line) && p.line >= 1)) throw new Error(`a problem with line ${p.line}`);
    }
    return error;
  }
}

/** YAML text for any value; what the yaml package cannot write is written as its JSON. */
function yamlOf(value: unknown): string {
  try {
    return stringify(value, { version: '1.1' }) ?? '';
  } catch {
    return JSON.stringify(value) ?? '';
  }
}

const keyName = fc.oneof(
  { arbitrary: fc.constantFrom(...TOP_LEVEL_KEYS), weight: 4 },
  fc.constantFrom(...TOP_LEVEL_KEYS).map((k) => k.toUpperCase()),
  fc.string({ minLength: 1, maxLength: 12 }),
);

// Values that look like a class, so the schema's deeper rules are reached too.
const classLike = fc.record(
  {
    hostDir: fc.oneof(fc.constantFrom('/mnt/a', '/mnt/a/', '/', 'relative', '/mnt/../x', ''), fc.anything()),
    mountDir: fc.oneof(fc.constantFrom('/mnt/a', '/m//b'), fc.anything()),
    volumeMode: fc.oneof(fc.constantFrom('Filesystem', 'Block', 'filesystem'), fc.anything()),
    accessMode: fc.oneof(fc.constantFrom('ReadWriteOnce', 'ReadWriteMany', 'ReadWriteOncePod'), fc.anything()),
    namePattern: fc.oneof(fc.constantFrom('*', 'ssd*,nvme?', '[', 'a\\', '[a-]'), fc.anything()),
    selector: fc.oneof(fc.constant([{ matchExpressions: [{ key: 'k', operator: 'In', values: ['v'] }] }]), fc.anything()),
    fscrypt: fc.oneof(fc.constant({ keySource: 'file:/etc/k' }), fc.record({ keySource: fc.oneof(fc.constantFrom('kms:/run/kms.sock', 'passphrase:rel', 'nope:x', ''), fc.anything()) }), fc.anything()),
  },
  { requiredKeys: [] },
);
const anyValue = fc.oneof(fc.anything({ maxDepth: 3 }), fc.dictionary(fc.string({ maxLength: 10 }), classLike, { maxKeys: 3 }), fc.jsonValue({ maxDepth: 3 }));

t.test('arbitrary YAML documents under any key: a config, or a ConfigError naming file, key and why', async (t) => {
  const counts = { loaded: 0, refused: 0 };
  const arb = fc.uniqueArray(fc.record({ name: keyName, value: anyValue }), { minLength: 1, maxLength: 4, selector: (f) => f.name });
  await fuzz(t, { parser: 'config (arbitrary YAML documents)', file: FILE, runs: 1000 }, arb, (entries) => {
    const outcome = loadOrRefuse(entries.map(({ name, value }) => ({ name, text: yamlOf(value) })));
    if (outcome instanceof ConfigError) counts.refused++;
    else counts.loaded++;
  });
  t.ok(counts.refused > 0 && counts.loaded > 0, `loaded ${counts.loaded}, refused ${counts.refused}`);
});

t.test("mutations of upstream's example ConfigMaps: a config, or a ConfigError naming file, key and why", async (t) => {
  const examples = readdirSync(FIXTURES)
    .filter((f) => f.endsWith('.yaml'))
    .map((f) => Object.entries(readConfigMapFixture(`${FIXTURES}${f}`)).map(([name, text]) => ({ name, text })));
  t.ok(examples.length >= 10, `${examples.length} example ConfigMaps`);
  const arb = fc
    .record({ example: fc.nat({ max: examples.length - 1 }), which: fc.nat(), edits: fc.nat({ max: 1 }) })
    .chain(({ example, which, edits }) => {
      const files = examples[example]!;
      const at = which % files.length;
      return mutatedText(fc.constant(files[at]!.text), 3 + edits * 5).map((text) => files.map((f, i) => (i === at ? { name: f.name, text } : f)));
    });
  await fuzz(t, { parser: 'config (mutated upstream ConfigMaps)', file: FILE, runs: 2000 }, arb, (files) => {
    loadOrRefuse(files);
  });
});

// ---------------------------------------------------------------- valid configs

const dnsLabel = fc.stringMatching(/^[a-z0-9]([-a-z0-9]{0,8}[a-z0-9])?$/);
const labelName = fc.stringMatching(/^[A-Za-z0-9]([-A-Za-z0-9_.]{0,10}[A-Za-z0-9])?$/);
const labelKey = fc.tuple(fc.option(fc.array(dnsLabel, { minLength: 1, maxLength: 3 }).map((l) => l.join('.')), { nil: undefined }), labelName).map(([prefix, name]) => (prefix === undefined ? name : `${prefix}/${name}`));
const glob = fc.constantFrom('*', 'ssd*', 'nvme?', 'disk[0-9]', 'vol-[^x]*', 'a\\*b');
const DURATIONS: [string, number][] = [['5m0s', 300_000], ['1h30m', 5_400_000], ['300ms', 300], ['0', 0], ['1.5h', 5_400_000], ['2h45m10.5s', 9_910_500]];

const classArb = fc.record(
  {
    hostDirStyle: fc.constantFrom('plain', 'trailing', 'double'),
    mountDir: fc.boolean(),
    accessMode: fc.constantFrom('ReadWriteOnce', 'ReadWriteOncePod'),
    volumeMode: fc.constant('Filesystem'),
    fsType: fc.constantFrom('ext4', 'xfs'),
    namePatterns: fc.array(glob, { minLength: 1, maxLength: 3 }),
    selector: fc.array(fc.record({ matchExpressions: fc.array(fc.record({ key: labelKey, operator: fc.constant('In'), values: fc.array(labelName, { minLength: 1, maxLength: 2 }) }), { minLength: 1, maxLength: 2 }) }), { minLength: 1, maxLength: 2 }),
    keyPath: fc.array(dnsLabel, { minLength: 1, maxLength: 3 }).map((p) => `/etc/${p.join('/')}`),
    keyKind: fc.constantFrom('file', 'passphrase'),
  },
  { requiredKeys: ['hostDirStyle', 'mountDir', 'keyPath', 'keyKind'] },
);

const configArb = fc.record(
  {
    classes: fc.uniqueArray(fc.tuple(fc.array(dnsLabel, { minLength: 1, maxLength: 2 }).map((l) => l.join('.')), classArb), { minLength: 1, maxLength: 3, selector: ([name]) => name }),
    nodeLabelsForPV: fc.array(labelKey, { maxLength: 3 }),
    labelsForPV: fc.dictionary(labelKey, fc.oneof(labelName, fc.constant('')), { maxKeys: 3 }),
    useNodeNameOnly: fc.boolean(),
    setPVOwnerRef: fc.boolean(),
    minResyncPeriod: fc.constantFrom(...DURATIONS),
    removeNodeNotReadyTaint: fc.boolean(),
    provisionerNotReadyNodeTaintKey: labelKey,
  },
  { requiredKeys: ['classes'] },
);
type Generated = typeof configArb extends fc.Arbitrary<infer T> ? T : never;

function filesOf(g: Generated): ConfigFile[] {
  const classMap: Record<string, unknown> = {};
  for (const [name, c] of g.classes) {
    const hostDir = c.hostDirStyle === 'plain' ? `/mnt/${name}` : c.hostDirStyle === 'trailing' ? `/mnt/${name}/` : `/mnt//${name}`;
    classMap[name] = {
      hostDir,
      ...(c.mountDir ? { mountDir: `/agent/${name}` } : {}),
      ...(c.accessMode === undefined ? {} : { accessMode: c.accessMode }),
      ...(c.volumeMode === undefined ? {} : { volumeMode: c.volumeMode }),
      ...(c.fsType === undefined ? {} : { fsType: c.fsType }),
      ...(c.namePatterns === undefined ? {} : { namePattern: c.namePatterns.join(',') }),
      ...(c.selector === undefined ? {} : { selector: c.selector }),
      fscrypt: { keySource: `${c.keyKind}:${c.keyPath}` },
    };
  }
  const files: ConfigFile[] = [{ name: 'storageClassMap', text: yamlOf(classMap) }];
  const put = (name: string, value: unknown): void => void (value === undefined || files.push({ name, text: yamlOf(value) }));
  put('nodeLabelsForPV', g.nodeLabelsForPV);
  put('labelsForPV', g.labelsForPV);
  put('useNodeNameOnly', g.useNodeNameOnly);
  put('setPVOwnerRef', g.setPVOwnerRef);
  put('minResyncPeriod', g.minResyncPeriod?.[0]);
  put('removeNodeNotReadyTaint', g.removeNodeNotReadyTaint);
  put('provisionerNotReadyNodeTaintKey', g.provisionerNotReadyNodeTaintKey);
  return files;
}

function meaningOf(g: Generated): AgentConfig {
  const classes: ClassConfig[] = g.classes
    .map(([name, c]): ClassConfig => {
      const config: ClassConfig = {
        className: name,
        hostDir: `/mnt/${name}`,
        mountDir: c.mountDir ? `/agent/${name}` : `/mnt/${name}`,
        namePatterns: c.namePatterns ?? ['*'],
        volumeMode: 'Filesystem',
        accessMode: c.accessMode ?? 'ReadWriteOnce',
        selector: c.selector ?? [],
        fscrypt: { keySource: { kind: c.keyKind, path: c.keyPath }, keySourceText: `${c.keyKind}:${c.keyPath}` },
      };
      if (c.fsType !== undefined) config.fsType = c.fsType;
      return config;
    })
    .sort((a, b) => (a.className < b.className ? -1 : 1));
  return {
    classes,
    nodeLabelsForPV: g.nodeLabelsForPV ?? [],
    labelsForPV: g.labelsForPV ?? {},
    useNodeNameOnly: g.useNodeNameOnly ?? false,
    setPVOwnerRef: g.setPVOwnerRef ?? false,
    minResyncPeriodMs: g.minResyncPeriod?.[1] ?? DEFAULT_MIN_RESYNC_PERIOD_MS,
    removeNodeNotReadyTaint: g.removeNodeNotReadyTaint ?? false,
    notReadyTaintKey: g.provisionerNotReadyNodeTaintKey ?? DEFAULT_NOT_READY_TAINT_KEY,
  };
}

function canonical(value: unknown): string {
  const plain = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(plain);
    if (v !== null && typeof v === 'object') return Object.fromEntries(Object.keys(v).sort().map((k) => [k, plain((v as Record<string, unknown>)[k])]));
    return v;
  };
  return JSON.stringify(plain(value));
}

t.test('a valid config generated from the rules loads to exactly the meaning it was made with', async (t) => {
  await fuzz(t, { parser: 'config (valid generated configs)', file: FILE, runs: 1000 }, configArb, (g) => {
    const outcome = loadOrRefuse(filesOf(g));
    if (outcome instanceof ConfigError) throw new Error(`refused: ${outcome.message}`);
    if (canonical(outcome) !== canonical(meaningOf(g))) throw new Error(`loaded ${canonical(outcome)}\nexpected ${canonical(meaningOf(g))}`);
  });
});
