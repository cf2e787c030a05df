// bench/lifecycle: time from "released" to a volume ready for the next
// tenant (issue 4), the crypto-erase path against the cleanup the upstream
// local-static-provisioner does, on the same data set, in one run, at two
// (or more) data sizes:
//
//   - crypto-erase: a slot (loop ext4 -O encrypt), a file-KEK protector held
//     open as the agent holds it; a volume filled through its bind-mounted
//     target, then locked (no pod: released). Timed: recycle(), the
//     lifecycle's "Released, reclaim Delete" path = erase (key out of the
//     kernel, wrapped key destroyed, directory renamed into the trash), then
//     a fresh verified generation. The ciphertext left behind is deleted by a
//     TrashCollector in the background, queued once the new generation is
//     ready; how long that takes is reported separately.
//   - upstream: the same data set in a plain directory on an ext4 made the
//     same way. Timed: what the Deleter's DeleteContents does, read the
//     volume directory's names and remove each top-level child recursively
//     (Go's os.RemoveAll, in-process), keeping the directory itself. Two
//     stand-ins, both measured:
//       rm -rf   one `rm -rf -- <children>` process: coreutils walks with
//                openat/unlinkat one entry at a time, as os.RemoveAll does
//                (closest to upstream);
//       fs.rm    fs.promises.rm(child, {recursive, force}) per child, in
//                process; Node 20's version fans out over the libuv pool.
//     The bounds are judged against the faster of the two.
//
// Before every timed section: sync, then `echo 3 > /proc/sys/vm/drop_caches`,
// so both paths start cold (a Released volume's metadata is rarely cached),
// then a 1 s pause. Dropping caches is machine-wide: other processes re-read
// their files, and the pause keeps that burst out of the timed section.
//
//   node bench/lifecycle.mjs [--json] [--sizes=250M,1G] [--runs=N] [--empty-runs=N]
//                            [--file-size=BYTES] [--files-per-dir=N]
//
// Sizes are decimal (M = 10^6 bytes, G = 10^9); each size holds
// size / file-size files (default 10 KB files: 1 GB = 100k files, the issue's
// ratio) in subdirectories of --files-per-dir. Every timed section needs
// fresh data, so each run refills the volume; filling is the slow part
// (encrypted writes run at ~100 MB/s on a machine without AES-NI).
//
// Needs root (loop mounts, keyring, drop_caches). Runs the built package
// (dist/; bench/run.mjs builds first). Its scratch filesystems live in a temp
// dir and are unmounted and deleted on exit or on a signal.
import { execFileSync, spawn } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { cpus, loadavg, release } from 'node:os';
import { join } from 'node:path';
import { ensurePackageBuilt } from './lib/build.mjs';
import { onCleanup } from './lib/cleanup.mjs';
import { startContentionMeter } from './lib/measure/contention.mjs';
import { PreconditionError, requireCommand, requireExt4Encryption, requireRoot } from './lib/preflight.mjs';
import { makeScratchExt4 } from './lib/scratch-fs.mjs';
import { median } from './lib/measure/stats.mjs';
import { formatTable } from './lib/measure/table.mjs';

// The issue's bounds.
const MIN_SPEEDUP = 100;
// "Flat": crypto-erase at the largest size over the smallest. Its own work
// does not depend on the data, so this only allows for the run-to-run noise
// of a section made of fsyncs, on a shared 2-CPU VM.
const MAX_FLAT_GROWTH = 1.5;
const BUSY_MACHINE_PERCENT = 10;

const DEFAULTS = { sizes: [250e6, 1e9], runs: 3, emptyRuns: 5, fileSize: 10_000, filesPerDir: 1000 };
const EMPTY_SET = { bytes: 0, files: 0, dirs: 0, label: 'empty' };
// Files written at once while filling (writes go through the libuv pool).
const FILL_CONCURRENCY = 16;

const USAGE = 'usage: node bench/lifecycle.mjs [--json] [--sizes=250M,1G] [--runs=N] [--empty-runs=N] [--file-size=BYTES] [--files-per-dir=N]';

