// The host check (test/fixtures/system/host-check.ts) that .ci/run runs around the
// suite can fail: it notices each kind of change, normalises away only what
// changes by itself (mount ids, key reference counts, expiry countdowns),
// notices a real mount made after its snapshot, and its command exits 1
// naming the change.
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import {
  attribute,
  CHECKOUT,
  compareLive,
  diffSnapshots,
  liveScratch,
  normaliseKeys,
  normaliseKeyUsers,
  normaliseMountinfo,
  takeSnapshot,
  type HostSnapshot,
} from '../fixtures/system/host-check.js';
import { scratchDir, tmpfs } from '../fixtures/system/scratch-fs.js';

const HOST_CHECK = join(import.meta.dirname, '..', 'fixtures', 'system', 'host-check.ts');

const base = (): HostSnapshot => ({
  directories: { '/tmp': '1777 0:0' },
  files: { '/etc/fscrypt.conf': 'absent' },
  sysctls: { 'kernel.keys.maxkeys': '200' },
  mounts: ['/ root=/ ext4 /dev/vda rw,relatime rw'],
  loops: [],
  keyUsers: ['uid 0: keys 8/8, quota 3/1000000 keys 40/25000000 bytes'],
  keys: ['248a5a6c I--Q--- perm 1f3f0000 uid 0 gid 0 keyring _uid.0: empty'],
});

t.test('identical snapshots: no difference; each kind of change: one line naming it', async (t) => {
  t.same(diffSnapshots(base(), base()), []);
  const cases: [string, (s: HostSnapshot) => void, string[]][] = [
    ['tmp mode', (s) => void (s.directories['/tmp'] = '0755 0:0'), ['directory /tmp changed: 1777 0:0 -> 0755 0:0']],
    ['file', (s) => void (s.files['/etc/fscrypt.conf'] = 'sha256 ab'), ['file /etc/fscrypt.conf changed: absent -> sha256 ab']],
    ['sysctl', (s) => void (s.sysctls['kernel.keys.maxkeys'] = '2000'), ['sysctl kernel.keys.maxkeys changed: 200 -> 2000']],
    ['mount added', (s) => void s.mounts.push('/tmp/x/mnt root=/ ext4 /dev/loop0 rw rw'), ['mount added: /tmp/x/mnt root=/ ext4 /dev/loop0 rw rw']],
    ['mount removed', (s) => void s.mounts.pop(), ['mount removed: / root=/ ext4 /dev/vda rw,relatime rw']],
    ['the same mount twice', (s) => void s.mounts.push(s.mounts[0]!), ['mount added: / root=/ ext4 /dev/vda rw,relatime rw']],
    ['loop', (s) => void s.loops.push('loop0 /tmp/x/fs.img'), ['loop device added: loop0 /tmp/x/fs.img']],
    ['key user', (s) => void s.keyUsers.push('uid 65534: keys 1/1, quota 1/200 keys 40/20000 bytes'), ['key quota user added: uid 65534: keys 1/1, quota 1/200 keys 40/20000 bytes']],
    [
      'key',
      (s) => void (s.keys[0] = s.keys[0]!.replace('empty', '1')),
      ['key added: 248a5a6c I--Q--- perm 1f3f0000 uid 0 gid 0 keyring _uid.0: 1', 'key removed: 248a5a6c I--Q--- perm 1f3f0000 uid 0 gid 0 keyring _uid.0: empty'],
    ],
  ];
  for (const [what, change, expected] of cases) {
    const after = base();
    change(after);
    t.same(diffSnapshots(base(), after), expected, what);
  }
});

