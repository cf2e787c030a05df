// The blocker scan and status against hostile tenant processes, on the real
// kernel: working directories, open files and mapped programs inside a
// published volume under names in any bytes, programs whose command names
// hold terminal escapes and newlines, FIFOs and device nodes held open.
// Every one is named, exactly in JSON and escaped to one line in text (an
// error, an Event, `fscrypt-local status`), and the scan opens none of them.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { copyFileSync, chmodSync, mkdirSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { describeBlockers, findBlockers, lock, prepare, slotStatus, unlock, type Blocker } from '../../lib/volume/index.js';
import { recordFigure } from '../fixtures/campaign/campaign.js';
import { runCli } from '../../lib/cli/program.js';
import { failure } from '../fixtures/helpers.js';
import { blockedOnFifo, bytesPath, canaryBlockDevice, HOSTILE_NAMES } from '../fixtures/campaign/hostile-tree.js';
import { scratchDir } from '../fixtures/system/scratch-fs.js';
import { freshSlot, podTargets } from '../fixtures/volume-slot.js';

const COMMAND = 'npx tap test/volume/hostile-blockers.test.ts';
const newTarget = podTargets(t);
// Parsed CLI output: shapes are asserted with t.match, not trusted.
type Json = Record<string, any>;

// Everything but a line break that could forge a line or drive a terminal.
const CONTROL = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/u;

/**
 * `fscrypt-local ARGS` run in this process, its stdout captured. In-process
 * rather than built and spawned (test/fixtures/cli.ts): the same code, and
 * the build would cost this file most of its time budget on a slow VM.
 */
async function cli(args: string[]): Promise<{ code: number; stdout: string }> {
  let stdout = '';
  const write = process.stdout.write;
  process.stdout.write = ((chunk: string | Uint8Array) => {
    stdout += String(chunk);
    return true;
  }) as typeof process.stdout.write;
  try {
    return { code: await runCli(['node', 'fscrypt-local', ...args]), stdout };
  } finally {
    process.stdout.write = write;
  }
}

/** A name as a printf(1) format: every byte octal, so the shell passes the exact bytes (none of these names ends in a newline). */
function octal(name: Buffer): string {
  return [...name].map((byte) => `\\${byte.toString(8).padStart(3, '0')}`).join('');
}

/** A process of the tenant, started by sh with $1 (and $2) decoded to exact bytes; it prints "ready" when set up. Killed at teardown. */
async function tenant(t: { teardown(fn: () => Promise<void>): void }, script: string, ...names: Buffer[]): Promise<ChildProcess> {
  const decode = names.map((_, i) => `n${i + 1}=$(printf '${octal(names[i]!)}'); `).join('');
  const proc = spawn('sh', ['-c', `${decode}${script}`], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGKILL');
      await once(proc, 'exit');
    }
  });
  let output = '';
  for await (const chunk of proc.stdout!) {
    output += String(chunk);
    if (output.includes('ready')) break;
  }
  if (!output.includes('ready')) throw new Error(`tenant process failed: ${script}`);
  // "ready" comes from the shell; the scan must see what it execs next.
  while (readFileSync(`/proc/${proc.pid}/comm`, 'utf8') === 'sh\n') await new Promise((resolve) => setTimeout(resolve, 5));
  return proc;
}

async function stop(procs: ChildProcess[]): Promise<void> {
  for (const proc of procs) {
    if (proc.exitCode !== null || proc.signalCode !== null) continue;
    proc.kill('SIGKILL');
    await once(proc, 'exit');
  }
}

/** The command name the kernel gives a program run by this file name: its first 15 bytes. */
function commandOf(name: Buffer): string {
  return name.subarray(0, 15).toString('utf8');
}

const sortBlockers = (blockers: Blocker[]): Blocker[] =>
  [...blockers].sort((a, b) => (a.pid ?? 0) - (b.pid ?? 0) || a.kind.localeCompare(b.kind) || a.path.localeCompare(b.path));

const { slot, protector } = await freshSlot(t);
const volume = await prepare(slot, protector);