function parseSize(text) {
  const match = /^(\d+(?:\.\d+)?)([kMG]?)$/.exec(text);
  if (!match) return NaN;
  return Math.round(Number(match[1]) * { '': 1, k: 1e3, M: 1e6, G: 1e9 }[match[2]]);
}

function parseArgs(argv) {
  const options = { json: false, ...DEFAULTS };
  const integer = { '--runs': 'runs', '--empty-runs': 'emptyRuns', '--file-size': 'fileSize', '--files-per-dir': 'filesPerDir' };
  for (const arg of argv) {
    const [name, value] = arg.split('=', 2);
    if (arg === '--json') options.json = true;
    else if (name in integer && /^\d+$/.test(value ?? '') && Number(value) > 0) options[integer[name]] = Number(value);
    else if (name === '--sizes' && value) {
      const sizes = value.split(',').map(parseSize);
      if (sizes.length < 2 || sizes.some((s) => !(s > 0))) throw new PreconditionError(`--sizes needs two or more sizes such as 250M,1G, got ${value}\n${USAGE}`);
      options.sizes = sizes.sort((a, b) => a - b);
    } else throw new PreconditionError(`unknown or bad argument ${arg}\n${USAGE}`);
  }
  return options;
}

const log = (message) => process.stderr.write(`bench/lifecycle: ${message}\n`);
const elapsedMs = (start) => Number(process.hrtime.bigint() - start) / 1e6;
const round = (x, digits = 1) => Math.round(x * 10 ** digits) / 10 ** digits;
const sizeLabel = (bytes) => (bytes >= 1e9 ? `${round(bytes / 1e9, 2)} GB` : `${round(bytes / 1e6)} MB`);

function dataSet(bytes, { fileSize, filesPerDir }) {
  const files = Math.max(1, Math.round(bytes / fileSize));
  return { bytes: files * fileSize, files, dirs: Math.ceil(files / filesPerDir), fileSize, filesPerDir, label: sizeLabel(files * fileSize) };
}

// After dropping caches, other processes on the machine fault their files
// back in; the timed section starts once that burst has passed.
const SETTLE_MS = 1000;

/** Both paths start cold: nothing dirty, no page, dentry or inode cache. Machine-wide. */
async function coldCaches() {
  execFileSync('sync');
  writeFileSync('/proc/sys/vm/drop_caches', '3');
  await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
}

/**
 * Writes the data set under `root`: d0000/ .. with filesPerDir files of
 * fileSize bytes each. Returns the time it took.
 */
async function fill(root, set, content) {
  const start = process.hrtime.bigint();
  for (let d = 0; d < set.dirs; d++) {
    const dir = join(root, `d${String(d).padStart(4, '0')}`);
    await mkdir(dir);
    const count = Math.min(set.filesPerDir, set.files - d * set.filesPerDir);
    let next = 0;
    const worker = async () => {
      for (let i = next++; i < count; i = next++) await writeFile(join(dir, `f${String(i).padStart(5, '0')}`), content, { flag: 'wx' });
    };
    await Promise.all(Array.from({ length: Math.min(FILL_CONCURRENCY, count) }, worker));
  }
  return elapsedMs(start);
}

/**
 * Time spent in each durable step of the hooks (their onStep callbacks):
 * { 'erase:intent-recorded': ms since the previous step, ... }.
 */
function stepTimer(start) {
  const durations = {};
  let last = start;
  return {
    durations,
    onStep(name) {
      const now = process.hrtime.bigint();
      durations[name] = round(Number(now - last) / 1e6, 2);
      last = now;
    },
  };
}

function spawnChecked(command, args) {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code, signal) => (code === 0 ? resolve() : reject(new Error(`${command} failed (${signal ?? code}): ${stderr.trim()}`))));
  });
}