t.test('mountinfo: ids and propagation dropped; mount point, root, type, source and options kept', async (t) => {
  const text = [
    '29 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard',
    '612 29 7:3 / /tmp/fscrypt-local-test-a/mnt rw,relatime shared:300 - ext4 /dev/loop3 rw',
    '',
  ].join('\n');
  const again = text.replace('612 29 7:3', '700 29 7:4').replace('shared:300', 'shared:301');
  t.same(normaliseMountinfo(text), ['/ root=/ ext4 /dev/vda rw,relatime rw,discard', '/tmp/fscrypt-local-test-a/mnt root=/ ext4 /dev/loop3 rw,relatime rw']);
  t.same(normaliseMountinfo(again), normaliseMountinfo(text), 'a remount under new ids is the same mount');
  t.not(normaliseMountinfo(text.replace('rw,relatime shared:300', 'ro,relatime shared:300')).join(), normaliseMountinfo(text).join(), 'options count');
});

t.test('key users and keys: only uids 0 and 65534, without reference counts and expiry countdowns', async (t) => {
  const users = '    0:     9 8/8 3/1000000 40/25000000\n 1000:     2 2/2 2/200 80/20000\n65534:     4 3/3 3/200 150/20000\n';
  t.same(normaliseKeyUsers(users), ['uid 0: keys 8/8, quota 3/1000000 keys 40/25000000 bytes', 'uid 65534: keys 3/3, quota 3/200 keys 150/20000 bytes']);
  t.same(normaliseKeyUsers(users.replace('    0:     9', '    0:    12')), normaliseKeyUsers(users), 'usage is a reference count');
  const keys = [
    '248a5a6c I--Q---     2 perm 1f3f0000     0 65534 keyring   _uid.0: empty',
    '1a2b3c4d I--Q---     1   59s 3f010000  1000  1000 user      someone-else: 4',
    '0badf00d I--Q---     1 perm 3f010000 65534 65534 fscrypt-provisioning fscrypt-local-test: 72',
    '',
  ].join('\n');
  t.same(normaliseKeys(keys), [
    '0badf00d I--Q--- perm 3f010000 uid 65534 gid 65534 fscrypt-provisioning fscrypt-local-test: 72',
    '248a5a6c I--Q--- perm 1f3f0000 uid 0 gid 65534 keyring _uid.0: empty',
  ]);
  t.same(normaliseKeys(keys.replace('     2 perm', '     7 perm')), normaliseKeys(keys), 'usage is a reference count');
  t.same(normaliseKeys(keys.replace('perm 3f010000 65534', '  12d 3f010000 65534')), normaliseKeys(keys), 'the expiry counts down by itself');
});

t.test('a real mount made after the snapshot is noticed, and gone once it is unmounted', async (t) => {
  const before = takeSnapshot();
  const fs = tmpfs(t);
  // Other test files run alongside this one: look for this mount only.
  const mine = (lines: string[]): string[] => lines.filter((line) => line.includes(` ${fs.mountpoint} `) || line.includes(`${fs.mountpoint} root=`));
  const added = mine(diffSnapshots(before, takeSnapshot()));
  t.equal(added.length, 1, 'one difference for it');
  t.match(added[0], new RegExp(`^mount added: ${fs.mountpoint} root=/ tmpfs tmpfs rw,.*size=16384k`));
  fs.cleanup();
  t.same(mine((await compareLive(before, 0)).counted), [], 'unmounted: no longer a difference');
});

