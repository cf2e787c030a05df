// Interoperability with the stock Debian `fscrypt` tool (v0.3.3), both ways:
// metadata this library writes is unlocked by `fscrypt unlock`, and
// directories `fscrypt encrypt` made are unlocked by this library. Each test
// has its own loop ext4 filesystem and its own fscrypt.conf (FSCRYPT_CONF),
// written by writeFscryptConf(); /etc/fscrypt.conf is never touched.
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { addKey, defaultPolicy, getKeyStatus, getPolicy, removeKey, setPolicy } from '../../lib/kernel/index.js';
import { newPolicyKey, SlotKeys, wipe, writeFscryptConf, type KeySourceSpec, type OpenProtector } from '../../lib/keys/index.js';
import { rejection } from '../fixtures/helpers.js';
import { FAST_COSTS, kekFile, passphraseFile, runFscrypt, secretsDir } from '../fixtures/keys-helpers.js';
import { startFakeKms } from '../fixtures/kms-plugin.js';
import { FSCRYPT, needs } from '../fixtures/system/optional.js';
import { ext4 } from '../fixtures/system/scratch-fs.js';

let secrets: string;
let conf: string;

t.before(async () => {
  secrets = await secretsDir(t);
  conf = join(secrets, 'fscrypt.conf');
  t.equal((await writeFscryptConf(conf)).action, 'written');
});

/** A volume directory encrypted with a new policy key stored under `open`; left locked. */
async function makeVolume(mnt: string, open: OpenProtector, name: string, content: string): Promise<{ dir: string; identifier: string }> {
  const key = newPolicyKey();
  try {
    const { identifier } = await open.addPolicy(key);
    t.equal(await addKey(mnt, key), identifier);
    const dir = join(mnt, name);
    await mkdir(dir);
    await setPolicy(dir, defaultPolicy(identifier));
    await writeFile(join(dir, 'secret.txt'), content);
    await removeKey(mnt, identifier, { allUsers: true });
    return { dir, identifier };
  } finally {
    wipe(key);
  }
}

/** Unlocks a directory `fscrypt encrypt` made, with this library only. */
async function unlockWithLibrary(mnt: string, dir: string, source: KeySourceSpec): Promise<string> {
  const policy = await getPolicy(dir);
  if (policy?.version !== 2) throw new Error('expected a v2 policy');
  const slot = new SlotKeys(mnt);
  const [descriptor] = (await slot.readPolicy(policy.identifier)).protectors;
  const open = await slot.openProtector(source, descriptor);
  const key = await open.unwrapPolicyKey(policy.identifier);
  try {
    return await addKey(mnt, key);
  } finally {
    wipe(key);
    open.close();
  }
}

t.test('a volume whose metadata this library wrote is unlocked by `fscrypt unlock --key=<kek file>`', async (t) => {
  if (!needs(t, FSCRYPT)) return;
  const { mountpoint: mnt } = ext4(t);
  const kek = await kekFile(secrets, 'lib-kek');
  const slot = new SlotKeys(mnt);
  const open = await slot.createAndOpenProtector(kek.spec, { name: 'break-glass' });
  const { dir, identifier } = await makeVolume(mnt, open, 'vol-1', 'written through fscrypt-local');
  open.close();
  t.equal((await getKeyStatus(mnt, identifier)).status, 'absent');
  t.notOk((await readdir(dir)).includes('secret.txt'), 'locked: names are encrypted');

  const status = await runFscrypt(conf, ['status', mnt]);
  t.equal(status.code, 0, status.stderr);
  t.match(status.stdout, new RegExp(`${identifier}\\s+No\\s+[0-9a-f]{16}`), 'the policy is listed, locked, with its protector');
  t.match(status.stdout, /raw key protector "break-glass"/);
  t.notMatch(status.stdout, /corrupt/, 'nothing in .fscrypt the tool cannot read');

  const wrong = await kekFile(secrets, 'not-the-kek');
  const refused = await runFscrypt(conf, ['unlock', dir, `--key=${wrong.spec.path}`, '--quiet']);
  t.not(refused.code, 0, 'a wrong KEK is refused by fscrypt too');

  const unlocked = await runFscrypt(conf, ['unlock', dir, `--key=${kek.spec.path}`, '--quiet']);
  t.equal(unlocked.code, 0, unlocked.stderr);
  t.equal(await readFile(join(dir, 'secret.txt'), 'utf8'), 'written through fscrypt-local');
  t.match((await runFscrypt(conf, ['status', dir])).stdout, /Unlocked: Yes/);
  t.equal((await runFscrypt(conf, ['lock', dir, '--quiet'])).code, 0);
  t.equal((await getKeyStatus(mnt, identifier)).status, 'absent');
});