/** The upstream Deleter's cleanup, two ways: every top-level child removed recursively, the directory kept. */
const UPSTREAM = {
  'rm -rf': async (dir) => {
    const children = await readdir(dir);
    if (children.length > 0) await spawnChecked('rm', ['-rf', '--', ...children.map((name) => join(dir, name))]);
  },
  'fs.rm': async (dir) => {
    for (const name of await readdir(dir)) await rm(join(dir, name), { recursive: true, force: true });
  },
};

/** Image size and inode count for the largest data set, with room for ext4's own blocks. */
function filesystemFor(set) {
  const blocksPerFile = Math.ceil(set.fileSize / 4096);
  const dataMiB = (set.files * blocksPerFile * 4096) / 1048576;
  return { sizeMiB: Math.ceil(dataMiB * 1.1) + 256, inodes: Math.ceil(set.files * 1.1) + set.dirs + 1024 };
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  requireRoot('bench/lifecycle');
  requireExt4Encryption();
  requireCommand('rm', 'coreutils');
  ensurePackageBuilt();
  const lib = await import('../dist/index.js');
  for (const name of ['initSlot', 'openSlotProtector', 'prepare', 'unlock', 'lock', 'erase', 'TrashCollector']) {
    if (typeof lib[name] !== 'function') throw new Error(`dist/index.js does not export ${name}: is lib/volume exported from lib/index.ts and built? (npm run build)`);
  }

  const sets = options.sizes.map((bytes) => dataSet(bytes, options));
  const largest = sets[sets.length - 1];
  const { sizeMiB, inodes } = filesystemFor(largest);
  const loadBefore = loadavg();
  const meter = startContentionMeter();

  // The slot: an encrypt-capable ext4, a file KEK outside it, a target for the
  // "pod" outside it. Cleanup is LIFO: the target is unmounted before the slot.
  // Inode tables and journal written by mkfs, not by ext4lazyinit in the
  // background, where it would write to the images during timed sections.
  const mkfsArgs = ['-N', String(inodes), '-E', 'lazy_itable_init=0,lazy_journal_init=0'];
  log(`making two ${sizeMiB} MiB ext4 images (-N ${inodes})`);
  const slotFs = makeScratchExt4({ sizeMiB, mkfsArgs });
  const slot = slotFs.mountpoint;
  const kek = join(slotFs.dir, 'kek');
  writeFileSync(kek, randomFillSync(Buffer.alloc(32)), { mode: 0o600 });
  const target = join(slotFs.dir, 'pod', 'mount');
  mkdirSync(join(slotFs.dir, 'pod'));
  onCleanup(() => {
    try {
      execFileSync('umount', ['-l', target], { stdio: 'ignore' });
    } catch {
      // not mounted
    }
  });
  // The upstream volume: a plain directory (not the mount root, which holds lost+found).
  const plainFs = makeScratchExt4({ sizeMiB, mkfsArgs });
  const plainVolume = join(plainFs.mountpoint, 'vol');
  mkdirSync(plainVolume);

  const source = lib.parseKeySource(`file:${kek}`);
  await lib.initSlot(slot, source);
  const protector = await lib.openSlotProtector(slot, source);
  const trash = new lib.TrashCollector();
  let volume = await lib.prepare(slot, protector);
  const content = randomFillSync(Buffer.alloc(options.fileSize));

  /**
   * One crypto-erase round: the volume filled through its target, locked
   * (released), caches dropped, then the timed erase + prepare; afterwards
   * the background deletion is awaited and checked. Returns the sample.
   */
  const cryptoRound = async (set, tag) => {
    await lib.unlock(volume, protector, { path: target });
    const fillMs = await fill(target, set, content);
    await lib.lock(volume, target);
    if (set.files > 0) log(`${tag}: filled ${volume.name} (encrypted) in ${round(fillMs / 1000)} s (${round(set.bytes / 1e3 / fillMs)} MB/s); erase + prepare`);
    await coldCaches();
    const removedBefore = trash.status().removed;
    const start = process.hrtime.bigint();
    const steps = stepTimer(start);
    let eraseMs = 0;
    const onStep = (name) => {
      steps.onStep(name);
      if (name === 'erase:done') eraseMs = elapsedMs(start);
    };
    const { next } = await lib.recycle(volume, protector, { trash, onStep });
    const totalMs = elapsedMs(start);
    await trash.idle();
    const backgroundMs = elapsedMs(start) - totalMs;
    const status = trash.status();
    if (status.failures.length > 0) throw new Error(`background deletion failed: ${status.failures.map((f) => f.error.message).join('; ')}`);
    const removedFiles = status.removed.files - removedBefore.files;
    const removedDirs = status.removed.dirs - removedBefore.dirs;
    if (removedFiles !== set.files || removedDirs !== set.dirs + 1) {
      throw new Error(`background deletion removed ${removedFiles} files and ${removedDirs} dirs, expected ${set.files} and ${set.dirs + 1}`);
    }
    if ((await readdir(next.path)).length !== 0) throw new Error(`the fresh generation ${next.path} is not empty`);
    log(`${tag}: erase + prepare ${round(totalMs, 2)} ms; background deletion of ${volume.name} ${round(backgroundMs / 1000, 2)} s`);
    volume = next;
    return {
      fillMs: round(fillMs),
      eraseMs: round(eraseMs, 2),
      prepareMs: round(totalMs - eraseMs, 2),
      totalMs: round(totalMs, 2),
      backgroundDeleteMs: round(backgroundMs),
      steps: steps.durations,
    };
  };

  /** One upstream round: the plain volume filled, caches dropped, then the timed cleanup. */
  const upstreamRound = async (set, way, tag) => {
    const fillMs = await fill(plainVolume, set, content);
    log(`${tag}: filled the plain volume in ${round(fillMs / 1000)} s; ${way}`);
    await coldCaches();
    const sectionMeter = startContentionMeter();
    const begin = process.hrtime.bigint();
    await UPSTREAM[way](plainVolume);
    const ms = elapsedMs(begin);
    const { otherCpuPercent } = sectionMeter();
    if ((await readdir(plainVolume)).length !== 0) throw new Error(`${way} left entries in ${plainVolume}`);
    log(`${tag}: ${way} ${round(ms / 1000, 2)} s`);
    return { fillMs: round(fillMs), ms: round(ms, 1), otherCpuPercent };
  };

  const empty = [];
  const results = [];
  try {
    // The fixed cost: an empty volume, no fill, nothing to delete afterwards.
    for (let run = 1; run <= options.emptyRuns; run++) empty.push(await cryptoRound(EMPTY_SET, `empty run ${run}/${options.emptyRuns}`));
    for (const set of sets) {
      const result = { set, crypto: [], upstream: Object.fromEntries(Object.keys(UPSTREAM).map((way) => [way, []])) };
      results.push(result);
      // Runs interleave the paths, so a busy spell on the machine hits both.
      for (let run = 1; run <= options.runs; run++) {
        const tag = `${set.label} run ${run}/${options.runs}`;
        result.crypto.push(await cryptoRound(set, tag));
        for (const way of Object.keys(UPSTREAM)) result.upstream[way].push(await upstreamRound(set, way, tag));
      }
    }
  } finally {
    protector.close();
  }
  const contention = meter();
  const loadAfter = loadavg();
  plainFs.cleanup();
  slotFs.cleanup();

  const report = buildReport(options, empty, results, { contention, loadBefore, loadAfter });
  if (options.json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  else printReport(report);
}

/** Medians of the crypto-erase samples, with the median time of each hook step. */
function summarizeCrypto(samples) {
  const stepNames = Object.keys(samples[0].steps);
  return {
    medianMs: round(median(samples.map((r) => r.totalMs)), 2),
    maxMs: round(Math.max(...samples.map((r) => r.totalMs)), 2),
    eraseMedianMs: round(median(samples.map((r) => r.eraseMs)), 2),
    prepareMedianMs: round(median(samples.map((r) => r.prepareMs)), 2),
    backgroundDeleteMedianMs: round(median(samples.map((r) => r.backgroundDeleteMs))),
    stepMedianMs: Object.fromEntries(stepNames.map((step) => [step, round(median(samples.map((r) => r.steps[step] ?? 0)), 2)])),
    runs: samples,
  };
}

function buildReport({ json, ...parameters }, empty, results, load) {
  const sizes = results.map(({ set, crypto, upstream }) => {
    const cryptoSummary = summarizeCrypto(crypto);
    const upstreamSummary = Object.fromEntries(
      Object.entries(upstream).map(([way, runs]) => [way, { medianMs: round(median(runs.map((r) => r.ms))), runs }]),
    );
    const [fastestWay, fastest] = Object.entries(upstreamSummary).sort((a, b) => a[1].medianMs - b[1].medianMs)[0];
    return {
      dataSet: { bytes: set.bytes, files: set.files, dirs: set.dirs, fileSize: set.fileSize, label: set.label },
      cryptoErase: cryptoSummary,
      upstream: upstreamSummary,
      fastestUpstream: fastestWay,
      speedup: round(fastest.medianMs / cryptoSummary.medianMs, 1),
    };
  });
  const first = sizes[0];
  const last = sizes[sizes.length - 1];
  const growth = {
    data: round(last.dataSet.bytes / first.dataSet.bytes, 2),
    cryptoErase: round(last.cryptoErase.medianMs / first.cryptoErase.medianMs, 2),
    upstream: Object.fromEntries(Object.keys(first.upstream).map((way) => [way, round(last.upstream[way].medianMs / first.upstream[way].medianMs, 2)])),
  };
  const checks = [
    {
      // The issue's case is the largest default size (1 GB in 100k files);
      // the ratio at smaller sizes is reported, not judged.
      bound: `crypto-erase >= ${MIN_SPEEDUP}x faster than the faster upstream cleanup at ${last.dataSet.label} (${last.dataSet.files} files)`,
      holds: last.speedup >= MIN_SPEEDUP,
      value: sizes.map((s) => `${s.dataSet.label}: ${s.speedup}x`).join(', '),
    },
    {
      bound: `crypto-erase flat: median at ${last.dataSet.label} / at ${first.dataSet.label} <= ${MAX_FLAT_GROWTH}`,
      holds: growth.cryptoErase <= MAX_FLAT_GROWTH,
      value: `${growth.cryptoErase}x for ${growth.data}x the data; upstream ${Object.entries(growth.upstream).map(([w, g]) => `${w} ${g}x`).join(', ')}`,
    },
  ];
  return {
    benchmark: 'lifecycle',
    unit: 'ms',
    machine: { kernel: release(), cpus: cpus().length, cpu: cpus()[0]?.model ?? 'unknown', node: process.version },
    load: {
      // Shares of all CPUs over the whole run (fills included): other user
      // processes, kernel threads (mostly this run's own I/O), hypervisor steal.
      otherCpuPercent: load.contention.otherCpuPercent,
      kernelCpuPercent: load.contention.kernelCpuPercent,
      stealPercent: load.contention.stealPercent,
      loadavgBefore: load.loadBefore.map((x) => round(x, 2)),
      loadavgAfter: load.loadAfter.map((x) => round(x, 2)),
    },
    parameters: { ...parameters, sizes: parameters.sizes.map(sizeLabel) },
    emptyVolume: empty.length > 0 ? summarizeCrypto(empty) : null,
    sizes,
    growth,
    checks,
  };
}

function printReport(report) {
  const p = report.parameters;
  const lines = [];
  lines.push(`bench/lifecycle  Linux ${report.machine.kernel}, ${report.machine.cpus} CPUs (${report.machine.cpu}), Node ${report.machine.node}`);
  lines.push(`Released -> ready for the next tenant; ${p.runs} run(s) per size, each on freshly written data (${p.fileSize}-byte files, ${p.filesPerDir} per directory).`);
  lines.push(`Before each timed section: sync; echo 3 > /proc/sys/vm/drop_caches; ${SETTLE_MS} ms pause (both paths start cold). Times in ms.`);
  lines.push('  crypto-erase = recycle(volume): erase (key out of the kernel, wrapped key destroyed, directory renamed into the trash),');
  lines.push('                 then a new verified generation (loop ext4 -O encrypt, file KEK, protector already open)');
  lines.push('  erase, prepare = its two parts (medians)');
  lines.push('  background   = deletion of the old generation by the TrashCollector (not in the timed path): queued when the new');
  lines.push('                 generation is ready, from then until done');
  lines.push('  rm -rf       = the upstream Deleter\'s cleanup: `rm -rf -- <every top-level child>`, an openat/unlinkat walk like os.RemoveAll');
  lines.push('  fs.rm        = the same with fs.promises.rm(child, {recursive, force}) per child, in process (Node 20 fans out on the libuv pool)');
  lines.push('  speed-up     = faster upstream median / crypto-erase median');
  lines.push('  empty        = erase + prepare of an empty volume: the fixed cost, with nothing deleted in the background');
  const l = report.load;
  lines.push(
    `Load: other processes used ${l.otherCpuPercent}% of the CPUs during the run, the hypervisor took ${l.stealPercent}% (steal), kernel threads ` +
      `${l.kernelCpuPercent}% (journal, loop and writeback: mostly this run's own I/O); loadavg ${l.loadavgBefore.join(' ')} before, ${l.loadavgAfter.join(' ')} after.`,
  );
  if (l.otherCpuPercent + l.stealPercent > BUSY_MACHINE_PERCENT) {
    lines.push('WARNING: the machine was busy. Every time is inflated; crypto-erase most in relative terms (its dozen fsyncs each wait for jbd2 and loop');
    lines.push('         worker threads to be scheduled). Rerun when it is quiet.');
  }
  lines.push('');
  const ways = Object.keys(report.sizes[0].upstream);
  const cryptoCells = (c) => [c.medianMs, c.maxMs, c.eraseMedianMs, c.prepareMedianMs];
  const rows = [];
  if (report.emptyVolume) {
    const e = report.emptyVolume;
    rows.push(['empty', 0, e.runs.length, ...cryptoCells(e), ...ways.map(() => null), null, e.backgroundDeleteMedianMs]);
  }
  for (const s of report.sizes) {
    rows.push([s.dataSet.label, s.dataSet.files, s.cryptoErase.runs.length, ...cryptoCells(s.cryptoErase), ...ways.map((w) => s.upstream[w].medianMs), `${s.speedup}x`, s.cryptoErase.backgroundDeleteMedianMs]);
  }
  lines.push(formatTable(['data set', 'files', 'runs', 'crypto-erase med', 'max', 'erase', 'prepare', ...ways.map((w) => `${w} med`), 'speed-up', 'background'], rows));
  lines.push('');
  const g = report.growth;
  lines.push(`Flatness (largest / smallest size): data ${g.data}x, crypto-erase ${g.cryptoErase}x, ${ways.map((w) => `${w} ${g.upstream[w]}x`).join(', ')}`);
  lines.push('');
  lines.push('Where crypto-erase spends its time: median ms per hook step (time since the previous step; most steps end in fsyncs)');
  const columns = [...(report.emptyVolume ? [['empty', report.emptyVolume]] : []), ...report.sizes.map((s) => [s.dataSet.label, s.cryptoErase])];
  const stepNames = Object.keys(columns[columns.length - 1][1].stepMedianMs);
  lines.push(formatTable(['step', ...columns.map(([label]) => label)], stepNames.map((step) => [step, ...columns.map(([, c]) => c.stepMedianMs[step])])));
  lines.push('');
  lines.push('Bounds (issue 4):');
  for (const check of report.checks) lines.push(`  ${check.holds ? 'ok  ' : 'FAIL'} ${check.bound} (${check.value})`);
  process.stdout.write(`${lines.join('\n')}\n`);
}

main().catch((error) => {
  if (error instanceof PreconditionError) {
    process.stderr.write(`bench/lifecycle: ${error.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`bench/lifecycle: ${error.stack ?? error}\n`);
  process.exit(1);
});
