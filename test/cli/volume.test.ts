// The admin commands on a real slot (a loop-mounted ext4 -O encrypt image),
// run as child processes: init-slot, prepare --json, unlock (with and
// without a target), lock (also with busy files), rotate, erase (with and
// without the next generation), reconcile and status, their JSON results,
// the exit code of each kind of failure, and that no KEK byte ever reaches
// stdout or stderr.
import { execFileSync, spawn } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { getKeyStatus, getPolicy } from '../../lib/kernel/index.js';
import { buildCli, parseCliJson, runCli, type CliResult } from '../fixtures/cli.js';
import { ext4, tmpfs } from '../fixtures/system/scratch-fs.js';

const CLI = buildCli(t);

// Everything the CLI printed in this file, for the secret check at the end.
const printed: string[] = [];

function cli(args: string[]): CliResult {
  const result = runCli(CLI, args);
  printed.push(result.stdout, result.stderr);
  return result;
}

// Parsed CLI output: shapes are asserted with t.match, not trusted.
type Json = Record<string, any>;

function cliJson(args: string[]): CliResult & { body: Json } {
  const result = cli([...args, '--json']);
  return { ...result, body: parseCliJson<Json>(result) };
}

const work = t.testdir();
const keks: Buffer[] = [];
function kekFile(name: string, size = 32): string {
  const bytes = randomFillSync(Buffer.alloc(size));
  keks.push(bytes);
  const path = join(work, name);
  writeFileSync(path, bytes, { mode: 0o600 });
  return path;
}

const fs = ext4(t);
// A hostDir holding one slot, as the upstream provisioner lays them out: a
// slot is a mount point (here a bind mount of a directory onto itself).
const slot = join(fs.mountpoint, 'ssd0');
mkdirSync(slot);
execFileSync('mount', ['--bind', slot, slot]);
const kekA = `file:${kekFile('kek-a')}`;
const kekB = `file:${kekFile('kek-b')}`;
const kekC = `file:${kekFile('kek-c')}`;
const kekShort = `file:${kekFile('kek-short', 16)}`;
let identifier1 = '';

t.test('init-slot makes a slot, and is idempotent with the same key source', async (t) => {
  const first = cliJson(['init-slot', slot, '--key-source', kekA]);
  t.equal(first.code, 0, first.stderr);
  t.match(first.body, { ok: true, slot, created: true, protector: /^[0-9a-f]{16}$/ });
  const again = cliJson(['init-slot', slot, '--key-source', kekA]);
  t.equal(again.code, 0);
  t.match(again.body, { ok: true, created: false, protector: first.body.protector });
  const human = cli(['init-slot', slot, '--key-source', kekA]);
  t.match(human.stdout, /already initialized/);
  // --fscrypt-conf writes the stock tool's configuration (here to a private path), and keeps a valid one.
  const conf = join(fs.mountpoint, '..', 'fscrypt.conf');
  const written = cliJson(['init-slot', slot, '--key-source', kekA, '--fscrypt-conf', conf]);
  t.match(written.body, { ok: true, fscryptConf: { path: conf, action: 'written' } });
  t.match(readFileSync(conf, 'utf8'), /"policy_version": "2"/);
  t.match(cliJson(['init-slot', slot, '--key-source', kekA, '--fscrypt-conf', conf]).body, { fscryptConf: { action: 'kept' } });
});

t.test('init-slot with another key on an initialized slot: wrong key, exit 5', async (t) => {
  const result = cliJson(['init-slot', slot, '--key-source', kekB]);
  t.equal(result.code, 5);
  t.match(result.body, { ok: false, error: { code: 'ERR_WRONG_KEY' } });
});

t.test('prepare --json gives the verified volume: path, identifier, generation', async (t) => {
  const result = cliJson(['prepare', slot, '--key-source', kekA]);
  t.equal(result.code, 0, result.stderr);
  t.match(result.body, { ok: true, slot, name: 'vol-1', path: join(slot, 'vol-1'), generation: 1, identifier: /^[0-9a-f]{32}$/ });
  identifier1 = result.body.identifier as string;
  const policy = await getPolicy(join(slot, 'vol-1'));
  t.equal(policy?.version === 2 ? policy.identifier : undefined, identifier1, 'the directory carries the policy of that key');
  t.equal((await getKeyStatus(slot, identifier1)).status, 'absent', 'and is locked');
  const again = cliJson(['prepare', slot, '--key-source', kekA]);
  t.equal(again.body.identifier, identifier1, 'prepare again keeps the ready volume');
});

