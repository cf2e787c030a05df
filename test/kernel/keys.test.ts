// Keys in the filesystem keyring, on the real kernel: add, identify, status,
// remove (including busy files), key_id adds, and many operations in flight.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, open, readdir, readFile, writeFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import t from 'tap';
import {
  addKey,
  addKeyById,
  defaultPolicy,
  FscryptError,
  getKeyStatus,
  keyIdentifier,
  removeKey,
  setPolicy,
} from '../../lib/kernel/index.js';
import { ext4 } from '../fixtures/system/scratch-fs.js';
import { kernelCallAs, kernelCallsInSession, randomKey, rejection } from '../fixtures/helpers.js';
import { KEYCTL, needs } from '../fixtures/system/optional.js';

// Reachable: nobody (uid 65534) claims keys on it too.
const fs = ext4(t, { reachable: true });
const mnt = fs.mountpoint;

t.test('addKey returns the identifier userspace HKDF computes, for 16 to 64 byte keys', async (t) => {
  for (const size of [16, 32, 48, 64]) {
    const key = randomKey(size);
    const identifier = await addKey(mnt, key);
    t.match(identifier, /^[0-9a-f]{32}$/);
    t.equal(identifier, keyIdentifier(key), `${size}-byte key`);
    await removeKey(mnt, identifier);
  }
  // Known-answer: the kernel's identifier of the all-zero 64-byte key.
  const zero = Buffer.alloc(64);
  t.equal(keyIdentifier(zero), await addKey(mnt, zero));
});

t.test('getKeyStatus follows add, re-add and remove', async (t) => {
  const key = randomKey();
  const id = keyIdentifier(key);
  t.same(await getKeyStatus(mnt, id), { status: 'absent', addedBySelf: false, userCount: 0 });
  t.equal(await addKey(mnt, key), id);
  t.same(await getKeyStatus(mnt, id), { status: 'present', addedBySelf: true, userCount: 1 });
  // A re-add by the same user is a no-op: still one claim.
  await addKey(mnt, key);
  t.same(await getKeyStatus(mnt, id), { status: 'present', addedBySelf: true, userCount: 1 });
  t.same(await removeKey(mnt, id), { filesBusy: false, otherUsers: false });
  t.same(await getKeyStatus(mnt, id), { status: 'absent', addedBySelf: false, userCount: 0 });
  const again = await rejection(removeKey(mnt, id));
  t.ok(again instanceof FscryptError);
  t.match(again, { code: 'ENOKEY', errno: -126, syscall: 'ioctl', ioctl: 'FS_IOC_REMOVE_ENCRYPTION_KEY', path: mnt });
  t.match(again.message, /not in the filesystem keyring/);
});

t.test('a key added by another user is reported as otherUsers, and allUsers removes it', async (t) => {
  const key = randomKey();
  const id = await addKey(mnt, key);
  const claimed = kernelCallAs('addKey', [mnt, { hex: key.toString('hex') }]);
  t.same(claimed, { ok: true, result: id });
  t.same(await getKeyStatus(mnt, id), { status: 'present', addedBySelf: true, userCount: 2 });
  t.same(await removeKey(mnt, id), { filesBusy: false, otherUsers: true });
  t.same(await getKeyStatus(mnt, id), { status: 'present', addedBySelf: false, userCount: 1 });
  // Removing for all users needs CAP_SYS_ADMIN: nobody gets EACCES.
  const denied = kernelCallAs('removeKey', [mnt, id, { allUsers: true }]);
  t.match(denied, { ok: false, error: { name: 'FscryptError', code: 'EACCES', ioctl: 'FS_IOC_REMOVE_ENCRYPTION_KEY_ALL_USERS' } });
  t.match(denied.error?.message, /CAP_SYS_ADMIN/);
  t.same(await removeKey(mnt, id, { allUsers: true }), { filesBusy: false, otherUsers: false });
  t.equal((await getKeyStatus(mnt, id)).status, 'absent');
});

