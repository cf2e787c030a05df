// Racing tenants on the real kernel: a process that keeps moving directories
// of a tree away and putting symlinks to a canary outside in their place,
// while the tree remover deletes the tree, the blocker scan reads /proc and
// status looks at the slot; processes that start and exit mid-scan. Race
// windows are small, so each race is run many times. Nothing outside is
// deleted, read through or changed; every walk finishes or fails with a
// typed error; every scan names what stays.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, lstatSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { FscryptError } from '../../lib/kernel/index.js';
import { findBlockers, prepare, removeTree, slotStatus, unlock, lock } from '../../lib/volume/index.js';
import { fuzzRuns, recordFigure } from '../fixtures/campaign/campaign.js';
import { canaryFacts, makeCanary, type InodeFacts } from '../fixtures/campaign/hostile-tree.js';
import { ext4, scratchDir } from '../fixtures/system/scratch-fs.js';
import { freshSlot, podTargets } from '../fixtures/volume-slot.js';

const COMMAND = 'npx tap test/volume/hostile-race.test.ts';
const RUNS_NOTE = '(FSCRYPT_LOCAL_FUZZ_RUNS=N for more)';
const newTarget = podTargets(t);

/**
 * The racer: for `rounds` rounds (forever if 0), moves each of `targets`
 * (paths whose parents it never swaps, so it never acts through a symlink
 * itself) out to `aside` and puts a symlink to `canary` in its place, then
 * takes the symlinks away and makes fresh directories there, and hard-links
 * `canaryFile` into the tree's root. Prints "ready" first and the number of
 * swaps on exit.
 */
const RACER = `
const fs = require('fs');
const [aside, canary, canaryFile, linkDir, rounds, ...targets] = process.argv.slice(1);
let swaps = 0, k = 0;
const quiet = (f) => { try { f(); } catch {} };
process.stdout.write('ready\\n');
for (let round = 0; Number(rounds) === 0 || round < Number(rounds); round++) {
  for (const p of targets) {
    quiet(() => fs.renameSync(p, aside + '/' + process.pid + '-' + k++));
    quiet(() => { fs.symlinkSync(canary, p); swaps++; });
  }
  quiet(() => fs.linkSync(canaryFile, linkDir + '/hard-' + k++));
  for (const p of targets) {
    quiet(() => { if (fs.lstatSync(p).isSymbolicLink()) fs.unlinkSync(p); });
    quiet(() => { fs.mkdirSync(p); fs.writeFileSync(p + '/refill', 'x'); });
  }
}
process.stdout.write(swaps + '\\n');
`;

async function startRacer(t: { teardown(fn: () => Promise<void>): void }, args: string[], cwd?: string): Promise<{ proc: ChildProcess; swaps: Promise<number> }> {
  const proc = spawn(process.execPath, ['-e', RACER, ...args], { stdio: ['ignore', 'pipe', 'inherit'], ...(cwd === undefined ? {} : { cwd }) });
  t.teardown(async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGKILL');
      await once(proc, 'exit');
    }
  });
  let output = '';
  let ready!: () => void;
  const isReady = new Promise<void>((resolve) => (ready = resolve));
  proc.stdout!.on('data', (chunk) => {
    output += String(chunk);
    if (output.startsWith('ready\n')) ready();
  });
  const swaps = once(proc, 'exit').then(() => Number(output.slice('ready\n'.length).trim() || 0));
  await Promise.race([isReady, once(proc, 'exit')]);
  return { proc, swaps };
}

/** The facts of a hard-link target that a link added or removed does not change (its link count and ctime do). */
function linkedFileFacts(path: string): Omit<InodeFacts, 'nlink' | 'ctimeMs'> {
  const { nlink: _nlink, ctimeMs: _ctime, ...rest } = canaryFacts(path)['.']!;
  return rest;
}

/** A tree of `width` directories, each `depth` deep, each level with `files` files, plus the racer's nested targets. */
function buildTree(root: string, width: number, depth: number, files: number): void {
  for (let d = 0; d < width; d++) {
    let dir = join(root, `d${d}`);
    for (let level = 0; level < depth; level++, dir = join(dir, 'sub')) {
      mkdirSync(dir, { recursive: true });
      for (let f = 0; f < files; f++) writeFileSync(join(dir, `f${f}`), `${d} ${level} ${f}`);
    }
  }
  for (let y = 0; y < 4; y++) {
    mkdirSync(join(root, 'nest', 'x', `y${y}`, 'z'), { recursive: true });
    writeFileSync(join(root, 'nest', 'x', `y${y}`, 'z', 'f'), 'x');
  }
}