t.test('status --json shows the slot, its locked volume, and status of a hostDir finds its slots', async (t) => {
  const result = cliJson(['status', slot]);
  t.equal(result.code, 0);
  t.match(result.body, { ok: true, errors: [], slots: [{ root: slot, volume: { name: 'vol-1', phase: 'ready', key: 'absent', identifier: identifier1, targets: [] }, trash: [] }] });
  const viaHostDir = cliJson(['status', fs.mountpoint]);
  t.same(
    viaHostDir.body.slots.map((s: Json) => s.root),
    [slot],
    'the directory holding slots lists them',
  );
  const viaVolume = cliJson(['status', join(slot, 'vol-1')]);
  t.equal(viaVolume.body.slots[0].root, slot, 'a volume directory names its slot');
  const human = cli(['status', slot]);
  t.match(human.stdout, /SLOT\s+VOLUME\s+PHASE\s+KEY\s+TARGETS\s+TRASH/);
  t.match(human.stdout, /vol-1\s+ready\s+locked/);
});

t.test('unlock and lock: admin unlock, wrong key, lock', async (t) => {
  const wrong = cliJson(['unlock', slot, '--key-source', kekB]);
  t.equal(wrong.code, 5, 'wrong key: exit 5');
  t.equal(wrong.body.error.code, 'ERR_WRONG_KEY');
  t.equal((await getKeyStatus(slot, identifier1)).status, 'absent', 'the wrong key unlocked nothing');

  const short = cliJson(['unlock', slot, '--key-source', kekShort]);
  t.equal(short.code, 6, 'a KEK file of the wrong size: key source unusable, exit 6');
  t.equal(short.body.error.code, 'ERR_KEY_SOURCE');

  const unlocked = cliJson(['unlock', slot, '--key-source', kekA]);
  t.equal(unlocked.code, 0, unlocked.stderr);
  t.match(unlocked.body, { ok: true, path: join(slot, 'vol-1'), identifier: identifier1, targets: 0 });
  t.equal((await getKeyStatus(slot, identifier1)).status, 'present');
  writeFileSync(join(slot, 'vol-1', 'data.txt'), 'tenant data');
  t.match(cliJson(['status', slot]).body.slots[0].volume, { key: 'present', adminUnlocked: true });

  const locked = cliJson(['lock', join(slot, 'vol-1')]);
  t.equal(locked.code, 0, locked.stderr);
  t.match(locked.body, { ok: true, locked: true, targets: [] });
  t.equal((await getKeyStatus(slot, identifier1)).status, 'absent');
  t.notOk(existsSync(join(slot, 'vol-1', 'data.txt')), 'the plaintext name is gone while locked');
});

t.test('unlock --target bind-mounts the volume; erase is refused while published (exit 4); lock --target', async (t) => {
  const target = join(work, 'target');
  const result = cliJson(['unlock', slot, '--key-source', kekA, '--target', target]);
  t.equal(result.code, 0, result.stderr);
  t.equal(result.body.targets, 1);
  t.equal(readFileSync(join(target, 'data.txt'), 'utf8'), 'tenant data', 'the data is visible at the target');
  t.match(cliJson(['status', slot]).body.slots[0].volume.targets, [{ path: target, readonly: false, mounted: true }]);

  const refused = cliJson(['erase', slot, '--key-source', kekA]);
  t.equal(refused.code, 4, 'erase of a published volume: busy');
  t.equal(refused.body.error.code, 'ERR_PUBLISHED');
  t.ok(existsSync(join(target, 'data.txt')), 'nothing was erased');

  const plainLock = cliJson(['lock', slot]);
  t.equal(plainLock.code, 4, 'lock without --target or --force while published: busy');

  const unpublished = cliJson(['lock', slot, '--target', target]);
  t.equal(unpublished.code, 0, unpublished.stderr);
  t.match(unpublished.body, { locked: true });
  t.equal((await getKeyStatus(slot, identifier1)).status, 'absent');
});

t.test('lock with files still open: exit 4 naming the blocker, then lock once they are closed', async (t) => {
  t.equal(cli(['unlock', slot, '--key-source', kekA]).code, 0);
  const fd = openSync(join(slot, 'vol-1', 'data.txt'), 'r');
  let closed = false;
  t.teardown(() => {
    if (!closed) closeSync(fd);
  });
  const busy = cliJson(['lock', slot, '--busy-timeout', '0']);
  t.equal(busy.code, 4);
  t.equal(busy.body.error.code, 'ERR_FILES_BUSY');
  t.match(busy.body.error.message, String(process.pid), 'the message names the process holding the file');
  closeSync(fd);
  closed = true;
  const locked = cliJson(['lock', slot]);
  t.equal(locked.code, 0, locked.stderr);
  t.equal((await getKeyStatus(slot, identifier1)).status, 'absent');
});