t.test('a passphrase protector this library wrote is unlocked by `fscrypt unlock` with the passphrase', async (t) => {
  if (!needs(t, FSCRYPT)) return;
  const { mountpoint: mnt } = ext4(t);
  const spec = await passphraseFile(secrets, 'lib passphrase', 'lib-pass', FAST_COSTS);
  const open = await new SlotKeys(mnt).createAndOpenProtector(spec, { name: 'pw' });
  const { dir } = await makeVolume(mnt, open, 'vol-1', 'passphrase volume');
  open.close();
  t.match((await runFscrypt(conf, ['status', mnt])).stdout, /custom protector "pw"/);
  t.not((await runFscrypt(conf, ['unlock', dir, '--quiet'], 'lib passphrasE\n')).code, 0, 'a wrong passphrase is refused');
  const unlocked = await runFscrypt(conf, ['unlock', dir, '--quiet'], 'lib passphrase\n');
  t.equal(unlocked.code, 0, unlocked.stderr);
  t.equal(await readFile(join(dir, 'secret.txt'), 'utf8'), 'passphrase volume');
  await runFscrypt(conf, ['lock', dir, '--quiet']);
});

t.test('a directory `fscrypt encrypt --source=raw_key` made is unlocked by this library', async (t) => {
  if (!needs(t, FSCRYPT)) return;
  const { mountpoint: mnt } = ext4(t);
  t.equal((await runFscrypt(conf, ['setup', mnt, '--quiet'])).code, 0);
  const kek = await kekFile(secrets, 'tool-kek');
  const dir = join(mnt, 'made-by-fscrypt');
  await mkdir(dir);
  const made = await runFscrypt(conf, ['encrypt', dir, '--source=raw_key', '--name=tool-raw', `--key=${kek.spec.path}`, '--quiet']);
  t.equal(made.code, 0, made.stderr);
  await writeFile(join(dir, 'secret.txt'), 'made by the stock tool');
  t.equal((await runFscrypt(conf, ['lock', dir, '--quiet'])).code, 0);
  t.notOk((await readdir(dir)).includes('secret.txt'), 'locked');

  t.same((await new SlotKeys(mnt).listProtectors()).map((p) => [p.source, p.name]), [['raw_key', 'tool-raw']]);
  const wrong = await kekFile(secrets, 'tool-kek-wrong');
  t.match(await rejection(unlockWithLibrary(mnt, dir, wrong.spec)), { code: 'ERR_WRONG_KEY' });
  const identifier = await unlockWithLibrary(mnt, dir, kek.spec);
  t.match(await getPolicy(dir), { version: 2, identifier });
  t.equal(await readFile(join(dir, 'secret.txt'), 'utf8'), 'made by the stock tool');
  await removeKey(mnt, identifier, { allUsers: true });
});

