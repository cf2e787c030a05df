// Every fscrypt error the kernel layer explains, provoked for real, and the
// support probe on supported, feature-less and incapable filesystems.
import { execFileSync } from 'node:child_process';
import { chmod, mkdir, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import {
  addKey,
  defaultPolicy,
  FscryptError,
  getKeyStatus,
  getPolicy,
  probe,
  removeKey,
  setPolicy,
} from '../../lib/kernel/index.js';
import { ext4, tmpfs } from '../fixtures/system/scratch-fs.js';
import { kernelCallAs, kernelCallsAs, randomKey, rejection } from '../fixtures/helpers.js';
import { defaultKeyQuotas, needs } from '../fixtures/system/optional.js';

// Unprivileged children (uid nobody) must be able to reach the mount.
const fs = ext4(t, { reachable: true });
const mnt = fs.mountpoint;

t.test('a failed ioctl is a FscryptError shaped like a Node fs error, with the fscrypt meaning and remedy', async (t) => {
  const id = await addKey(mnt, randomKey());
  const dir = join(mnt, 'nonempty');
  await mkdir(dir);
  await writeFile(join(dir, 'f'), 'x');
  const error = await rejection(setPolicy(dir, defaultPolicy(id)));
  t.ok(error instanceof FscryptError, 'instanceof FscryptError');
  t.ok(error instanceof Error, 'instanceof Error');
  t.equal(error.name, 'FscryptError');
  t.notOk(Object.keys(error).includes('name'), 'name is not enumerable');
  t.match(error, {
    code: 'ENOTEMPTY',
    errno: -39,
    syscall: 'ioctl',
    ioctl: 'FS_IOC_SET_ENCRYPTION_POLICY',
    path: dir,
  });
  t.equal(
    error.message,
    `ENOTEMPTY: a policy can only be set on an empty directory, FS_IOC_SET_ENCRYPTION_POLICY '${dir}'. ` +
      'To fix: create a new empty directory, encrypt it, then copy the data in',
  );
  t.ok(typeof error.stack === 'string' && error.stack.startsWith('FscryptError: ENOTEMPTY'));
  await removeKey(mnt, id);
});

t.test('EEXIST: a different policy is already set', async (t) => {
  const a = await addKey(mnt, randomKey());
  const b = await addKey(mnt, randomKey());
  const dir = join(mnt, 'eexist');
  await mkdir(dir);
  await setPolicy(dir, defaultPolicy(a));
  t.match(await rejection(setPolicy(dir, defaultPolicy(b))), {
    code: 'EEXIST',
    message: /already has a different encryption policy.*To fix/,
  });
  await removeKey(mnt, a);
  await removeKey(mnt, b);
});

t.test('ENOTDIR: a regular file where a directory is needed (no ioctl issued)', async (t) => {
  const file = join(mnt, 'regular');
  await writeFile(file, 'x');
  t.match(await rejection(setPolicy(file, defaultPolicy('00'.repeat(16)))), {
    code: 'ENOTDIR',
    syscall: 'open',
    ioctl: undefined,
    path: file,
    message: /not a directory: an encryption policy can only be set on a directory/,
  });
});

t.test('ENOENT: a path that does not exist', async (t) => {
  const missing = join(mnt, 'missing');
  const calls = [
    () => getPolicy(missing),
    () => setPolicy(missing, defaultPolicy('00'.repeat(16))),
    () => addKey(missing, randomKey()),
    () => probe(missing),
  ];
  for (const call of calls) {
    t.match(await rejection(call()), { name: 'FscryptError', code: 'ENOENT', syscall: 'open', path: missing });
  }
});

t.test('EPERM: the root directory of an ext4 filesystem cannot be encrypted', async (t) => {
  const scratch = ext4(t);
  const id = await addKey(scratch.mountpoint, randomKey());
  // With lost+found present the root is not empty...
  t.match(await rejection(setPolicy(scratch.mountpoint, defaultPolicy(id))), { code: 'ENOTEMPTY' });
  // ...and once empty, ext4 refuses the root itself.
  await rmdir(join(scratch.mountpoint, 'lost+found'));
  t.match(await rejection(setPolicy(scratch.mountpoint, defaultPolicy(id))), {
    code: 'EPERM',
    message: /root directory of a filesystem cannot be encrypted.*subdirectory/,
  });
});

t.test('EINVAL: the kernel rejects IV_INO_LBLK_64 without the stable_inodes feature', async (t) => {
  const id = await addKey(mnt, randomKey());
  const dir = join(mnt, 'einval');
  await mkdir(dir);
  t.match(await rejection(setPolicy(dir, { ...defaultPolicy(id), flags: ['IV_INO_LBLK_64'] })), {
    code: 'EINVAL',
    ioctl: 'FS_IOC_SET_ENCRYPTION_POLICY',
    message: /rejected the policy/,
  });
  t.equal(await getPolicy(dir), null, 'nothing was set');
  await removeKey(mnt, id);
});

t.test('ENOKEY: removing, or (unprivileged) using, a key that was never added', async (t) => {
  const neverAdded = 'ab'.repeat(16);
  t.match(await rejection(removeKey(mnt, neverAdded)), { code: 'ENOKEY', ioctl: 'FS_IOC_REMOVE_ENCRYPTION_KEY' });
  t.same(await getKeyStatus(mnt, neverAdded), { status: 'absent', addedBySelf: false, userCount: 0 });
  const dir = join(mnt, 'enokey');
  await mkdir(dir);
  await chmod(dir, 0o777);
  execFileSync('chown', ['65534:65534', dir]);
  // Root (CAP_FOWNER) skips this check; an ordinary owner does not.
  t.match(kernelCallAs('setPolicy', [dir, defaultPolicy(neverAdded)]), {
    ok: false,
    error: { name: 'FscryptError', code: 'ENOKEY', message: /add the key with addKey\(\) first/ },
  });
});

t.test('EACCES: encrypting a directory one does not own, and v1 keys without CAP_SYS_ADMIN', async (t) => {
  const key = randomKey();
  const rootOwned = join(mnt, 'eacces');
  await mkdir(rootOwned, { mode: 0o777 });
  const [added, denied] = kernelCallsAs([
    { fn: 'addKey', args: [mnt, { hex: key.toString('hex') }] },
    { fn: 'setPolicy', args: [rootOwned, defaultPolicy('00'.repeat(16))] },
  ]);
  t.match(added, { ok: true });
  t.match(denied, { ok: false, error: { code: 'EACCES', message: /only the owner of the directory.*CAP_FOWNER/ } });
  t.match(kernelCallAs('addKey', [mnt, { hex: key.toString('hex') }, { descriptor: '00'.repeat(8) }]), {
    ok: false,
    error: { code: 'EACCES', ioctl: 'FS_IOC_ADD_ENCRYPTION_KEY', message: /CAP_SYS_ADMIN/ },
  });
  await removeKey(mnt, (added!.result as string), { allUsers: true });
});

t.test('EDQUOT: an unprivileged user exhausts its kernel key quota', async (t) => {
  if (!needs(t, defaultKeyQuotas())) return;
  const scratch = ext4(t, { reachable: true });
  // Non-root users may hold 200 keys / 20000 bytes by default; ask for more.
  const calls = Array.from({ length: 400 }, () => ({ fn: 'addKey', args: [scratch.mountpoint, { hex: randomKey().toString('hex') }] }));
  const results = kernelCallsAs(calls);
  const firstFailure = results.findIndex((r) => !r.ok);
  t.ok(firstFailure > 0, `some keys were added first (${firstFailure})`);
  t.match(results[firstFailure], { ok: false, error: { code: 'EDQUOT', message: /key quota is exhausted.*maxkeys/ } });
  // Unmounting drops the keys and gives the quota back.
  scratch.cleanup();
});

t.test('EROFS: a read-only filesystem', async (t) => {
  const scratch = ext4(t);
  const id = await addKey(scratch.mountpoint, randomKey());
  const dir = join(scratch.mountpoint, 'ro');
  await mkdir(dir);
  execFileSync('mount', ['-o', 'remount,ro', scratch.mountpoint]);
  t.match(await rejection(setPolicy(dir, defaultPolicy(id))), { code: 'EROFS', message: /read-only.*remount/ });
});

t.test('ENOPKG shows up at first create when the kernel lacks a policy algorithm', async (t) => {
  const id = await addKey(mnt, randomKey());
  const dir = join(mnt, 'enopkg');
  await mkdir(dir);
  await setPolicy(dir, { ...defaultPolicy(id), filenames: 'AES_256_HCTR2' });
  const created = await rejection(writeFile(join(dir, 'probe'), '')).catch((e: unknown) => e);
  // Kernels with HCTR2 built in accept the create; this machine kind does not.
  if (created instanceof Error) t.match(created, { errno: -65 });
  else t.pass('this kernel has AES-256-HCTR2');
  await removeKey(mnt, id);
});

t.test('EOPNOTSUPP: ext4 without the encrypt feature; the probe names the device and the fix', async (t) => {
  const plain = ext4(t, { encrypt: false });
  const error = await rejection(addKey(plain.mountpoint, randomKey()));
  t.match(error, { code: 'EOPNOTSUPP', ioctl: 'FS_IOC_ADD_ENCRYPTION_KEY', message: /encrypt feature.*tune2fs -O encrypt/ });
  const dir = join(plain.mountpoint, 'd');
  await mkdir(dir);
  t.match(await rejection(setPolicy(dir, defaultPolicy('00'.repeat(16)))), { code: 'EOPNOTSUPP' });

  const result = await probe(plain.mountpoint);
  t.same(result, {
    supported: false,
    filesystem: 'ext4',
    reason: `the ext4 filesystem on ${plain.device} does not have the encrypt feature enabled`,
    remedy: `run \`tune2fs -O encrypt ${plain.device}\` (safe on a mounted ext4 filesystem)`,
  });
  // The remedy works, without a remount.
  execFileSync('tune2fs', ['-O', 'encrypt', plain.device!], { stdio: 'ignore' });
  t.same(await probe(dir), { supported: true, filesystem: 'ext4' });
});

t.test('ENOTTY: tmpfs cannot do fscrypt at all', async (t) => {
  const tmp = tmpfs(t);
  t.match(await probe(tmp.mountpoint), {
    supported: false,
    filesystem: 'tmpfs',
    reason: 'tmpfs does not support fscrypt',
    remedy: /mkfs.ext4 -O encrypt/,
  });
  t.match(await rejection(addKey(tmp.mountpoint, randomKey())), {
    code: 'ENOTTY',
    message: /this filesystem type does not support fscrypt.*To fix: use ext4 or f2fs/,
  });
  t.equal(await getPolicy(tmp.mountpoint).catch((e: FscryptError) => e.code), 'ENOTTY');
});

t.test('probe says yes on an encrypt-capable ext4, from any path inside it', async (t) => {
  t.same(await probe(mnt), { supported: true, filesystem: 'ext4' });
  await mkdir(join(mnt, 'sub'));
  t.same(await probe(join(mnt, 'sub')), { supported: true, filesystem: 'ext4' });
});