t.test('status of a lock waiting for busy files: one blocker per line under the volume, tenant names escaped in it; --json keeps them whole', async (t) => {
  const target = join(work, 'target-busy');
  t.equal(cli(['unlock', slot, '--key-source', kekA, '--target', target]).code, 0);
  const name = 'held\nforged line';
  writeFileSync(join(target, name), 'tenant data');
  // A tenant's process holding a file of the volume open (from the volume directory, so the target still
  // unmounts), and naming itself with a newline; `read` is a dash builtin, so no child inherits the file.
  const holder = spawn('sh', ['-c', `exec 3<"$1"; printf 'evil\\nname' > /proc/self/comm; echo ready; read x`, 'sh', join(slot, 'vol-1', name)], {
    stdio: ['pipe', 'pipe', 'ignore'],
  });
  const exited = new Promise((resolve) => holder.once('exit', resolve));
  t.teardown(() => void holder.kill('SIGKILL'));
  await new Promise((resolve) => holder.stdout.once('data', resolve));

  const busy = cliJson(['lock', slot, '--target', target, '--busy-timeout', '0']);
  t.equal(busy.code, 4, 'the unpublish left the key behind: busy');
  t.equal(busy.body.error.code, 'ERR_FILES_BUSY');

  const human = cli(['status', slot]);
  t.equal(human.code, 0, human.stderr);
  const lines = human.stdout.split('\n');
  const header = lines.findIndex((l) => l.endsWith('a lock is waiting for busy files:'));
  t.ok(header >= 0, 'the pending lock is told on a line of its own');
  const under = lines.slice(header + 1);
  const blockers = under.slice(0, Math.max(0, under.findIndex((l) => !l.startsWith('    '))));
  t.same(blockers.length, 1, 'one blocker, one line');
  t.match(blockers[0], new RegExp(`^ {4}pid ${holder.pid} \\(evil\\\\nname\\) has .*held\\\\nforged line open$`), 'the process and its file, newlines escaped inside the line');
  t.notOk(
    lines.some((l) => /^(name\)|forged line)/.test(l)),
    'no tenant name starts a line',
  );

  const json = cliJson(['status', slot]);
  t.match(
    json.body.slots[0].volume,
    { key: 'incompletely-removed', targets: [{ path: target, mounted: false }], pendingLock: { blockers: [{ kind: 'open-file', pid: holder.pid, command: 'evil\nname', path: /held\nforged line$/ }] } },
    '--json gives the blockers as data, names unescaped',
  );

  holder.kill('SIGKILL');
  await exited;
  t.equal(cli(['lock', slot]).code, 0, 'locked once the holder is gone');
  t.equal((await getKeyStatus(slot, identifier1)).status, 'absent');
  t.notOk(existsSync(target), 'the unpublished target is removed');
});

t.test('rotate moves the slot to a new key source; the old one no longer opens it', async (t) => {
  const wrong = cliJson(['rotate', slot, '--key-source', kekB, '--new-key-source', kekC]);
  t.equal(wrong.code, 5, 'rotating with the wrong current key: exit 5');
  const result = cliJson(['rotate', slot, '--key-source', kekA, '--new-key-source', kekC]);
  t.equal(result.code, 0, result.stderr);
  t.match(result.body, { ok: true, slot, protector: { source: 'raw_key', descriptor: /^[0-9a-f]{16}$/ } });
  t.equal(cliJson(['unlock', slot, '--key-source', kekA]).code, 5, 'old key: exit 5');
  t.equal(cli(['unlock', slot, '--key-source', kekC]).code, 0, 'new key unlocks');
  t.equal(readFileSync(join(slot, 'vol-1', 'data.txt'), 'utf8'), 'tenant data', 'data untouched');
  t.equal(cli(['lock', slot]).code, 0);
});

t.test('erase crypto-erases, prepares the next generation and waits for the old ciphertext to go', async (t) => {
  const wrong = cliJson(['erase', slot, '--key-source', kekA]);
  t.equal(wrong.code, 5, 'the key source is checked before anything is erased');
  t.ok(existsSync(join(slot, 'vol-1')), 'vol-1 still there');

  const result = cliJson(['erase', slot, '--key-source', kekC]);
  t.equal(result.code, 0, result.stderr);
  t.match(result.body, {
    ok: true,
    erased: { name: 'vol-1', identifier: identifier1 },
    prepared: { name: 'vol-2', generation: 2, identifier: /^[0-9a-f]{32}$/ },
    trash: { deleted: true, left: [] },
  });
  t.not(result.body.prepared.identifier, identifier1, 'a new key');
  t.notOk(existsSync(join(slot, 'vol-1')), 'the old directory is gone');
  t.notOk(existsSync(join(slot, '.fscrypt', 'policies', identifier1)), 'the wrapped old key is gone');
  t.equal((await getKeyStatus(slot, identifier1)).status, 'absent');
  t.same(readdirSync(join(slot, '.fscrypt-local', 'trash')), [], 'nothing left in the trash');
  t.match(cliJson(['status', slot]).body.slots[0].volume, { name: 'vol-2', phase: 'ready', key: 'absent' });
});