t.test('a directory `fscrypt encrypt --source=custom_passphrase` made is unlocked by this library', async (t) => {
  if (!needs(t, FSCRYPT)) return;
  const { mountpoint: mnt } = ext4(t);
  t.equal((await runFscrypt(conf, ['setup', mnt, '--quiet'])).code, 0);
  const dir = join(mnt, 'made-by-fscrypt');
  await mkdir(dir);
  const made = await runFscrypt(conf, ['encrypt', dir, '--source=custom_passphrase', '--name=tool-pass', '--quiet'], 'tool passphrase\n');
  t.equal(made.code, 0, made.stderr);
  await writeFile(join(dir, 'secret.txt'), 'passphrase-protected by the stock tool');
  await runFscrypt(conf, ['lock', dir, '--quiet']);
  const [protector] = await new SlotKeys(mnt).listProtectors();
  t.match(protector, { source: 'custom_passphrase', name: 'tool-pass', costs: { time: 12, memory: 65536, parallelism: 1 } }, 'the tool used the costs from our fscrypt.conf');

  // Costs come from the protector: the spec's are ignored when opening.
  const spec = await passphraseFile(secrets, 'tool passphrase', 'tool-pass', undefined);
  const identifier = await unlockWithLibrary(mnt, dir, spec);
  t.equal(await readFile(join(dir, 'secret.txt'), 'utf8'), 'passphrase-protected by the stock tool');
  await removeKey(mnt, identifier, { allUsers: true });
});

t.test('after rotate(), `fscrypt unlock` takes the new KEK and refuses the old one', async (t) => {
  if (!needs(t, FSCRYPT)) return;
  const { mountpoint: mnt } = ext4(t);
  const oldKek = await kekFile(secrets, 'rot-old');
  const newKek = await kekFile(secrets, 'rot-new');
  const slot = new SlotKeys(mnt);
  const open = await slot.createAndOpenProtector(oldKek.spec, { name: 'rotating' });
  const { dir } = await makeVolume(mnt, open, 'vol-1', 'survives rotation');
  open.close();
  await slot.rotate(oldKek.spec, newKek.spec);
  t.not((await runFscrypt(conf, ['unlock', dir, `--key=${oldKek.spec.path}`, '--quiet'])).code, 0, 'old KEK refused');
  const unlocked = await runFscrypt(conf, ['unlock', dir, `--key=${newKek.spec.path}`, '--quiet']);
  t.equal(unlocked.code, 0, unlocked.stderr);
  t.equal(await readFile(join(dir, 'secret.txt'), 'utf8'), 'survives rotation');
  await runFscrypt(conf, ['lock', dir, '--quiet']);
});

t.test('KMS-protected volumes: the stock tool is not confused, and a break-glass file protector still unlocks', async (t) => {
  if (!needs(t, FSCRYPT)) return;
  const { mountpoint: mnt } = ext4(t);
  const kms = await startFakeKms(t);
  const kek = await kekFile(secrets, 'kms-break-glass');
  const slot = new SlotKeys(mnt);
  const viaKms = await slot.createAndOpenProtector({ kind: 'kms', socket: kms.socket }, { name: 'kms' });
  const kmsOnly = await makeVolume(mnt, viaKms, 'vol-kms-only', 'kms only');
  const both = await makeVolume(mnt, viaKms, 'vol-both', 'kms and break-glass');
  const breakGlass = await slot.createAndOpenProtector(kek.spec, { name: 'break-glass' });
  const key = await viaKms.unwrapPolicyKey(both.identifier);
  await breakGlass.addPolicy(key);
  wipe(key);
  viaKms.close();
  breakGlass.close();

  const status = await runFscrypt(conf, ['status', mnt]);
  t.equal(status.code, 0, status.stderr);
  t.match(status.stdout, new RegExp(kmsOnly.identifier));
  t.match(status.stdout, /raw key protector "break-glass"/);
  t.notMatch(status.stdout, /kms"/, 'the KMS protector is not in .fscrypt');
  t.not((await runFscrypt(conf, ['unlock', kmsOnly.dir, `--key=${kek.spec.path}`, '--quiet'])).code, 0, 'a KMS-only volume cannot be unlocked with the KEK');
  const unlocked = await runFscrypt(conf, ['unlock', both.dir, `--key=${kek.spec.path}`, `--unlock-with=${mnt}:${breakGlass.descriptor}`, '--quiet']);
  t.equal(unlocked.code, 0, unlocked.stderr);
  t.equal(await readFile(join(both.dir, 'secret.txt'), 'utf8'), 'kms and break-glass');
  await runFscrypt(conf, ['lock', both.dir, '--quiet']);
});
