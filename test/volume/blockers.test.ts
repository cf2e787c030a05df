// findBlockers on the real kernel: real processes with open files, working
// directories and mappings inside a volume directory, bind mounts from it,
// mounts on it, another mount namespace, and a locked encrypted directory
// whose key removal reports busy files.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import t from 'tap';
import { addKey, defaultPolicy, getKeyStatus, removeKey, setPolicy } from '../../lib/kernel/index.js';
import { describeBlockers, findBlockers, type Blocker } from '../../lib/volume/mounts/blockers.js';
import { randomKey } from '../fixtures/helpers.js';
import { ext4 } from '../fixtures/system/scratch-fs.js';

const fs = ext4(t);
const slot = fs.mountpoint;

interface Teardownable {
  teardown(fn: () => void | Promise<void>): void;
}

/**
 * Starts a child and waits until it printed "ready" (or, without waitReady,
 * until it was exec'ed), then until the kernel names it as the program it
 * ends up running (/proc/PID/comm): a shell's `echo ready; exec sleep 60`
 * is still `sh` for a moment after "ready", and a scan in that moment would
 * name `sh`. Killed when the test ends.
 */
async function child(t: Teardownable, command: string, args: string[], options: { cwd?: string; waitReady?: boolean } = {}): Promise<ChildProcess> {
  const proc = spawn(command, args, { stdio: ['ignore', 'pipe', 'inherit'], ...(options.cwd === undefined ? {} : { cwd: options.cwd }) });
  t.teardown(async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGKILL');
      await once(proc, 'exit');
    }
  });
  if (options.waitReady) {
    let output = '';
    for await (const chunk of proc.stdout!) {
      output += String(chunk);
      if (output.includes('ready')) break;
    }
  } else {
    await once(proc, 'spawn');
  }
  await untilRunning(proc, finalProgram(command, args));
  return proc;
}

/** The program a child runs in the end: the last `exec X` of a shell script, or the command. */
function finalProgram(command: string, args: string[]): string {
  const c = args.indexOf('-c');
  const script = c >= 0 && (command === 'sh' || args[c - 1] === 'sh') ? args[c + 1] : undefined;
  const execs = script === undefined ? [] : [...script.matchAll(/exec ("?)([^\s"]+)\1(?=\s|$)/g)].map((m) => m[2]!).filter((p) => !/^\d/.test(p));
  return basename(execs.at(-1) ?? command).slice(0, 15);
}

