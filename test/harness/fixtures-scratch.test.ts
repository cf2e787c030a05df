// The scratch fixtures change nothing outside what they make: a filesystem
// other users must reach gets its own scratch directory opened (0755), never
// TMPDIR or a parent; when a parent is closed to others, the fixture says so
// and changes nothing.
import { readdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname } from 'node:path';
import t from 'tap';
import { kernelCallAs } from '../fixtures/helpers.js';
import { ext4, scratchDir } from '../fixtures/system/scratch-fs.js';

const mode = (path: string): number => statSync(path).mode & 0o7777;

t.test('reachable: nobody can use the mount; only the scratch directory was opened, TMPDIR is as it was', async (t) => {
  const tmp = tmpdir();
  const before = statSync(tmp);
  const fs = ext4(t, { reachable: true });
  t.equal(mode(dirname(fs.mountpoint)), 0o755, 'the scratch directory');
  t.equal(mode(fs.mountpoint), 0o755, 'the filesystem root');
  const after = statSync(tmp);
  t.same([mode(tmp), after.uid, after.gid], [before.mode & 0o7777, before.uid, before.gid], `${tmp} untouched`);
  t.same(kernelCallAs('getPolicy', [fs.mountpoint]), { ok: true, result: null }, 'uid 65534 reaches the mount');

  const closed = ext4(t);
  t.equal(mode(dirname(closed.mountpoint)), 0o700, 'by default the scratch directory is private');
  t.match(kernelCallAs('getPolicy', [closed.mountpoint]), { ok: false, error: { code: 'EACCES' } }, 'and uid 65534 cannot reach it');
});

t.test('reachable under a TMPDIR closed to others: a clear error, and nothing changed or made', async (t) => {
  const closed = scratchDir(t, 'fscrypt-local-closed-');
  t.equal(mode(closed), 0o700);
  const saved = process.env.TMPDIR;
  process.env.TMPDIR = closed;
  try {
    t.throws(() => ext4(t, { reachable: true }), {
      message: new RegExp(`other users \\(uid 65534\\) cannot reach ${closed}: ${closed} has mode 0700.*TMPDIR=/tmp`),
    });
  } finally {
    if (saved === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = saved;
  }
  t.equal(mode(closed), 0o700, 'its mode is unchanged');
  t.same(readdirSync(closed), [], 'nothing was made in it');
});