/** Tenant processes under every hostile name below `base`: a working directory, a program run, a file open, a root directory. */
async function startTenants(t: { teardown(fn: () => Promise<void>): void }, base: string): Promise<{ procs: ChildProcess[]; expected: Blocker[] }> {
  const expected: Blocker[] = [];
  const procs: ChildProcess[] = [];
  for (const name of HOSTILE_NAMES) {
    const inDir = await tenant(t, 'cd "$n1" && echo ready && exec sleep 60', bytesPath(base, 'dirs', name));
    expected.push({ kind: 'cwd', pid: inDir.pid!, command: 'sleep', path: bytesPath(base, 'dirs', name).toString('utf8') });
    const program = await tenant(t, 'echo ready; exec "$n1" 60', bytesPath(base, 'bin', name));
    expected.push({ kind: 'mmap', pid: program.pid!, command: commandOf(name), path: bytesPath(base, 'bin', name).toString('utf8') });
    // Opened by the shell, kept by sleep.
    const reader = await tenant(t, 'exec 3<"$n1"; echo ready; exec sleep 60', bytesPath(base, name));
    expected.push({ kind: 'open-file', pid: reader.pid!, command: 'sleep', path: bytesPath(base, name).toString('utf8') });
    // Chrooted there (perl-base is in every Debian: chroot(2) without a binary inside the new root).
    const jailed = await tenant(t, `exec perl -e 'chroot($ARGV[0]) or die "chroot: $!"; $| = 1; print "ready\\n"; sleep 60' "$n1"`, bytesPath(base, 'dirs', name));
    expected.push({ kind: 'root', pid: jailed.pid!, command: 'perl', path: bytesPath(base, 'dirs', name).toString('utf8') });
    procs.push(inDir, program, reader, jailed);
  }
  return { procs, expected };
}

