// Metadata directories every local user can write (issue 7 #7). A stock
// `fscrypt setup --all-users` makes .fscrypt/protectors and .fscrypt/policies
// 01777, so any user may drop an entry there. One such file used to fail
// every listing, and with it init-slot ("no state but N protectors", or
// ERR_BAD_METADATA); entries not ours (another owner, not a regular file,
// a hard link from elsewhere) are now skipped with a warning, never opened,
// never moved, and never block anything.
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync } from 'node:fs';
import { link, lstat, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { newPolicyKey, SlotKeys, slotLayout, type KeysWarning } from '../../lib/keys/index.js';
import { initSlot, openSlotProtector } from '../../lib/volume/index.js';
import { buildCli, parseCliJson, runCli } from '../fixtures/cli.js';
import { kekFile, secretsDir } from '../fixtures/keys-helpers.js';
import { ext4 } from '../fixtures/system/scratch-fs.js';

const NOBODY = 65534;

/** Runs a shell script as nobody, as any local user could. */
function asNobody(script: string): void {
  const result = spawnSync('sh', ['-c', script], { uid: NOBODY, gid: NOBODY, encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`as nobody: ${result.stderr}`);
}

/** An encrypt-capable mount with .fscrypt as `fscrypt setup --all-users` makes it. */
function sharedSetup(t: Parameters<typeof ext4>[0] & object): { slot: string; protectors: string; policies: string } {
  const fs = ext4(t);
  chmodSync(join(fs.mountpoint, '..'), 0o755); // nobody must reach the mount
  const layout = slotLayout(fs.mountpoint);
  mkdirSync(layout.fscryptDir, { mode: 0o755 });
  for (const dir of [layout.protectorsDir, layout.policiesDir]) {
    mkdirSync(dir);
    chmodSync(dir, 0o1777);
  }
  return { slot: fs.mountpoint, protectors: layout.protectorsDir, policies: layout.policiesDir };
}

/** Plants what another user could: a file, a FIFO, a symlink and a hard link, under metadata names. */
function plant(protectors: string, policies: string): string[] {
  const planted = [
    join(protectors, '0123456789abcdef'),
    join(protectors, 'fedcba9876543210'),
    join(protectors, '00000000000000aa'),
    join(protectors, '1111111111111111'),
    join(policies, 'ab'.repeat(16)),
    join(policies, 'cd'.repeat(16)),
  ];
  asNobody(
    [
      `printf 'not a protector' > ${planted[0]}`,
      `mkfifo ${planted[1]}`, // opening it without O_NONBLOCK would hang the reader
      `ln -s /etc/shadow ${planted[2]}`,
      `ln ${planted[0]} ${planted[3]}`, // protected_hardlinks lets a user link their own file
      `printf 'not a policy' > ${planted[4]}`,
      `mkdir ${planted[5]}`,
    ].join(' && '),
  );
  return planted;
}

async function fingerprint(paths: string[]): Promise<string[]> {
  return Promise.all(
    paths.map(async (p) => {
      const st = await lstat(p);
      return `${p} ${st.uid} ${st.mode.toString(8)} ${st.nlink} ${st.isFile() ? (await readFile(p)).toString('hex') : ''}`;
    }),
  );
}

t.test('another user\'s entries in world-writable protectors/ and policies/ do not block init-slot, and are never used', async (t) => {
  const { slot, protectors, policies } = sharedSetup(t);
  const planted = plant(protectors, policies);
  const before = await fingerprint(planted);
  const dir = await secretsDir(t);
  const kek = await kekFile(dir);

  // lib/volume's initSlot makes its SlotKeys without a handler: process warnings.
  const processWarnings: string[] = [];
  const listener = (w: Error): void => {
    if (w.name === 'FscryptLocalWarning') processWarnings.push(w.message);
  };
  process.on('warning', listener);
  t.teardown(() => {
    process.off('warning', listener);
  });
  const info = await initSlot(slot, kek.spec);
  t.match(info, { root: slot, created: true, protector: /^[0-9a-f]{16}$/ }, 'init-slot works');
  t.same((await initSlot(slot, kek.spec)).created, false, 'and again: idempotent');
  await new Promise((resolve) => setImmediate(resolve));
  t.ok(processWarnings.some((m) => m.includes(planted[0]!) && /owned by uid 65534/.test(m)), 'a warning names the skipped file');

  const warnings: KeysWarning[] = [];
  const keys = new SlotKeys(slot, { onWarning: (w) => warnings.push(w) });
  t.same((await keys.listProtectors()).map((p) => p.descriptor), [info.protector], 'only our protector is listed');
  const ignored = warnings.filter((w) => w.code === 'FSCRYPT_LOCAL_IGNORED_ENTRY').map((w) => w.path);
  t.same(ignored.sort(), planted.slice(0, 4).sort(), 'each planted protector entry is reported');
  t.match(warnings.find((w) => w.path === planted[1]), { message: /not a regular file \(owned by uid 65534\).*never reads it/ });
  t.match(warnings.find((w) => w.path === planted[2]), { message: /symbolic link owned by uid 65534/ });

  // Opening without a descriptor (exactly one protector of the kind), adding
  // and listing policies, and erasing all still work.
  const open = await keys.openProtector(kek.spec);
  t.equal(open.descriptor, info.protector);
  const key = newPolicyKey();
  const { identifier } = await open.addPolicy(key);
  warnings.length = 0;
  t.same((await keys.listPolicies()).map((p) => p.identifier), [identifier], 'only our policy is listed');
  t.same(warnings.map((w) => w.path).sort(), planted.slice(4).sort(), 'the planted policy entries are reported');
  t.notOk(await keys.hasPolicy('ab'.repeat(16)), 'another user\'s file is not a policy of the slot');
  t.match(await (async () => keys.readPolicy('ab'.repeat(16)).catch((e: unknown) => e))(), { code: 'ERR_BAD_METADATA', message: /owned by uid 65534/ }, 'and is never read as one');
  await keys.destroyPolicy('ab'.repeat(16)); // a planted name: nothing to erase, no failure
  await keys.destroyPolicy('cd'.repeat(16));
  await keys.destroyPolicy(identifier);
  t.notOk(await keys.hasPolicy(identifier));
  open.close();
  (await openSlotProtector(slot, kek.spec)).close();

  t.same(await fingerprint(planted), before, 'the planted entries are untouched');
  t.same(await readdir(slotLayout(slot).eraseDir), [], 'none was moved into erase/');
});

t.test('a hard link to a root file under a protector name is skipped, not refused as damaged metadata', async (t) => {
  // Possible for other users only with fs.protected_hardlinks=0 (Debian's
  // default is 1), so made as root here: a root-owned file that is not
  // metadata, appearing under a descriptor's name.
  const { slot, protectors } = sharedSetup(t);
  const dir = await secretsDir(t);
  const kek = await kekFile(dir);
  const keys = new SlotKeys(slot, { onWarning: () => {} });
  const { descriptor } = await keys.createProtector(kek.spec, { name: 'p' });
  const elsewhere = join(slot, 'unrelated-root-file');
  await writeFile(elsewhere, 'root data', { mode: 0o600 });
  await link(elsewhere, join(protectors, '2222222222222222'));
  t.same((await keys.listProtectors()).map((p) => p.descriptor), [descriptor]);
  (await keys.openProtector(kek.spec)).close();
});

t.test('the CLI: init-slot on such a slot succeeds and warns on stderr; --json stays parseable', async (t) => {
  const cli = buildCli(t);
  const { slot, protectors, policies } = sharedSetup(t);
  plant(protectors, policies);
  const dir = await secretsDir(t);
  const kek = await kekFile(dir);
  const result = runCli(cli, ['init-slot', slot, '--key-source', `file:${kek.spec.path}`, '--json']);
  t.equal(result.code, 0, result.stderr);
  t.match(parseCliJson(result), { ok: true, slot, created: true });
  t.match(result.stderr, /FscryptLocalWarning: ignored '.*0123456789abcdef': it is owned by uid 65534/);
});