t.test('symlink swaps while the tree remover runs: nothing outside changes; each walk finishes or fails typed', async (t) => {
  const fs = ext4(t, { mkfsArgs: ['-N', '60000'] });
  const base = fs.mountpoint;
  // One canary on the tree's filesystem (hard-linkable, and where a wrong
  // unlink would land), one on another filesystem.
  const near = makeCanary(join(base, 'canary'));
  const far = makeCanary(join(scratchDir(t), 'canary'));
  const linked = join(base, 'canary-linked');
  writeFileSync(linked, 'hard-linked into the tree by the racer');
  const nearBefore = canaryFacts(near.dir);
  const farBefore = canaryFacts(far.dir);
  const linkedBefore = linkedFileFacts(linked);
  const aside = join(base, 'aside');
  mkdirSync(aside);

  const iterations = fuzzRuns(24);
  let swaps = 0;
  let finished = 0;
  let typed = 0;
  for (let i = 0; i < iterations; i++) {
    const tree = join(base, `tree-${i}`);
    buildTree(tree, 6, i % 2 === 0 ? 3 : 12, i % 2 === 0 ? 30 : 3);
    const targets = [...Array.from({ length: 6 }, (_, d) => join(tree, `d${d}`)), ...Array.from({ length: 4 }, (_, y) => join(tree, 'nest', 'x', `y${y}`))];
    const canary = i % 2 === 0 ? near.dir : far.dir;
    const racer = await startRacer(t, [aside, canary, linked, tree, String(5 + (i % 7) * 10), ...targets]);
    const outcome = await removeTree(tree, { concurrency: 1 + (i % 4) * 8 }).then(
      () => 'finished',
      (error: unknown) => error,
    );
    swaps += await racer.swaps;
    if (outcome === 'finished') finished++;
    else if (outcome instanceof FscryptError && outcome.code === 'ERR_UNSAFE_PATH') typed++;
    else t.fail(`iteration ${i}: removeTree failed untyped: ${String(outcome)}`);
    // With the racer gone, what is left (a smaller tree) is removed in full.
    if (existsSync(tree)) await removeTree(tree);
    t.notOk(existsSync(tree), `iteration ${i}: the tree is gone`);
    rmSync(aside, { recursive: true });
    mkdirSync(aside);
  }
  t.same(canaryFacts(near.dir), nearBefore, 'the canary on the same filesystem: content, times, links, inodes intact');
  t.same(canaryFacts(far.dir), farBefore, 'the canary on another filesystem: intact');
  t.same(linkedFileFacts(linked), linkedBefore, 'the file hard-linked into the tree: content, size, mtime, inode intact');
  t.equal(lstatSync(linked).nlink, 1, 'and only the links inside the tree were removed');
  t.equal(finished + typed, iterations, `${finished} walks finished, ${typed} stopped with ERR_UNSAFE_PATH (the tree kept changing)`);
  t.ok(swaps > iterations, `${swaps} directories were swapped for symlinks during the walks`);
  recordFigure({ area: 'hostile fs', name: `symlink swaps during tree removal: iterations ${RUNS_NOTE}`, value: iterations, command: COMMAND });
  recordFigure({ area: 'hostile fs', name: 'symlink swaps during tree removal: directories swapped', value: swaps, command: COMMAND });
});

t.test('a writer refilling a directory as fast as the walk empties it: the walk gives up typed instead of running forever', async (t) => {
  // The trash collector deletes one tree at a time for every slot of the
  // process: a walk kept busy forever by a writer would stall them all.
  // Deterministic: the writer refills from the walk's own progress report,
  // right after each directory is removed, so every rmdir of the parent
  // finds it refilled (before the fix, this walk never ended).
  const fs = ext4(t);
  const far = makeCanary(join(scratchDir(t), 'canary'));
  const farBefore = canaryFacts(far.dir);
  const tree = join(fs.mountpoint, 'tree');
  mkdirSync(join(tree, 'a', 'b0'), { recursive: true });
  let refills = 0;
  const walk = removeTree(tree, {
    onProgress() {
      if (refills >= 10_000) return; // a bound for the test itself, far past the walk's own
      mkdirSync(join(tree, 'a', `b${++refills}`));
      writeFileSync(join(tree, 'a', `b${refills}`, 'f'), 'x');
      symlinkSync(far.dir, join(tree, 'a', `b${refills}`, 'to-canary'));
    },
  });
  t.match(await walk.then(() => 'finished', (error: unknown) => error), { code: 'ERR_UNSAFE_PATH', message: /keeps changing while it is removed.*refilled/ });
  t.ok(refills < 10_000, `it gave up after ${refills} refills`);
  await removeTree(tree);
  t.notOk(existsSync(tree), 'once the writer is gone, the rest is removed');
  t.same(canaryFacts(far.dir), farBefore, 'the canary the refills linked to is intact');
});

