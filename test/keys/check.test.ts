// SlotKeys.check(): a slot's protector and policy files checked without the
// key source, for `status` and `reconcile`. Each damage gives one problem
// naming the file, in the same terms an unlock would fail with; a healthy
// slot gives none; nothing is modified, no key source is touched.
import { chmod, chown, copyFile, mkdir, readFile, rename, rm, symlink, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { newPolicyKey, SlotKeys, slotLayout, type MetadataProblem } from '../../lib/keys/index.js';
import { decodePolicyData, decodeProtectorData, encodeKmsProtector, encodePolicyData, encodeProtectorData } from '../../lib/keys/metadata-format.js';
import { rejection } from '../fixtures/helpers.js';
import { assertNoSecrets, kekFile, secretsDir, snapshotTree } from '../fixtures/keys-helpers.js';
import { tmpfs } from '../fixtures/system/scratch-fs.js';

const fs = tmpfs(t);
let n = 0;

async function fixture(t: Parameters<typeof secretsDir>[0]) {
  const root = join(fs.mountpoint, `slot-${++n}`);
  await mkdir(root);
  const dir = await secretsDir(t);
  const kek = await kekFile(dir);
  const slot = new SlotKeys(root, { onWarning: () => {} });
  const open = await slot.createAndOpenProtector(kek.spec, { name: 'p' });
  const keys = [newPolicyKey(), newPolicyKey()];
  const ids: string[] = [];
  for (const key of keys) ids.push((await open.addPolicy(key)).identifier);
  open.close();
  const layout = slotLayout(root);
  // The check needs no key source: it is gone.
  await rm(kek.spec.path);
  return {
    root,
    slot,
    descriptor: open.descriptor,
    ids,
    secrets: [kek.bytes, ...keys],
    layout,
    protectorFile: join(layout.protectorsDir, open.descriptor),
    policyFile: (i: number) => join(layout.policiesDir, ids[i]!),
  };
}

type Fixture = Awaited<ReturnType<typeof fixture>>;

/** check(), which must modify nothing and show no secret. */
async function check(t: Test, f: Fixture, ids = f.ids): Promise<MetadataProblem[]> {
  const before = await snapshotTree(f.root);
  const problems = await f.slot.check(f.descriptor, ids);
  t.same(await snapshotTree(f.root), before, 'check() modifies nothing');
  t.ok(assertNoSecrets(JSON.stringify(problems), f.secrets), 'no key material in the problems');
  return problems;
}

t.test('a healthy slot has no problems, without its key source', async (t) => {
  const f = await fixture(t);
  t.same(await check(t, f), []);
  t.same(await check(t, f, []), [], 'the protector alone');
  t.same(await f.slot.check(f.descriptor.toUpperCase(), [f.ids[0]!.toUpperCase(), f.ids[0]!]), [], 'case-insensitive, duplicates once');
});

t.test('the protector: missing, damaged, not ours, a login protector', async (t) => {
  let f = await fixture(t);
  await rm(f.protectorFile);
  t.match(await check(t, f), [{ code: 'ENOENT', subject: 'protector', id: f.descriptor, path: f.protectorFile, message: /has no protector .*none of its volumes can be unlocked/ }]);

  f = await fixture(t);
  await truncate(f.protectorFile, 40);
  t.match(await check(t, f), [{ code: 'ERR_BAD_METADATA', subject: 'protector', path: f.protectorFile, message: /is invalid/ }]);

  f = await fixture(t);
  await copyFile(f.protectorFile, join(f.layout.protectorsDir, '0123456789abcdef'));
  t.match(await f.slot.check('0123456789abcdef', []), [{ code: 'ERR_BAD_METADATA', message: /holds protector .* not the 0123456789abcdef its name says/ }], 'under another name');

  f = await fixture(t);
  await chown(f.protectorFile, 65534, 65534);
  t.match(await check(t, f), [{ code: 'ERR_BAD_METADATA', path: f.protectorFile, message: /owned by uid 65534/ }], 'another user\'s file');

  f = await fixture(t);
  await chmod(f.protectorFile, 0o646);
  t.match(await check(t, f), [{ code: 'ERR_BAD_METADATA', message: /writable by other users/ }]);

  f = await fixture(t);
  const data = decodeProtectorData(await readFile(f.protectorFile));
  await writeFile(f.protectorFile, encodeProtectorData({ ...data, source: 'pam_passphrase', costs: { time: 1, memory: 1024, parallelism: 1, truncationFixed: false }, salt: Buffer.alloc(16, 1), uid: 1000 }));
  t.match(await check(t, f), [{ code: 'ERR_NOT_SUPPORTED', subject: 'protector', message: /login \(pam_passphrase\) protector/ }]);
});

t.test('a KMS protector is found beside .fscrypt; a rotation between storages left one in each: fine', async (t) => {
  const f = await fixture(t);
  const record = { descriptor: f.descriptor, name: 'kms', ciphertext: Buffer.alloc(48, 7), keyId: 'key-1', annotations: new Map([['version.encryption.remote.io', Buffer.from('1')]]) };
  await mkdir(f.layout.kmsProtectorsDir, { recursive: true });
  await writeFile(join(f.layout.kmsProtectorsDir, f.descriptor), encodeKmsProtector(record), { mode: 0o600 });
  t.same(await check(t, f), [], 'one in each storage');
  await rm(f.protectorFile);
  t.same(await check(t, f), [], 'KMS only');
  await writeFile(join(f.layout.kmsProtectorsDir, f.descriptor), 'garbage', { mode: 0o600 });
  t.match(await check(t, f), [{ code: 'ERR_BAD_METADATA', subject: 'protector', path: join(f.layout.kmsProtectorsDir, f.descriptor) }]);
});

t.test('policies: missing, damaged, not under the protector, other options', async (t) => {
  const f = await fixture(t);
  const [a, b] = f.ids as [string, string];
  await rm(f.policyFile(0));
  await truncate(f.policyFile(1), 30);
  t.match(await check(t, f), [
    { code: 'ENOENT', subject: 'policy', id: a, path: f.policyFile(0), message: /has no policy .*lost unless the file is restored/ },
    { code: 'ERR_BAD_METADATA', subject: 'policy', id: b, path: f.policyFile(1) },
  ]);

  const g = await fixture(t);
  const data = decodePolicyData(await readFile(g.policyFile(0)));
  const moved = { ...data, wrappedPolicyKeys: data.wrappedPolicyKeys.map((w) => ({ ...w, protectorDescriptor: 'fedcba9876543210' })) };
  await writeFile(g.policyFile(0), encodePolicyData(moved));
  await writeFile(g.policyFile(1), encodePolicyData({ ...decodePolicyData(await readFile(g.policyFile(1))), options: { padding: 16, contents: 1, filenames: 4, policyVersion: 2 } }));
  t.match(await check(t, g), [
    { code: 'ERR_WRONG_KEY', subject: 'policy', id: g.ids[0], message: new RegExp(`not protected by the slot's protector ${g.descriptor} \\(its protectors: fedcba9876543210\\)`) },
    { code: 'ERR_BAD_METADATA', subject: 'policy', id: g.ids[1], message: /options fscrypt-local does not make .*padding 16/ },
  ]);
});

t.test('an unsafe metadata directory is one problem, not one per file', async (t) => {
  const f = await fixture(t);
  const moved = join(fs.mountpoint, `moved-${n}`);
  await rename(f.layout.fscryptDir, moved);
  await symlink(moved, f.layout.fscryptDir);
  const problems = await check(t, f);
  t.equal(problems.length, 1, JSON.stringify(problems));
  t.match(problems[0], { code: 'ERR_UNSAFE_PATH', message: /symbolic link/ });
});

t.test('bad arguments are errors, not problems', async (t) => {
  const f = await fixture(t);
  t.match(await rejection(f.slot.check('xyz')), { code: 'ERR_INVALID_ARG' });
  t.match(await rejection(f.slot.check(f.descriptor, ['../etc'])), { code: 'ERR_INVALID_ARG' });
  t.match(await rejection(f.slot.check(f.descriptor, 'abc' as never)), { code: 'ERR_INVALID_ARG' });
});
