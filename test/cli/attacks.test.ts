// The attacker's findings at the command line, through the built CLI as a
// child process: a damaged slot state is refused with the way out
// (--use-previous-state), and that way out never costs data; prepare's
// --mode is exact whatever the umask; status's text output shows names
// with control characters escaped, so a directory name cannot forge lines
// or drive the admin's terminal.
import { execFileSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { existsSync, lstatSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { addKey, removeKey } from '../../lib/kernel/index.js';
import type { OpenProtector } from '../../lib/keys/index.js';
import { initSlot, lock, openSlotProtector, prepare, unlock, type Volume } from '../../lib/volume/index.js';
import { buildCli, parseCliJson, runCli } from '../fixtures/cli.js';
import { ext4, tmpfs } from '../fixtures/system/scratch-fs.js';
import { freshSlot } from '../fixtures/volume-slot.js';

const CLI = buildCli(t);
// Parsed CLI output: shapes are asserted with t.match, not trusted.
type Json = Record<string, any>;

function isMounted(path: string): boolean {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((line) => line.split(' ')[4] === path);
}

const HALF = 64 * 1024;
const HEADER = 8 + 8 + 4 + 32;

/** Flips one byte inside the JSON of the newest half of the slot state (see lib/volume/slot/slot-state.ts for the layout). */
function flipNewestJson(slot: string): void {
  const file = join(slot, '.fscrypt-local', 'slot.state');
  const bytes = readFileSync(file);
  const sequence = (offset: number): bigint => (bytes.subarray(offset, offset + 8).toString('latin1') === 'FSLSTAT1' ? bytes.readBigUInt64LE(offset + 8) : -1n);
  const newest = sequence(0) > sequence(HALF) ? 0 : HALF;
  bytes[newest + HEADER + 20]! ^= 0x01;
  writeFileSync(file, bytes);
}

/** Writes (or reads) a file of a volume with its key added directly, as a break-glass `fscrypt unlock` would: no hook, no state write. */
async function withKey<T>(protector: OpenProtector, volume: Volume, fn: () => Promise<T>): Promise<T> {
  const key = await protector.unwrapPolicyKey(volume.identifier);
  try {
    await addKey(volume.slot, key);
  } finally {
    key.fill(0);
  }
  try {
    return await fn();
  } finally {
    await removeKey(volume.slot, volume.identifier, { allUsers: true });
  }
}

t.test('1: reconcile refuses a damaged newest state copy, and --use-previous-state keeps a volume holding data', async (t) => {
  const { slot, protector, kek } = await freshSlot(t);
  // The state's two copies are now `preparing` (older) and `ready` (newest).
  const volume = await prepare(slot, protector);
  await withKey(protector, volume, () => writeFile(join(volume.path, 'data.txt'), 'tenant data'));
  flipNewestJson(slot);

  const human = runCli(CLI, ['reconcile', slot]);
  t.equal(human.code, 9, 'refused for safety: exit 9');
  t.match(human.stderr, /newest copy of the slot state .* is damaged.*nothing was changed.*fscrypt-local reconcile .* --use-previous-state/);
  t.match(human.stderr, /\(ERR_BAD_METADATA, exit 9\)/);
  const json = parseCliJson<Json>(runCli(CLI, ['reconcile', slot, '--key-source', `file:${kek}`, '--json']));
  t.match(json, { ok: false, error: { code: 'ERR_BAD_METADATA', message: /--use-previous-state/ } }, 'with a key source too');
  t.ok(existsSync(join(volume.path)), 'nothing was rolled back');

  const help = runCli(CLI, ['reconcile', '--help']);
  t.match(help.stdout, /--use-previous-state\s+if the newest copy of the slot state is damaged/, 'the option is in the help');

  const repaired = runCli(CLI, ['reconcile', slot, '--key-source', `file:${kek}`, '--use-previous-state', '--json']);
  t.equal(repaired.code, 0, repaired.stderr);
  t.match(parseCliJson<Json>(repaired), {
    ok: true,
    actions: ['rewrote the slot state from its intact copy'],
    warnings: [/refusing to roll back the prepare of vol-1 .* holds data/],
  });
  t.ok(existsSync(join(slot, '.fscrypt', 'policies', volume.identifier)), 'the wrapped key is kept');
  t.equal(await withKey(protector, volume, () => readFile(join(volume.path, 'data.txt'), 'utf8')), 'tenant data', 'and the data');
});

t.test('9: prepare --mode is exactly the mode asked for, whatever the umask; a bad mode changes nothing', async (t) => {
  const { slot, kek } = await freshSlot(t);
  const umask = process.umask(0o022); // the child inherits it
  t.teardown(() => void process.umask(umask));
  for (const mode of ['10000', '0888', '1.5', '-1']) {
    const bad = runCli(CLI, ['prepare', slot, '--key-source', `file:${kek}`, '--mode', mode, '--json']);
    t.equal(bad.code, 2, `--mode ${mode}: usage error`);
  }
  t.same((await readdir(slot)).filter((n) => n.startsWith('vol-')), [], 'no volume was made');
  const result = runCli(CLI, ['prepare', slot, '--key-source', `file:${kek}`, '--mode', '0777', '--json']);
  t.equal(result.code, 0, result.stderr);
  const path = parseCliJson<Json>(result).path as string;
  t.equal(lstatSync(path).mode & 0o7777, 0o777, '0777 under umask 022 is 0777');
});

t.test('3: on a slot whose disk is not mounted, status, reconcile and prepare say so, never "run init-slot"', async (t) => {
  const { fs, slot, kek } = await freshSlot(t);
  execFileSync('umount', [slot]);
  t.teardown(() => {
    if (!isMounted(slot)) execFileSync('mount', ['-o', 'loop', fs.image!, slot]);
  });
  for (const args of [['status', slot], ['reconcile', slot], ['prepare', slot, '--key-source', `file:${kek}`]]) {
    const human = runCli(CLI, args);
    t.equal(human.code, 8, `${args[0]}: exit 8`);
    t.match(human.stdout + human.stderr, /is not a mount point/, `${args[0]}: the slot is not mounted`);
    t.notMatch(human.stdout + human.stderr, /init-slot/, `${args[0]}: no advice to run init-slot`);
    t.match(parseCliJson<Json>(runCli(CLI, [...args, '--json'])), { ok: false }, `${args[0]} --json`);
  }
  t.match(parseCliJson<Json>(runCli(CLI, ['status', slot, '--json'])).errors, [{ code: 'ERR_NOT_MOUNTPOINT' }]);
  t.same(await readdir(slot), [], 'nothing was created in the bare directory');
});

t.test('5: status text says when the volume directory is not the verified one', async (t) => {
  const { slot, protector } = await freshSlot(t);
  const volume = await prepare(slot, protector);
  t.notMatch(runCli(CLI, ['status', slot]).stdout, /cannot be used/, 'nothing to say about a verified volume');
  await rename(volume.path, join(slot, 'aside'));
  await mkdir(volume.path); // e.g. a disk not mounted, its empty mount point in place
  const human = runCli(CLI, ['status', slot]);
  t.equal(human.code, 0, human.stderr);
  t.match(human.stdout, new RegExp(`${slot}: vol-1 cannot be used: it is not encrypted`), 'the text shows the problem, not just "ready"');
  t.match(parseCliJson<Json>(runCli(CLI, ['status', slot, '--json'])).slots[0].volume, { problem: /not encrypted/ });
});

t.test('e: status text escapes control characters in names; JSON keeps them as they are', async (t) => {
  const fs = ext4(t);
  const kubelet = tmpfs(t);
  // A hostDir holding one slot whose own name has a newline in it (a slot is
  // a mount point: here a bind mount of a directory onto itself).
  const slotName = 'ssd0\nssd9 vol-1 ready unlocked 1 -';
  const slot = join(fs.mountpoint, slotName);
  await mkdir(slot);
  execFileSync('mount', ['--bind', slot, slot]);
  t.teardown(() => execFileSync('umount', ['-l', slot], { stdio: 'ignore' }));
  const kek = join(fs.mountpoint, '..', 'kek');
  writeFileSync(kek, randomFillSync(Buffer.alloc(32)), { mode: 0o600 });
  const source = { kind: 'file', path: kek } as const;
  await initSlot(slot, source);
  const protector = await openSlotProtector(slot, source);
  t.teardown(() => protector.close());
  const volume = await prepare(slot, protector);
  // Names a tenant or a damaged disk could leave: trash entries, and a target path.
  await mkdir(join(slot, '.fscrypt-local', 'trash', 'vol-7\u001b[2J\u001b[31mFORGED'));
  await mkdir(join(slot, '.fscrypt-local', 'trash', 'vol-8\nFORGED: not the current volume'));
  const pod = join(kubelet.mountpoint, 'pod\rFORGED\u202e');
  await mkdir(pod);
  const target = join(pod, 'mount');
  await unlock(volume, protector, { path: target });
  t.teardown(() => lock(volume, target));

  const human = runCli(CLI, ['status', fs.mountpoint]);
  t.equal(human.code, 0, human.stderr);
  const out = human.stdout;
  t.notMatch(out, /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u202a-\u202e]/, 'no control character but the line ends reaches the terminal');
  t.notOk(out.split('\n').some((line) => /^(FORGED|ssd9)/.test(line)), 'no name starts a line of its own');
  t.ok(out.includes('ssd0\\nssd9 vol-1 ready unlocked 1 -'), 'the slot name, escaped');
  t.ok(out.includes('vol-7\\x1b[2J\\x1b[31mFORGED'), 'the escape sequence, shown');
  t.ok(out.includes('vol-8\\nFORGED: not the current volume'), 'the newline, shown');
  t.ok(out.includes('pod\\rFORGED\\u202e/mount'), 'the carriage return and the right-to-left override, shown');
  t.equal(out.trimEnd().split('\n').length, 4, 'a header, one slot, its target, its trash: four lines');

  const json = parseCliJson<Json>(runCli(CLI, ['status', fs.mountpoint, '--json']));
  t.match(json, { ok: true, slots: [{ root: slot, volume: { targets: [{ path: target }] } }] }, 'JSON carries the names unchanged');
  t.ok((json.slots[0].trash as string[]).includes('vol-7\u001b[2J\u001b[31mFORGED'));

  const missing = join(fs.mountpoint, 'gone\u001b]0;FORGED\u0007');
  const error = runCli(CLI, ['status', missing]);
  t.equal(error.code, 8);
  t.notMatch(error.stdout + error.stderr, /[\u0007\u001b]/, 'a path in an error is escaped too');
});