t.test('symlink swaps and exiting processes while the blocker scan and status run: every scan completes and names who stays', async (t) => {
  const { slot, protector } = await freshSlot(t);
  const volume = await prepare(slot, protector);
  const target = await newTarget();
  await unlock(volume, protector, { path: target });
  const far = makeCanary(join(scratchDir(t), 'canary'));
  const farBefore = canaryFacts(far.dir);
  mkdirSync(join(target, 'stable'));
  mkdirSync(join(target, 'aside'));
  writeFileSync(join(target, 'linked'), 'x');
  const targets = Array.from({ length: 6 }, (_, d) => join(target, 'race', `d${d}`));
  for (const dir of targets) mkdirSync(dir, { recursive: true });

  // Who stays: a process with its working directory inside. Who races: the
  // swapper (its own working directory one of the swapped directories), and
  // a shell starting short-lived processes inside, which exit mid-scan.
  const stayer = spawn('sleep', ['120'], { cwd: join(target, 'stable'), stdio: 'ignore' });
  t.teardown(() => void stayer.kill('SIGKILL'));
  await once(stayer, 'spawn');
  const racer = await startRacer(t, [join(target, 'aside'), far.dir, join(target, 'linked'), join(target, 'race'), '0', ...targets], targets[0]);
  const churn = spawn('sh', ['-c', `while :; do (cd "$1" && exec true); (cd "$2" && exec sleep 0.001); done`, 'sh', join(target, 'stable'), join(target, 'race', 'd1')], { stdio: 'ignore' });
  t.teardown(() => void churn.kill('SIGKILL'));

  const scans = fuzzRuns(30);
  let named = 0;
  let seenRacer = 0;
  for (let i = 0; i < scans; i++) {
    const blockers = await findBlockers(volume.path);
    if (blockers.some((b) => b.kind === 'cwd' && b.pid === stayer.pid && b.path === join(target, 'stable'))) named++;
    if (blockers.some((b) => b.pid === racer.proc.pid)) seenRacer++;
    for (const b of blockers) t.ok(b.kind === 'mount' || b.path.startsWith(`${target}/`), `scan ${i}: ${b.kind} of pid ${b.pid} is inside: ${JSON.stringify(b.path)}`);
    const status = await slotStatus(slot);
    t.equal(status.volume?.targets[0]?.mounted, true);
  }
  t.equal(named, scans, `the process that stays is named in all ${scans} scans`);
  t.ok(seenRacer > 0, `the racer was seen (in ${seenRacer} scans)`);
  racer.proc.kill('SIGKILL');
  churn.kill('SIGKILL');
  stayer.kill('SIGKILL');
  await Promise.all([once(racer.proc, 'exit'), once(churn, 'exit'), once(stayer, 'exit')]);
  t.same(canaryFacts(far.dir), farBefore, 'the canary the symlinks pointed at is intact');
  t.match(await lock(volume, target), { locked: true });
  recordFigure({ area: 'hostile fs', name: `blocker scans and status during symlink swaps and process churn ${RUNS_NOTE}`, value: scans, command: COMMAND });
});

t.test('a process holding a file through a detached mount while it opens and closes others: named in every scan', async (t) => {
  // The detached-mount pass (a mount table places none of these files) under
  // descriptors that vanish mid-scan. A descriptor closed between its stat
  // and its readlink used to make the scan skip the whole process; that
  // window is too narrow to hit on demand, so this checks the property (the
  // held file is named every time), not that one interleaving.
  const fs = ext4(t);
  const dir = join(fs.mountpoint, 'vol-1');
  mkdirSync(join(dir, 'churn'), { recursive: true });
  writeFileSync(join(dir, 'held'), 'x');
  for (let i = 0; i < 8; i++) writeFileSync(join(dir, 'churn', `f${i}`), 'x');
  const mount = join(scratchDir(t), 'target');
  mkdirSync(mount);
  execFileSync('mount', ['--bind', dir, mount]);
  const script = `const fs = require('fs'); const held = fs.openSync(process.argv[1] + '/held', 'r');
process.stdout.write('ready\\n');
for (;;) { const fds = []; for (let i = 0; i < 8; i++) fds.push(fs.openSync(process.argv[1] + '/churn/f' + i, 'r')); for (const fd of fds) fs.closeSync(fd); }`;
  // The churner opens everything through the mount before it is detached; its later opens go through its cwd, the detached mount.
  const churner = spawn(process.execPath, ['-e', script, '.'], { cwd: mount, stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => void churner.kill('SIGKILL'));
  for await (const chunk of churner.stdout!) if (String(chunk).includes('ready')) break;
  execFileSync('umount', ['-l', mount]);

  const scans = fuzzRuns(6);
  let named = 0;
  for (let i = 0; i < scans; i++) {
    const blockers = await findBlockers(dir);
    if (blockers.some((b) => b.pid === churner.pid && b.detached === true && b.path === '/held')) named++;
  }
  t.equal(named, scans, `the held file is named in all ${scans} scans`);
  churner.kill('SIGKILL');
  await once(churner, 'exit');
  t.same(await findBlockers(dir), []);
  recordFigure({ area: 'hostile fs', name: `blocker scans of a detached mount under fd churn ${RUNS_NOTE}`, value: scans, command: COMMAND });
});