t.test('the command: exit 1 and one "host change:" line per difference; exit 0 when nothing changed', async (t) => {
  const dir = scratchDir(t, 'fscrypt-local-host-check-');
  const run = (...args: string[]): { code: number | null; stdout: string } => {
    const child = spawnSync(process.execPath, [...process.execArgv, HOST_CHECK, ...args], { encoding: 'utf8', timeout: 60_000 });
    return { code: child.status, stdout: child.stdout };
  };
  const now = join(dir, 'now.json');
  t.equal(run('snapshot', now).code, 0);
  const snapshot = JSON.parse(readFileSync(now, 'utf8')) as HostSnapshot;
  t.ok(snapshot.mounts.some((line) => line.startsWith('/proc root=/ proc ')), 'the real mount table was read');
  t.ok(Object.keys(snapshot.directories).includes('/tmp'));

  const same = run('compare', now, now);
  t.equal(same.code, 0, same.stdout);
  t.match(same.stdout, /^host check: unchanged \(/m);

  const altered = structuredClone(snapshot);
  altered.directories['/tmp'] = '1777 0:0' === snapshot.directories['/tmp'] ? '0755 0:0' : '1777 0:0';
  altered.loops.push('loop99 /tmp/leaked/fs.img');
  // Under a scratch directory a live process of this checkout registered (this one's): counted, and said so.
  altered.mounts.push(`${dir}/mnt root=/ tmpfs tmpfs rw rw`);
  const after = join(dir, 'after.json');
  writeFileSync(after, JSON.stringify(altered));
  const changed = run('compare', now, after);
  t.equal(changed.code, 1);
  t.match(changed.stdout, /^host change: directory \/tmp changed: /m);
  t.match(changed.stdout, /^host change: loop device added: loop99 \/tmp\/leaked\/fs\.img$/m);
  t.match(changed.stdout, new RegExp(`^host change: mount added: ${dir}/mnt root=/ tmpfs tmpfs rw rw \\(in a scratch directory of live process ${process.pid} of this checkout: it outlived the run\\)$`, 'm'));
  t.equal(changed.stdout.split('\n').filter((l) => l.startsWith('host change: ')).length, 3, 'one line per difference');
  t.match(changed.stdout, /^host check: 3 change\(s\) on the host/m);

  t.equal(run('compare').code, 2, 'usage error');
});

t.test("another checkout's live scratch directories are reported but not counted; this checkout's and unowned ones count", async (t) => {
  const lines = [
    'mount added: /tmp/fscrypt-local-test-a/mnt root=/ ext4 /dev/loop0 rw rw',
    'loop device removed: loop1 /tmp/fscrypt-local-test-b/fs.img',
    'mount added: /tmp/fscrypt-local-test-c/mnt root=/ tmpfs tmpfs rw rw',
    'mount added: /tmp/fscrypt-local-test-ab/mnt root=/ tmpfs tmpfs rw rw',
    'directory /tmp changed: 1777 0:0 -> 0755 0:0',
  ];
  const other = { pid: 101, cwd: '/work/elsewhere' };
  const result = attribute(lines, [{ '/tmp/fscrypt-local-test-b': other }, { '/tmp/fscrypt-local-test-a': other, '/tmp/fscrypt-local-test-c': { pid: 102, cwd: `${CHECKOUT}/test` } }], CHECKOUT);
  t.same(result.ignored, [
    `${lines[0]} (in a scratch directory of process 101, working in /work/elsewhere: another checkout's test run)`,
    `${lines[1]} (in a scratch directory of process 101, working in /work/elsewhere: another checkout's test run)`,
  ], 'owned by another checkout, live at the snapshot or now');
  t.same(result.counted, [
    `${lines[2]} (in a scratch directory of live process 102 of this checkout: it outlived the run)`,
    lines[3],
    lines[4],
  ], "this checkout's, a directory whose name only starts the same, and what no scratch directory holds");
});

t.test('liveScratch: registered directories of live processes, with their working directory; none once they exit', async (t) => {
  const run = scratchDir(t, 'fscrypt-local-run-');
  const child = spawn('sleep', ['60'], { cwd: '/', stdio: 'ignore' });
  t.teardown(() => void child.kill());
  await new Promise((resolve) => child.once('spawn', resolve));
  mkdirSync(join(run, 'fscrypt-local-test-x'));
  writeFileSync(join(run, 'fscrypt-local-test-x', 'r.json'), JSON.stringify({ pid: child.pid, dir: '/tmp/somewhere', mountpoint: '/tmp/somewhere/mnt' }));
  writeFileSync(join(run, 'fscrypt-local-test-x', 'broken.json'), '{');
  t.same(liveScratch(run), { '/tmp/somewhere': { pid: child.pid, cwd: '/' } });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill();
  await exited;
  t.same(liveScratch(run), {}, 'a dead process owns nothing');
});