t.test('removing a key while a file is open reports filesBusy; removing again after close completes', async (t) => {
  const key = randomKey();
  const id = await addKey(mnt, key);
  const dir = join(mnt, 'busy');
  await mkdir(dir);
  await setPolicy(dir, defaultPolicy(id));
  await writeFile(join(dir, 'held'), 'plaintext held open');
  const handle = await open(join(dir, 'held'), 'r');
  try {
    t.same(await removeKey(mnt, id), { filesBusy: true, otherUsers: false });
    t.same(await getKeyStatus(mnt, id), { status: 'incompletely-removed', addedBySelf: false, userCount: 0 });
    // The open file keeps reading plaintext: the key is only incompletely removed.
    t.equal((await handle.readFile('utf8')), 'plaintext held open');
  } finally {
    await handle.close();
  }
  t.same(await removeKey(mnt, id), { filesBusy: false, otherUsers: false });
  t.equal((await getKeyStatus(mnt, id)).status, 'absent');
  // Locked: the name is now a no-key name, and the file cannot be opened.
  const names = await readdir(dir);
  t.equal(names.length, 1);
  t.not(names[0], 'held');
  // Node's fs has no name for ENOKEY (126): match the number.
  t.match(await rejection(readFile(join(dir, names[0]!))), { errno: -126 });
});

/** Lines of /proc/keys (the keys this process may view) that mention `text`. */
function procKeys(text: string): string[] {
  return readFileSync('/proc/keys', 'utf8')
    .split('\n')
    .filter((line) => line.includes(text));
}

t.test('addKeyById adds an fscrypt-provisioning key from a kernel keyring', async (t) => {
  if (!needs(t, KEYCTL)) return;
  const key = randomKey();
  const id = keyIdentifier(key);
  const tag = `fscrypt-local-test-${process.pid}`;
  // struct fscrypt_provisioning_key_payload { u32 type; u32 flags; u8 raw[]; }
  const sessionKey = (type: number, description: string): unknown => ({
    sessionKey: { type: 'fscrypt-provisioning', description, hex: Buffer.concat([Buffer.from([type, 0, 0, 0, 0, 0, 0, 0]), key]).toString('hex') },
  });
  // In a child with a session keyring of its own: the keys (and the keyring)
  // go when it exits, and no keyring of the host (root's @u) is touched.
  const [added, status, removed, wrongType] = kernelCallsInSession([
    { fn: 'addKeyById', args: [mnt, sessionKey(2, `${tag}:v2`)] },
    { fn: 'getKeyStatus', args: [mnt, id] },
    { fn: 'removeKey', args: [mnt, id] },
    // A key of the wrong specifier type (descriptor = 1) is rejected.
    { fn: 'addKeyById', args: [mnt, sessionKey(1, `${tag}:v1`)] },
  ]);
  t.same(added, { ok: true, result: id }, 'the identifier of the raw key in the keyring');
  t.match(status, { ok: true, result: { status: 'present', addedBySelf: true } });
  t.same(removed, { ok: true, result: { filesBusy: false, otherUsers: false } });
  t.match(wrongType, { ok: false, error: { code: 'EKEYREJECTED', ioctl: 'FS_IOC_ADD_ENCRYPTION_KEY' } });
  // The kernel destroys unlinked keys in a deferred garbage collection.
  for (let i = 0; i < 50 && procKeys(tag).length > 0; i++) await sleep(100);
  t.same(procKeys(tag), [], 'the provisioning keys went with the child\'s session keyring');
});

t.test('addKeyById with a serial that names no key is ENOKEY', async (t) => {
  t.match(await rejection(addKeyById(mnt, 0x7ffffff0)), { code: 'ENOKEY', message: /fscrypt-provisioning key/ });
});

t.test('many operations in flight at once all complete correctly', async (t) => {
  const keys = Array.from({ length: 200 }, () => randomKey());
  const ids = await Promise.all(keys.map((key) => addKey(mnt, key)));
  t.same(ids, keys.map((key) => keyIdentifier(key)));
  const statuses = await Promise.all(ids.map((id) => getKeyStatus(mnt, id)));
  t.ok(statuses.every((s) => s.status === 'present'));
  await Promise.all(ids.map((id) => removeKey(mnt, id, { allUsers: true })));
  const after = await Promise.all(ids.map((id) => getKeyStatus(mnt, id)));
  t.ok(after.every((s) => s.status === 'absent'));
});

t.test('keys vanish when the filesystem is unmounted (superblock keyring)', async (t) => {
  const scratch = ext4(t);
  const id = await addKey(scratch.mountpoint, randomKey());
  t.equal((await getKeyStatus(scratch.mountpoint, id)).status, 'present');
  execFileSync('umount', [scratch.mountpoint]);
  execFileSync('mount', ['-o', 'loop', scratch.image!, scratch.mountpoint]);
  t.equal((await getKeyStatus(scratch.mountpoint, id)).status, 'absent');
});
