// Upstream compatibility: the example ConfigMaps of
// kubernetes-sigs/sig-storage-local-static-provisioner (its docs, its
// example deployment, its Helm chart as rendered with the default values
// and with every option, its generated chart examples, its own config test
// data), each with an fscrypt: block added to its classes, load unchanged:
// each is written as a ConfigMap mount directory and must give exactly the
// expected config, with no warning but the expected ones (keys we do not
// use, classes we leave to upstream). Block-mode examples are refused with
// the dm-crypt/LUKS pointer, and load once their fscrypt: block is removed.
// The fixtures (test/fixtures/lsp-configs/) name their upstream file and
// commit (6cbe253cb2ef8245c84801060da3b37335ca78bf).
import { mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t, { type Test } from 'tap';
import { ConfigError, formatWarning, loadConfig, type AgentConfig, type ClassConfig, type LoadedConfig } from '../../lib/agent/config/index.js';
import { readConfigMapFixture, writeConfigMapMount } from '../fixtures/agent/configmap-mount.js';
import { failure } from '../fixtures/helpers.js';
import { scratchDir } from '../fixtures/system/scratch-fs.js';

const FIXTURES = fileURLToPath(new URL('../fixtures/lsp-configs/', import.meta.url));
const KEK = 'file:/etc/fscrypt-local/keys/kek';

const DEFAULTS: Omit<AgentConfig, 'classes'> = {
  nodeLabelsForPV: [],
  labelsForPV: {},
  useNodeNameOnly: false,
  setPVOwnerRef: false,
  minResyncPeriodMs: 300_000,
  removeNodeNotReadyTaint: false,
  notReadyTaintKey: 'sig-storage-local-static-provisioner/agent-not-ready',
};

function fsClass(className: string, dir: string, extra: Partial<ClassConfig> = {}): ClassConfig {
  return {
    className,
    hostDir: dir,
    mountDir: dir,
    namePatterns: ['*'],
    volumeMode: 'Filesystem',
    accessMode: 'ReadWriteOnce',
    selector: [],
    fscrypt: { keySource: { kind: 'file', path: '/etc/fscrypt-local/keys/kek' }, keySourceText: KEK },
    ...extra,
  };
}

/** Each expected warning as `file: key: /message/`. */
type Expected = { config: AgentConfig; warnings: [file: string, key: string, message: RegExp][] };

const UNUSED_CLEANER = /^unused: a block-only key/;

const LOADS: Record<string, Expected> = {
  'chart-default-values': {
    config: { ...DEFAULTS, classes: [fsClass('fast-disks', '/mnt/fast-disks', { fsType: 'ext4' })] },
    warnings: [['storageClassMap', 'fast-disks.blockCleanerCommand', UNUSED_CLEANER]],
  },
  'chart-all-options': {
    config: {
      classes: [
        fsClass('fast-disks', '/mnt/fast-disks', {
          mountDir: '/mnt/provisioner/fast-disks',
          namePatterns: ['nvm*', 'sdb*'],
          fsType: 'ext4',
          accessMode: 'ReadWriteOncePod',
          selector: [{ matchExpressions: [{ key: 'kubernetes.io/hostname', operator: 'In', values: ['otherNode1'] }] }],
        }),
      ],
      nodeLabelsForPV: ['failure-domain.beta.kubernetes.io/zone', 'failure-domain.beta.kubernetes.io/region'],
      labelsForPV: { 'pv-labels': 'can-be-selected' },
      useNodeNameOnly: true,
      setPVOwnerRef: true,
      minResyncPeriodMs: 3_600_000,
      removeNodeNotReadyTaint: true,
      notReadyTaintKey: 'sig-storage-local-static-provisioner/agent-not-ready',
    },
    warnings: [
      ['useJobForCleaning', '', UNUSED_CLEANER],
      ['jobTolerations', '', UNUSED_CLEANER],
      ['storageClassMap', 'local-storage', /has no fscrypt: block: ignored/],
      ['storageClassMap', 'fast-disks.selector', /widens the PVs' node affinity/],
    ],
  },
  'chart-baremetal-default-storage': {
    config: { ...DEFAULTS, classes: [fsClass('local-storage', '/mnt/disks')] },
    warnings: [],
  },
  'chart-gce-retain': {
    config: {
      ...DEFAULTS,
      useNodeNameOnly: true,
      classes: [
        fsClass('local-nvme', '/mnt/disks/by-uuid/google-local-ssds-nvme-fs', {
          fscrypt: { keySource: { kind: 'kms', socket: '/run/fscrypt-local/kms.sock' }, keySourceText: 'kms:unix:///run/fscrypt-local/kms.sock' },
        }),
        fsClass('local-scsi', '/mnt/disks/by-uuid/google-local-ssds-scsi-fs'),
      ],
    },
    warnings: [],
  },
  'chart-eks-nvme-ssd': {
    config: {
      ...DEFAULTS,
      classes: [
        fsClass('nvme-ssd', '/dev/disk/kubernetes', {
          fscrypt: { keySource: { kind: 'passphrase', path: '/etc/fscrypt-local/keys/passphrase' }, keySourceText: 'passphrase:/etc/fscrypt-local/keys/passphrase' },
        }),
      ],
    },
    warnings: [],
  },
  'deployment-default-example': {
    config: { ...DEFAULTS, classes: [fsClass('fast-disks', '/mnt/fast-disks', { fsType: 'ext4' })] },
    warnings: [['storageClassMap', 'fast-disks.blockCleanerCommand', UNUSED_CLEANER]],
  },
  'docs-provisioner': {
    config: {
      ...DEFAULTS,
      nodeLabelsForPV: ['kubernetes.io/hostname'],
      labelsForPV: { foo: 'bar' },
      classes: [fsClass('fast-disks', '/mnt/fast-disks', { fsType: 'ext4' })],
    },
    warnings: [
      ['useAlphaAPI', '', /^unused: fscrypt-local always writes spec\.nodeAffinity/],
      ['useJobForCleaning', '', UNUSED_CLEANER],
      ['storageClassMap', 'fast-disks.blockCleanerCommand', UNUSED_CLEANER],
    ],
  },
  'unit-test-selector': {
    config: {
      ...DEFAULTS,
      minResyncPeriodMs: 90 * 60_000,
      classes: [fsClass('local-storage', '/mnt/disks', { selector: [{ matchExpressions: [{ key: 'kubernetes.io/hostname', operator: 'In', values: ['otherNode1'] }] }] })],
    },
    warnings: [
      ['useAlphaAPI', '', /^unused/],
      ['storageClassMap', 'local-storage.selector', /widens/],
    ],
  },
};

/** Block-mode examples: refused with fscrypt; without it, what the rest of the ConfigMap gives. */
const BLOCK: Record<string, { config: Partial<AgentConfig>; warnings: [string, string, RegExp][] }> = {
  'chart-baremetal-cleanbyjobs': { config: {}, warnings: [['useJobForCleaning', '', UNUSED_CLEANER]] },
  'chart-baremetal-tolerations': { config: {}, warnings: [['jobTolerations', '', UNUSED_CLEANER]] },
  'chart-baremetal-resyncperiod': { config: { minResyncPeriodMs: 3_600_000 }, warnings: [] },
};

function mount(t: Test, data: Record<string, string>): string {
  const dir = join(scratchDir(t), 'config');
  mkdirSync(dir);
  writeConfigMapMount(dir, data);
  return dir;
}

function sameWarnings(t: Test, loaded: LoadedConfig, expected: [string, string, RegExp][]): void {
  const got = loaded.warnings.map(formatWarning);
  t.equal(loaded.warnings.length, expected.length, `exactly the expected warnings (got: ${got.join(' | ') || 'none'})`);
  for (const [file, key, message] of expected) {
    t.ok(
      loaded.warnings.some((w) => w.file === file && w.key === key && message.test(w.message)),
      `warned: ${file}: ${key} ${message}`,
    );
  }
}

t.test('every fixture has an expectation', async (t) => {
  const files = readdirSync(FIXTURES)
    .filter((f) => f.endsWith('.yaml'))
    .map((f) => f.slice(0, -'.yaml'.length))
    .sort();
  t.same(files, [...Object.keys(LOADS), ...Object.keys(BLOCK)].sort());
});

for (const [name, expected] of Object.entries(LOADS)) {
  t.test(`${name}: loads unchanged`, async (t) => {
    const data = readConfigMapFixture(join(FIXTURES, `${name}.yaml`));
    t.match(data.storageClassMap, /fscrypt:/, 'the fixture has an fscrypt: block');
    const loaded = await loadConfig(mount(t, data));
    t.same(loaded.config, expected.config);
    sameWarnings(t, loaded, expected.warnings);
  });
}

for (const [name, expected] of Object.entries(BLOCK)) {
  t.test(`${name}: Block with fscrypt is refused with the dm-crypt/LUKS pointer; without fscrypt it is left to upstream`, async (t) => {
    const data = readConfigMapFixture(join(FIXTURES, `${name}.yaml`));
    const error: unknown = await failure(() => loadConfig(mount(t, data)));
    if (!(error instanceof ConfigError)) throw new Error(`expected a ConfigError, got ${String(error)}`);
    t.match(error.problems, [{ file: 'storageClassMap', key: 'local-storage.volumeMode', why: /for block volumes use dm-crypt\/LUKS/ }]);
    t.equal(error.problems.length, 1, 'the only problem');

    const upstreamOnly = { ...data, storageClassMap: data.storageClassMap!.replace(/^ *fscrypt:\n *keySource: .*\n/m, '') };
    t.notMatch(upstreamOnly.storageClassMap, /fscrypt/);
    const loaded = await loadConfig(mount(t, upstreamOnly));
    t.same(loaded.config, { ...DEFAULTS, ...expected.config, classes: [] });
    sameWarnings(t, loaded, [...expected.warnings, ['storageClassMap', 'local-storage', /has no fscrypt: block: ignored/], ['storageClassMap', '', /no class has an fscrypt: block/]]);
  });
}