t.test('erase --no-prepare --no-wait leaves the slot without a volume; prepare makes the next one', async (t) => {
  const result = cliJson(['erase', join(slot, 'vol-2'), '--no-prepare', '--no-wait']);
  t.equal(result.code, 0, result.stderr);
  t.match(result.body, { ok: true, erased: { name: 'vol-2' }, prepared: null });
  t.equal(cliJson(['status', slot]).body.slots[0].volume, null);
  const human = cli(['status', slot]);
  t.match(human.stdout, /no volume/);
  const noVolume = cliJson(['unlock', slot, '--key-source', kekC]);
  t.equal(noVolume.code, 8, 'unlock of a slot without a volume: state, exit 8');
  const next = cliJson(['prepare', slot, '--key-source', kekC]);
  t.equal(next.code, 0, next.stderr);
  t.match(next.body, { name: 'vol-3', generation: 3 });
});

t.test('reconcile finds a consistent slot and finishes any deletion left behind', async (t) => {
  const result = cliJson(['reconcile', slot, '--key-source', kekC]);
  t.equal(result.code, 0, result.stderr);
  t.match(result.body, { ok: true, slot, warnings: [], trash: { deleted: true } });
  t.same(readdirSync(join(slot, '.fscrypt-local', 'trash')), []);
});

t.test('failures map to their exit codes', async (t) => {
  const missing = cliJson(['prepare', join(fs.mountpoint, 'no-such-slot'), '--key-source', kekA]);
  t.equal(missing.code, 8, 'a slot path that does not exist: exit 8');
  t.equal(missing.body.error.code, 'ENOENT');

  const plain = join(fs.mountpoint, 'plain-dir');
  mkdirSync(plain);
  const notMounted = cliJson(['prepare', plain, '--key-source', kekA]);
  t.equal(notMounted.code, 8, 'a directory that is not a mount point: exit 8');
  t.match(notMounted.body.error, { code: 'ERR_NOT_MOUNTPOINT', message: /is not a mount point.*mount the slot's disk/ });
  const notASlot = cliJson(['init-slot', plain, '--key-source', kekA]);
  t.equal(notASlot.code, 8, 'init-slot refuses a directory that is not a mount point');
  t.match(notASlot.body.error, { code: 'ERR_NOT_MOUNTPOINT' });
  execFileSync('mount', ['--bind', plain, plain]);
  const uninitialized = cliJson(['prepare', plain, '--key-source', kekA]);
  t.equal(uninitialized.code, 8, 'a mount point that is not a slot: exit 8');
  t.match(uninitialized.body.error, { code: 'ERR_NOT_INITIALIZED', message: new RegExp(`'${plain}' is not an initialized slot.*init-slot`) });

  const statusMissing = cliJson(['status', slot, join(fs.mountpoint, 'no-such-slot')]);
  t.equal(statusMissing.code, 8, 'status with one bad path: exit 8');
  t.equal(statusMissing.body.ok, false);
  t.equal(statusMissing.body.slots.length, 1, 'the good path is still shown');
  t.match(statusMissing.body.errors, [{ path: join(fs.mountpoint, 'no-such-slot'), code: 'ENOENT' }]);

  const noKekFile = cliJson(['unlock', slot, '--key-source', `file:${join(work, 'absent-kek')}`]);
  t.equal(noKekFile.code, 6, 'an unreadable KEK file: exit 6');

  const ram = tmpfs(t);
  const unsupported = cliJson(['init-slot', ram.mountpoint, '--key-source', kekA]);
  t.equal(unsupported.code, 7, 'init-slot on tmpfs: not supported, exit 7');
  t.equal(unsupported.body.error.code, 'ERR_NOT_SUPPORTED');
  const human = cli(['init-slot', ram.mountpoint, '--key-source', kekA]);
  t.match(human.stderr, /^fscrypt-local init-slot: error: .*tmpfs/m, 'a readable error on stderr');
  t.match(human.stderr, /\(ERR_NOT_SUPPORTED, exit 7\)/);
});

t.test('no KEK byte ever appeared on stdout or stderr, in hex or base64', async (t) => {
  const all = printed.join('\n');
  t.ok(all.length > 1000, 'the CLI printed things to check');
  for (const kek of keks) {
    for (const encoding of ['hex', 'base64', 'base64url'] as const) {
      t.notOk(all.includes(kek.toString(encoding)), `KEK not printed as ${encoding}`);
    }
    t.notOk(all.toLowerCase().includes(kek.toString('hex').slice(0, 16)), 'not even a prefix in hex');
  }
});
