// Encryption policies on the real kernel: set/get round trips (v2 and v1),
// ciphertext on disk, no-key names and ENOKEY after removal, nonces.
import { execFileSync } from 'node:child_process';
import { mkdir, readdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import {
  addKey,
  defaultPolicy,
  FscryptError,
  getNonce,
  getPolicy,
  removeKey,
  samePolicy,
  setPolicy,
  type Policy,
} from '../../lib/kernel/index.js';
import { ext4, syncFs } from '../fixtures/system/scratch-fs.js';
import { randomKey, rejection } from '../fixtures/helpers.js';

const fs = ext4(t);
const mnt = fs.mountpoint;
let dirCount = 0;
async function emptyDir(): Promise<string> {
  const dir = join(mnt, `d${dirCount++}`);
  await mkdir(dir);
  return dir;
}

t.test('a v2 policy round-trips through the kernel', async (t) => {
  const id = await addKey(mnt, randomKey());
  const dir = await emptyDir();
  t.equal(await getPolicy(dir), null, 'not encrypted before');
  await setPolicy(dir, defaultPolicy(id));
  t.same(await getPolicy(dir), {
    version: 2,
    contents: 'AES_256_XTS',
    filenames: 'AES_256_CTS',
    padding: 32,
    flags: [],
    identifier: id,
    log2DataUnitSize: 0,
  });
  // Files inherit the directory's policy.
  await writeFile(join(dir, 'f'), 'x');
  t.ok(samePolicy((await getPolicy(join(dir, 'f')))!, defaultPolicy(id)));
  // Setting the same policy again is a no-op, even on a non-empty directory.
  await setPolicy(dir, defaultPolicy(id));
  await removeKey(mnt, id);
});

t.test('other padding values and the HCTR2 filenames mode are set as asked', async (t) => {
  const id = await addKey(mnt, randomKey());
  for (const padding of [4, 8, 16] as const) {
    const dir = await emptyDir();
    await setPolicy(dir, { ...defaultPolicy(id), padding });
    t.equal((await getPolicy(dir))?.padding, padding);
  }
  // The kernel accepts algorithms it has not built at set time (verified fact):
  // the policy reads back even though file creation would fail with ENOPKG.
  const dir = await emptyDir();
  await setPolicy(dir, { ...defaultPolicy(id), filenames: 'AES_256_HCTR2' });
  t.equal((await getPolicy(dir))?.filenames, 'AES_256_HCTR2');
  await removeKey(mnt, id);
});

t.test('data and names are ciphertext on disk; after removal: no-key names and ENOKEY', async (t) => {
  const key = randomKey();
  const id = await addKey(mnt, key);
  const dir = await emptyDir();
  await setPolicy(dir, defaultPolicy(id));
  const marker = `fscrypt-local-plaintext-marker-${process.pid}-`;
  const secretName = `secret-name-${process.pid}`;
  await writeFile(join(dir, secretName), marker.repeat(200));
  // Control: the same marker in an unencrypted file is visible on disk, so
  // the search below would find plaintext if there were any.
  const control = `fscrypt-local-control-marker-${process.pid}-`;
  await writeFile(join(mnt, 'plain'), control.repeat(200));
  syncFs(mnt);
  const disk = readFileSync(fs.image!);
  t.ok(disk.includes(control), 'control plaintext is found on disk');
  t.notOk(disk.includes(marker), 'encrypted contents are not on disk in plaintext');
  t.notOk(disk.includes(secretName), 'encrypted file name is not on disk in plaintext');

  t.same(await removeKey(mnt, id), { filesBusy: false, otherUsers: false });
  const names = await readdir(dir);
  t.equal(names.length, 1);
  t.not(names[0], secretName, 'the name is a no-key name');
  t.match(names[0], /^[A-Za-z0-9_,+-]+$/, 'no-key names are base64url-like');
  t.match(await rejection(readFile(join(dir, names[0]!))), { errno: -126 }, 'ENOKEY opening the file');
  t.match(await rejection(writeFile(join(dir, 'new'), 'x')), { errno: -126 }, 'ENOKEY creating a file');
  // The policy is still readable on the locked directory.
  t.equal((await getPolicy(dir) as Policy & { identifier: string }).identifier, id);

  // Unlocking again restores the plaintext view.
  await addKey(mnt, key);
  t.same(await readdir(dir), [secretName]);
  t.equal(await readFile(join(dir, secretName), 'utf8'), marker.repeat(200));
  await removeKey(mnt, id);
});

t.test('v1 policies: add by descriptor, set, get, read back, remove', async (t) => {
  const key = randomKey();
  const descriptor = '0123456789abcdef';
  t.equal(await addKey(mnt, key, { descriptor }), descriptor);
  const dir = await emptyDir();
  const policy: Policy = { version: 1, contents: 'AES_256_XTS', filenames: 'AES_256_CTS', padding: 32, descriptor };
  await setPolicy(dir, policy);
  t.same(await getPolicy(dir), { ...policy, flags: [] });
  await writeFile(join(dir, 'v1'), 'v1 data');
  t.equal(await readFile(join(dir, 'v1'), 'utf8'), 'v1 data');
  t.same(await removeKey(mnt, descriptor), { filesBusy: false, otherUsers: false });
  t.not((await readdir(dir))[0], 'v1');
});

t.test('getNonce returns 16 bytes per encrypted file, distinct per file', async (t) => {
  const id = await addKey(mnt, randomKey());
  const dir = await emptyDir();
  await setPolicy(dir, defaultPolicy(id));
  await writeFile(join(dir, 'a'), 'a');
  await writeFile(join(dir, 'b'), 'b');
  const a = await getNonce(join(dir, 'a'));
  const b = await getNonce(join(dir, 'b'));
  t.equal(a.length, 16);
  t.notOk(a.equals(b));
  t.notOk(a.equals(Buffer.alloc(16)));
  t.equal((await getNonce(dir)).length, 16, 'directories have nonces too');
  await writeFile(join(mnt, 'plain-nonce'), 'x');
  const error = await rejection(getNonce(join(mnt, 'plain-nonce')));
  t.ok(error instanceof FscryptError);
  t.match(error, { code: 'ENODATA', ioctl: 'FS_IOC_GET_ENCRYPTION_NONCE', message: /not encrypted/ });
  await removeKey(mnt, id);
});

t.test('a lower-case and an upper-case identifier name the same key', async (t) => {
  const id = await addKey(mnt, randomKey());
  const dir = await emptyDir();
  await setPolicy(dir, defaultPolicy(id.toUpperCase()));
  t.equal(((await getPolicy(dir)) as { identifier: string }).identifier, id);
  await removeKey(mnt, id.toUpperCase());
});

t.test('policies survive a remount; the key does not', async (t) => {
  const scratch = ext4(t);
  const key = randomKey();
  const id = await addKey(scratch.mountpoint, key);
  const dir = join(scratch.mountpoint, 'v');
  await mkdir(dir);
  await setPolicy(dir, defaultPolicy(id));
  await writeFile(join(dir, 'f'), 'persisted');
  execFileSync('umount', [scratch.mountpoint]);
  execFileSync('mount', ['-o', 'loop', scratch.image!, scratch.mountpoint]);
  t.ok(samePolicy((await getPolicy(dir))!, defaultPolicy(id)));
  t.match(await rejection(readFile(join(dir, 'f'))), { code: 'ENOENT' }, 'locked: the plaintext name is gone');
  await addKey(scratch.mountpoint, key);
  t.equal(await readFile(join(dir, 'f'), 'utf8'), 'persisted');
});

t.test('noFollow: a symlink to an encrypted directory is refused with ELOOP, and followed without it', async (t) => {
  const id = await addKey(mnt, randomKey());
  const dir = await emptyDir();
  await setPolicy(dir, defaultPolicy(id));
  await writeFile(join(dir, 'f'), 'x');
  const link = join(mnt, `link-${dirCount}`);
  await symlink(dir, link);

  const refused = await rejection(getPolicy(link, { noFollow: true }));
  t.ok(refused instanceof FscryptError);
  t.match(refused, { code: 'ELOOP', errno: -40, syscall: 'open', ioctl: undefined, path: link });
  t.equal(
    refused.message,
    `ELOOP: the path is a symbolic link, which noFollow does not follow (or it resolves through too many symbolic links), open '${link}'. ` +
      'To fix: pass the path of the file or directory itself; follow a link only if no one else can replace it',
  );
  t.ok(samePolicy((await getPolicy(link))!, defaultPolicy(id)), 'followed by default');
  t.ok(samePolicy((await getPolicy(link, { noFollow: false }))!, defaultPolicy(id)), 'followed with noFollow: false');
  t.ok(samePolicy((await getPolicy(dir, { noFollow: true }))!, defaultPolicy(id)), 'a real directory is fine under noFollow');

  // getNonce, on a link to a file inside.
  const fileLink = join(mnt, `file-link-${dirCount}`);
  await symlink(join(dir, 'f'), fileLink);
  t.match(await rejection(getNonce(fileLink, { noFollow: true })), { code: 'ELOOP', syscall: 'open', path: fileLink });
  t.ok((await getNonce(fileLink)).equals(await getNonce(join(dir, 'f'), { noFollow: true })), 'followed without noFollow');

  // Links in earlier components are still followed (only the last one is checked).
  t.ok(samePolicy((await getPolicy(join(link, 'f'), { noFollow: true }))!, defaultPolicy(id)), 'a link in a parent component is followed');
  await removeKey(mnt, id);
});

t.test('noFollow: setPolicy refuses a symlink to an empty directory with ELOOP and leaves the target alone', async (t) => {
  const id = await addKey(mnt, randomKey());
  const target = await emptyDir();
  const link = join(mnt, `set-link-${dirCount}`);
  await symlink(target, link);
  // O_DIRECTORY | O_NOFOLLOW fails with ENOTDIR on a link; the addon reports ELOOP.
  t.match(await rejection(setPolicy(link, defaultPolicy(id), { noFollow: true })), {
    name: 'FscryptError',
    code: 'ELOOP',
    syscall: 'open',
    path: link,
    message: /symbolic link, which noFollow does not follow/,
  });
  t.equal(await getPolicy(target), null, 'the target was not encrypted');
  // A regular file is still ENOTDIR under noFollow, and a dangling link ELOOP.
  const file = join(mnt, `set-file-${dirCount}`);
  await writeFile(file, 'x');
  t.match(await rejection(setPolicy(file, defaultPolicy(id), { noFollow: true })), { code: 'ENOTDIR', syscall: 'open' });
  const dangling = join(mnt, `dangling-${dirCount}`);
  await symlink(join(mnt, 'does-not-exist'), dangling);
  t.match(await rejection(setPolicy(dangling, defaultPolicy(id), { noFollow: true })), { code: 'ELOOP' });
  t.match(await rejection(setPolicy(dangling, defaultPolicy(id))), { code: 'ENOENT' }, 'followed without noFollow');
  // Without noFollow the link is followed and the target encrypted.
  await setPolicy(link, defaultPolicy(id));
  t.ok(samePolicy((await getPolicy(target))!, defaultPolicy(id)));
  await removeKey(mnt, id);
});