/** Checks a text of blocker lines: one line each, nothing unprintable, none forged. */
function checkEscaped(t: Test, text: string, count: number): void {
  const lines = text.split('\n');
  t.equal(lines.length, count, 'one line per blocker: no name breaks a line');
  t.notMatch(text, CONTROL, 'no control character, escape or bidi override reaches the text');
  t.ok(lines.every((line) => /^(pid \d+ \(|the mount at )/.test(line)), 'every line starts as a blocker line: none is forged');
  t.ok(text.includes('dirs/new\\nline'), 'a newline is shown as \\n');
  t.ok(text.includes('\\u001b[31mred'), 'an escape sequence is shown, not sent');
  t.ok(text.includes('rtl\\u202eexe.txt'), 'a bidi override is shown, not applied');
}

t.test('processes inside under names in any bytes: named exactly in JSON, one escaped line each in text', async (t) => {
  const target = await newTarget();
  await unlock(volume, protector, { path: target });
  mkdirSync(join(target, 'bin'));
  for (const name of HOSTILE_NAMES) {
    mkdirSync(bytesPath(target, 'dirs', name), { recursive: true });
    writeFileSync(bytesPath(target, name), 'tenant data');
    copyFileSync('/bin/sleep', bytesPath(target, 'bin', name));
    chmodSync(bytesPath(target, 'bin', name), 0o755);
  }

  // The pod's view: paths through the target, which is itself a bind mount of the volume.
  const inPod = await startTenants(t, target);
  const podExpected: Blocker[] = [{ kind: 'mount', path: target, source: '/vol-1' }, ...inPod.expected];
  const blockers = await findBlockers(volume.path);
  t.same(sortBlockers(blockers), sortBlockers(podExpected), `all ${podExpected.length} are named, paths and command names as they are (bytes that are not UTF-8 as U+FFFD)`);
  checkEscaped(t, describeBlockers(blockers, blockers.length), blockers.length);
  const unpublish = await failure(() => lock(volume, target, { busyTimeoutMs: 100 }));
  t.match(unpublish, { code: 'EBUSY', message: /cannot unmount/ }, 'the unpublish cannot unmount the target');
  t.notMatch(unpublish.message, CONTROL, 'the error message carries no control character');
  t.equal(unpublish.message.split('\n').length, 1 + 20 + 1, 'its header, 20 blockers and the count of the rest: no more lines');
  await stop(inPod.procs);

  // The node's view: the same names through the volume directory, the target unmounted, the key busy.
  const onNode = await startTenants(t, volume.path);
  const busy = await failure(() => lock(volume, target, { busyTimeoutMs: 100 }));
  t.match(busy, { code: 'ERR_FILES_BUSY' }, 'the target is unmounted, but the key cannot leave the kernel');
  t.notMatch(busy.message, CONTROL, 'the error message carries no control character');
  t.equal(busy.message.split('\n').length, 1 + 20 + 1 + 1, 'its header, 20 blockers, the count of the rest, and what to do');
  const status = await slotStatus(slot);
  t.same(sortBlockers(status.volume!.pendingLock!.blockers), sortBlockers(onNode.expected), 'slotStatus names every one, exactly');
  const json = JSON.parse((await cli(['status', slot, '--json'])).stdout) as Json;
  t.same(sortBlockers(json.slots[0].volume.pendingLock.blockers), sortBlockers(onNode.expected), 'status --json keeps every path and command name exact');
  const human = await cli(['status', slot]);
  t.equal(human.code, 0);
  t.notMatch(human.stdout, CONTROL, 'status text: no control character reaches the terminal');
  const lines = human.stdout.split('\n');
  t.same(
    lines.filter((line) => !(line === '' || line.startsWith('SLOT') || line.startsWith(slot) || line.startsWith('    '))),
    [],
    'status text: every line is the table header, starts with the slot, or is a blocker indented under it: nothing forged',
  );
  const shown = Math.min(onNode.expected.length, 20);
  t.equal(
    lines.filter((line) => line.startsWith('    ')).length,
    shown + (onNode.expected.length > 20 ? 1 : 0),
    `one indented line per blocker shown (${shown}), and the count of the rest: a name with a newline did not add one`,
  );
  t.ok(human.stdout.includes('has its working directory at'), 'and names the blockers');

  await stop(onNode.procs);
  t.match(await lock(volume, target), { locked: true }, 'once they are gone, the lock completes');
  t.same(await findBlockers(volume.path), []);
  recordFigure({ area: 'hostile fs', name: 'blocker scan and status: processes under hostile names (cwd, root, open file, mapped program, command name) named exactly', value: podExpected.length + onNode.expected.length, command: COMMAND });
});

t.test('FIFOs and device nodes held inside: named, never opened by the scan', async (t) => {
  const scratch = scratchDir(t);
  const blockDevice = canaryBlockDevice(t, scratch);
  const target = await newTarget();
  await unlock(volume, protector, { path: target });
  execFileSync('mkfifo', [join(target, 'held-fifo')]);
  execFileSync('mkfifo', [join(target, 'waiting-fifo')]);
  execFileSync('mknod', [join(target, 'null-dev'), 'c', '1', '3']);
  execFileSync('mknod', [join(target, 'block-dev'), 'b', ...blockDevice.numbers.split(' ')]);
  const before = blockDevice.sha256();

  // O_RDWR on a FIFO does not wait for a partner; the device nodes are opened as a privileged pod could.
  const holder = await tenant(t, `exec 3<>"${target}/held-fifo" 4>"${target}/null-dev" 5<"${target}/block-dev"; echo ready; exec sleep 60`);
  // A writer waiting for a reader: it is released only if something opens the FIFO to read.
  const writer = spawn('sh', ['-c', `echo data > "${target}/waiting-fifo"; echo opened`], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(async () => {
    if (writer.exitCode === null && writer.signalCode === null) {
      writer.kill('SIGKILL');
      await once(writer, 'exit');
    }
  });
  let written = '';
  writer.stdout.on('data', (chunk) => (written += String(chunk)));
  await once(writer, 'spawn');
  t.ok(await blockedOnFifo(writer.pid!), 'the writer waits for a reader');

  const blockers = await findBlockers(volume.path);
  t.same(
    blockers.filter((b) => b.pid === holder.pid),
    [
      { kind: 'open-file', pid: holder.pid, command: 'sleep', path: join(target, 'block-dev') },
      { kind: 'open-file', pid: holder.pid, command: 'sleep', path: join(target, 'held-fifo') },
      { kind: 'open-file', pid: holder.pid, command: 'sleep', path: join(target, 'null-dev') },
    ],
    'the FIFO and both device nodes are named',
  );
  const status = await slotStatus(slot);
  t.equal(status.volume!.targets.length, 1, 'status works while they are held');
  t.equal(written, '', 'the waiting writer was not released: the scan opened no FIFO');
  const state = readFileSync(`/proc/${writer.pid}/stat`, 'utf8').replace(/^.*\) /s, '')[0];
  t.ok(state === 'S' || state === 'D', 'it still waits in open()');
  t.ok(readdirSync(`/proc/${writer.pid}/fd`).every((fd) => !readlinkSync(`/proc/${writer.pid}/fd/${fd}`).includes('fifo')), 'with no FIFO open');
  t.equal(blockDevice.sha256(), before, 'the block device was not written');

  await stop([holder, writer]);
  t.match(await lock(volume, target), { locked: true });
  recordFigure({ area: 'hostile fs', name: 'blocker scan: FIFOs and device nodes held, none opened', value: 4, command: COMMAND });
});
