// The published package works for an outside user: `npm pack`, install the
// tarball into a fresh project (the addon builds on install), then
// `import { addKey } from 'fscrypt-local'` adds a key on a real filesystem.
// The install needs the dependencies from the npm cache or, when the cache
// lacks them, from the registry; with neither it is skipped (optional.ts).
import { execFileSync, spawnSync } from 'node:child_process';
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { needs, npmRegistry } from '../fixtures/system/optional.js';
import { ext4, scratchDir } from '../fixtures/system/scratch-fs.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const work = scratchDir(t, 'fscrypt-local-pack-');

const npmEnv = { ...process.env, npm_config_audit: 'false', npm_config_fund: 'false' };
const npm = (args: string[], cwd: string): string =>
  execFileSync('npm', args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], env: npmEnv });

t.test('npm pack contains the sources the addon builds from, and the compiled library', async (t) => {
  const [packed] = JSON.parse(npm(['pack', '--json', '--pack-destination', work], root)) as { files: { path: string }[] }[];
  const files = packed!.files.map((f) => f.path);
  for (const expected of ['binding.gyp', 'native/addon.cc', 'native/fscrypt_uapi.h', 'dist/index.js', 'dist/index.d.ts', 'dist/agent/csi/csi.proto', 'package.json']) {
    t.ok(files.includes(expected), `contains ${expected}`);
  }
  t.notOk(files.some((f) => f.startsWith('build/') || f.startsWith('test/') || f.startsWith('lib/')), 'no build output, tests or TS sources');
});

t.test('installed from the tarball into a fresh project, the package builds its addon and adds a key', async (t) => {
  const tarball = readdirSync(work).find((f) => f.endsWith('.tgz'));
  if (tarball === undefined) {
    t.fail('no tarball: the npm pack test failed');
    return;
  }
  const project = join(work, 'project');
  execFileSync('mkdir', [project]);
  writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', type: 'module', private: true }));
  // From the cache alone first: no network needed when it is warm.
  const offline = spawnSync('npm', ['install', '--offline', join(work, tarball)], { cwd: project, encoding: 'utf8', env: npmEnv });
  if (offline.status !== 0) {
    if (!/\bENOTCACHED\b/.test(offline.stderr)) {
      t.fail(`npm install --offline failed, and not for a cold cache: ${offline.stderr}`);
      return;
    }
    if (!needs(t, npmRegistry())) return;
    npm(['install', '--prefer-offline', join(work, tarball)], project);
  }

  const fs = ext4(t);
  writeFileSync(
    join(project, 'use.mjs'),
    `import { addKey, keyIdentifier, getKeyStatus, FscryptError } from 'fscrypt-local';
const key = Buffer.alloc(64, 7);
const id = await addKey(process.argv[2], key);
const status = await getKeyStatus(process.argv[2], id);
let invalid;
try { await addKey(process.argv[2], Buffer.alloc(3)); } catch (e) { invalid = e instanceof FscryptError && e.code; }
console.log(JSON.stringify({ same: id === keyIdentifier(key), status: status.status, invalid }));
`,
  );
  const out = execFileSync(process.execPath, ['use.mjs', fs.mountpoint], { cwd: project, encoding: 'utf8' });
  t.same(JSON.parse(out), { same: true, status: 'present', invalid: 'ERR_INVALID_ARG' });

  // The CSI node service loads its .proto from beside its compiled code.
  const csi = execFileSync(
    process.execPath,
    ['--input-type=module', '-e', "const m = await import('./node_modules/fscrypt-local/dist/agent/csi/proto.js'); const { Identity, Node } = m.csiPackage(); console.log(JSON.stringify([...Object.keys(Identity.service), ...Object.keys(Node.service)]))"],
    { cwd: project, encoding: 'utf8' },
  );
  t.same(JSON.parse(csi), ['GetPluginInfo', 'GetPluginCapabilities', 'Probe', 'NodePublishVolume', 'NodeUnpublishVolume', 'NodeGetVolumeStats', 'NodeGetCapabilities', 'NodeGetInfo']);
});