async function untilRunning(proc: ChildProcess, program: string): Promise<void> {
  for (let i = 0; i < 1000; i++) {
    let comm = '';
    try {
      comm = readFileSync(`/proc/${proc.pid}/comm`, 'utf8').trim();
    } catch {
      // not yet, or already gone: the test's own assertion will say
    }
    if (comm === program) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

async function stop(proc: ChildProcess): Promise<void> {
  proc.kill('SIGKILL');
  await once(proc, 'exit');
}

function umountQuietly(path: string): void {
  try {
    execFileSync('umount', ['-l', path], { stdio: 'ignore' });
  } catch {
    /* not mounted */
  }
}

/** The blockers of one pid, without the ones other tests' leftovers might add. */
function ofPid(blockers: Blocker[], pid: number | undefined): Blocker[] {
  return blockers.filter((b) => b.pid === pid);
}

// A sibling whose name extends ours: a string-prefix test would confuse them.
const vol = join(slot, 'vol-1');
const sibling = join(slot, 'vol-10');
mkdirSync(join(vol, 'data'), { recursive: true });
mkdirSync(sibling);
writeFileSync(join(vol, 'data', 'table'), 'rows');
writeFileSync(join(sibling, 'other'), 'x');

t.test('an idle directory has no blockers, even while its sibling vol-10 is busy', async (t) => {
  await child(t, 'sleep', ['60'], { cwd: sibling });
  await child(t, 'sh', ['-c', 'exec 3<"$1"; echo ready; exec sleep 60', 'sh', join(sibling, 'other')], { waitReady: true });
  t.same(await findBlockers(vol), []);
  t.equal((await findBlockers(sibling)).length, 2, 'the sibling itself is busy');
  t.same(describeBlockers([]), '');
});

t.test('a process with a file open inside, and one with its working directory inside', async (t) => {
  const file = join(vol, 'data', 'table');
  const reader = await child(t, 'sh', ['-c', 'exec 3<"$1"; echo ready; exec sleep 60', 'sh', file], { waitReady: true });
  const worker = await child(t, 'sleep', ['60'], { cwd: join(vol, 'data') });
  const blockers = await findBlockers(vol);
  t.same(ofPid(blockers, reader.pid), [{ kind: 'open-file', pid: reader.pid, command: 'sleep', path: file }]);
  t.same(ofPid(blockers, worker.pid), [{ kind: 'cwd', pid: worker.pid, command: 'sleep', path: join(vol, 'data') }]);
  t.equal(blockers.length, 2, 'nothing else');
  t.same(
    describeBlockers(blockers).split('\n').sort(),
    [`pid ${reader.pid} (sleep) has ${file} open`, `pid ${worker.pid} (sleep) has its working directory at ${join(vol, 'data')}`].sort(),
  );
  await stop(reader);
  await stop(worker);
  t.same(await findBlockers(vol), [], 'gone once they exit');
});

t.test('a deleted file still held open, and a program mapped from inside, are reported', async (t) => {
  const temp = join(vol, 'data', 'temp');
  writeFileSync(temp, 'scratch');
  const holder = await child(t, 'sh', ['-c', 'exec 3<"$1"; rm "$1"; echo ready; exec sleep 60', 'sh', temp], { waitReady: true });
  mkdirSync(join(vol, 'bin'), { recursive: true });
  const program = join(vol, 'bin', 'my-sleep');
  copyFileSync('/bin/sleep', program);
  execFileSync('chmod', ['755', program]);
  const mapped = await child(t, program, ['60']);
  const blockers = await findBlockers(vol);
  t.same(ofPid(blockers, holder.pid), [{ kind: 'open-file', pid: holder.pid, command: 'sleep', path: temp, deleted: true }]);
  t.same(ofPid(blockers, mapped.pid), [{ kind: 'mmap', pid: mapped.pid, command: 'my-sleep', path: program }]);
  t.match(describeBlockers(blockers), `has ${temp} (deleted) open`);
  t.match(describeBlockers(blockers), `pid ${mapped.pid} (my-sleep) has ${program} mapped in memory`);
});

t.test('a bind mount whose source is inside, a mount on a path inside, and a file opened through a bind mount elsewhere', async (t) => {
  const target = join(slot, 'kubelet-target');
  mkdirSync(target);
  mkdirSync(join(vol, 'mnt'));
  execFileSync('mount', ['--bind', join(vol, 'data'), target]);
  execFileSync('mount', ['-t', 'tmpfs', 'tmpfs-in-vol', join(vol, 'mnt')]);
  t.teardown(() => {
    umountQuietly(target);
    umountQuietly(join(vol, 'mnt'));
  });
  // The process sees only the target's path, which shares nothing with vol-1's.
  const reader = await child(t, 'sh', ['-c', 'exec 3<"$1"; echo ready; exec sleep 60', 'sh', join(target, 'table')], { waitReady: true });

  const blockers = await findBlockers(vol);
  t.same(blockers.filter((b) => b.pid === undefined), [
    { kind: 'mount', path: target, source: '/vol-1/data' },
    { kind: 'mount-point', path: join(vol, 'mnt'), source: 'tmpfs-in-vol' },
  ]);
  t.same(ofPid(blockers, reader.pid), [{ kind: 'open-file', pid: reader.pid, command: 'sleep', path: join(target, 'table') }]);
  t.match(describeBlockers(blockers), `the mount at ${target} has its source inside (/vol-1/data on the filesystem)`);
  t.match(describeBlockers(blockers), `tmpfs-in-vol is mounted on ${join(vol, 'mnt')}`);
  t.same(await findBlockers(sibling), [], 'none of it concerns vol-10');

  await stop(reader);
  execFileSync('umount', [target]);
  execFileSync('umount', [join(vol, 'mnt')]);
  t.same(await findBlockers(vol), []);
});

t.test('a process in another mount namespace, with a private bind mount from inside', async (t) => {
  const target = join(slot, 'private-target');
  mkdirSync(target);
  const script = 'mount --bind "$1" "$2" && cd "$2" && echo ready && exec sleep 60';
  const proc = await child(t, 'unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script, 'sh', join(vol, 'data'), target], { waitReady: true });
  const blockers = ofPid(await findBlockers(vol), proc.pid);
  t.same(blockers, [
    { kind: 'mount', pid: proc.pid, command: 'sleep', path: target, source: '/vol-1/data' },
    { kind: 'cwd', pid: proc.pid, command: 'sleep', path: target },
  ]);
  t.match(describeBlockers(blockers), `in the mount namespace of pid ${proc.pid} (sleep)`);
  await stop(proc);
  t.same(await findBlockers(vol), [], 'the namespace and its mount died with the process');
});

t.test('busy files of a locked encrypted directory: the blocker found is what makes key removal incomplete', async (t) => {
  const key = randomKey();
  const id = await addKey(slot, key);
  const enc = join(slot, 'vol-enc');
  mkdirSync(enc);
  await setPolicy(enc, defaultPolicy(id));
  mkdirSync(join(enc, 'work'));
  const worker = await child(t, 'sleep', ['60'], { cwd: join(enc, 'work') });

  t.same(await removeKey(slot, id, { allUsers: true }), { filesBusy: true, otherUsers: false });
  t.equal((await getKeyStatus(slot, id)).status, 'incompletely-removed');
  const blockers = await findBlockers(enc);
  t.equal(blockers.length, 1);
  t.match(blockers[0], { kind: 'cwd', pid: worker.pid, command: 'sleep' });
  t.ok(blockers[0]!.path.startsWith(`${enc}/`), `reported under the directory: ${blockers[0]!.path}`);

  await stop(worker);
  t.same(await removeKey(slot, id, { allUsers: true }), { filesBusy: false, otherUsers: false });
  t.equal((await getKeyStatus(slot, id)).status, 'absent');
  t.same(await findBlockers(enc), []);
});

t.test('describeBlockers writes one line per blocker, up to a limit', async (t) => {
  const blockers: Blocker[] = Array.from({ length: 5 }, (_, i) => ({ kind: 'open-file', pid: 100 + i, command: 'postgres', path: `/x/y${i}` }));
  t.equal(describeBlockers(blockers.slice(0, 1)), 'pid 100 (postgres) has /x/y0 open');
  t.equal(describeBlockers(blockers, 3).split('\n').length, 4);
  t.match(describeBlockers(blockers, 3), /… and 2 more$/);
  t.equal(describeBlockers([{ kind: 'cwd', pid: 7, path: '/a\nb' }]), 'pid 7 has its working directory at /a\\nb', 'a newline in a name does not split the line');
});

t.test('a directory that does not exist is an error', async (t) => {
  await t.rejects(findBlockers(join(slot, 'missing')), { code: 'ENOENT' });
});

t.test('a process holding a path longer than PATH_MAX (readlink: ENAMETOOLONG) does not break the scan', async (t) => {
  const deep = join(slot, 'deep');
  mkdirSync(deep);
  // 30 components of 200 bytes: past PATH_MAX (4096), reachable only step by
  // step; the process keeps a file open there and its working directory in it.
  const script = `const fs = require('fs'); process.chdir(${JSON.stringify(deep)});
for (let i = 0; i < 30; i++) { fs.mkdirSync('d'.repeat(200)); process.chdir('d'.repeat(200)); }
fs.writeFileSync('f', 'x'); globalThis.fd = fs.openSync('f', 'r'); console.log('ready'); setTimeout(() => {}, 60000);`;
  const holder = await child(t, process.execPath, ['-e', script], { waitReady: true });
  await t.resolves(findBlockers(vol), 'a scan of another directory ignores the unreadable link');
  t.same(ofPid(await findBlockers(vol), holder.pid), []);
  await t.resolves(findBlockers(deep), 'and so does a scan of the directory holding it');
  await stop(holder);
});
