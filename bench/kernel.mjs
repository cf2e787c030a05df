// bench/kernel: what the package's fscrypt ioctls cost, against two
// references measured in the same run on the same kind of filesystem:
//
//   - the floor: bench/kernel-floor.c issuing the same ioctls from C on an
//     open fd, one thread, nothing in between;
//   - the stock `fscrypt` CLI (Debian package fscrypt) doing the equivalent
//     jobs: encrypt a directory with a raw key, unlock, lock, status.
//
// The package's extra cost over the floor should be one thread-pool round
// trip (the "hop") plus the open() the addon makes per call, and nothing
// else; so the hop is measured too, interleaved sample by sample with the
// package's calls so both see the same machine conditions (these VMs are
// noisy: a busy neighbour can move every async median by tens of µs).
//
//   node bench/kernel.mjs [--json] [--iterations=N] [--warmup=N]
//                         [--in-flight=N] [--cli-runs=N] [--job-runs=N]
//
// Needs root (loop mount, keyring). Makes its own scratch ext4 in a temp dir
// and removes it on exit or signal. If /etc/fscrypt.conf does not exist, a
// temporary one (raw_key source, v2 policies) is written for the CLI and
// removed afterwards; an existing one is used as it is.
import { execFileSync, spawn } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { mkdir, open, readFile } from 'node:fs/promises';
import { cpus, release } from 'node:os';
import { join } from 'node:path';
import { ensurePackageBuilt, compileC } from './lib/build.mjs';
import { onCleanup } from './lib/cleanup.mjs';
import { startContentionMeter } from './lib/measure/contention.mjs';
import { hasCommand, PreconditionError, requireCommand, requireExt4Encryption, requireRoot } from './lib/preflight.mjs';
import { makeScratchExt4 } from './lib/scratch-fs.mjs';
import { median, summarize } from './lib/measure/stats.mjs';
import { formatTable } from './lib/measure/table.mjs';

const OPERATIONS = ['addKey', 'getKeyStatus', 'setPolicy', 'removeKey'];
const JOBS = ['encrypt', 'unlock', 'lock', 'status'];
const MAX_OVERHEAD_US = 30;
const MIN_CLI_RATIO = 100;
const FSCRYPT_CONF = '/etc/fscrypt.conf';
// Above this share of the CPUs used by other processes, async medians are inflated.
const BUSY_MACHINE_PERCENT = 10;
// A thread-pool round trip costs about this much on a quiet machine of this kind;
// a slower hop means vCPU wake-ups are slow right now (host or guest contention).
const QUIET_HOP_US = 25;

const DEFAULTS = { iterations: 2000, warmup: 200, inFlight: 64, cliRuns: 20, jobRuns: 200 };

function parseArgs(argv) {
  const options = { json: false, ...DEFAULTS };
  const numeric = { '--iterations': 'iterations', '--warmup': 'warmup', '--in-flight': 'inFlight', '--cli-runs': 'cliRuns', '--job-runs': 'jobRuns' };
  for (const arg of argv) {
    const [name, value] = arg.split('=', 2);
    if (arg === '--json') options.json = true;
    else if (name in numeric && /^\d+$/.test(value ?? '') && Number(value) > 0) options[numeric[name]] = Number(value);
    else throw new PreconditionError(`unknown or bad argument ${arg}\nusage: node bench/kernel.mjs [--json] [--iterations=N] [--warmup=N] [--in-flight=N] [--cli-runs=N] [--job-runs=N]`);
  }
  return options;
}

const progress = (message) => process.stderr.write(`kernel: ${message}\n`);
const randomKey = () => randomFillSync(Buffer.alloc(64));
const elapsedNs = (start) => Number(process.hrtime.bigint() - start);

// ---------------------------------------------------------------- C floor

function measureFloor(binary, mountpoint, workdir, { iterations, warmup }) {
  mkdirSync(workdir);
  const output = execFileSync(binary, [mountpoint, workdir, String(iterations), String(warmup)], {
    encoding: 'utf8',
    maxBuffer: 64 << 20,
  });
  return JSON.parse(output).samples;
}

// ------------------------------------------------- package, one at a time

/**
 * The C floor's cycle, through the package: for each fresh 64-byte key,
 * addKey, getKeyStatus, setPolicy on a fresh empty directory (mkdir not
 * timed), removeKey, each call awaited before the next. Cycling rather than
 * running each op in its own phase lets all four ops sample the same
 * stretches of machine time. Before every call one bare thread-pool round
 * trip is timed (FileHandle.stat(): a libuv work item and a promise, no JS
 * validation, no open()), so each op's samples pair with hop samples taken
 * under the same conditions.
 */
async function measurePackage(kernel, mountpoint, workdir, { iterations, warmup }) {
  mkdirSync(workdir);
  const handle = await open(mountpoint, 'r');
  const samples = Object.fromEntries(OPERATIONS.map((op) => [op, []]));
  const hops = Object.fromEntries(OPERATIONS.map((op) => [op, []]));

  async function cycles(tag, count, record) {
    const timed = async (op, call) => {
      let start = process.hrtime.bigint();
      await handle.stat();
      if (record) hops[op].push(elapsedNs(start));
      start = process.hrtime.bigint();
      const value = await call();
      if (record) samples[op].push(elapsedNs(start));
      return value;
    };
    for (let i = 0; i < count; i++) {
      const key = randomKey();
      const identifier = await timed('addKey', () => kernel.addKey(mountpoint, key));
      await timed('getKeyStatus', () => kernel.getKeyStatus(mountpoint, identifier));
      const dir = join(workdir, `${tag}-${i}`);
      mkdirSync(dir);
      const policy = kernel.defaultPolicy(identifier);
      await timed('setPolicy', () => kernel.setPolicy(dir, policy));
      await timed('removeKey', () => kernel.removeKey(mountpoint, identifier));
    }
  }

  try {
    await cycles('warmup', warmup, false);
    await cycles('timed', iterations, true);
  } finally {
    await handle.close();
  }
  return { samples, hops };
}

// ------------------------------------------------------------- throughput

/** ops/s of `total` calls of operation(i), with at most `inFlight` pending at once. */
async function opsPerSecond(operation, total, inFlight) {
  let next = 0;
  const lane = async () => {
    while (next < total) await operation(next++);
  };
  const start = process.hrtime.bigint();
  await Promise.all(Array.from({ length: inFlight }, lane));
  return total / (elapsedNs(start) / 1e9);
}

/**
 * getKeyStatus of one present key, and addKey of fresh keys, one at a time
 * and with many in flight; rounds alternate so both see the same drift, and
 * the median round is reported.
 */
async function measureThroughput(kernel, mountpoint, { inFlight }) {
  const total = 4096;
  const rounds = 5;
  const presentKey = await kernel.addKey(mountpoint, randomKey());
  const result = {};
  for (const op of ['getKeyStatus', 'addKey']) {
    const perRound = { sequential: [], concurrent: [] };
    for (let round = 0; round < rounds; round++) {
      for (const [mode, lanes] of [['sequential', 1], ['concurrent', inFlight]]) {
        if (op === 'getKeyStatus') {
          perRound[mode].push(await opsPerSecond(() => kernel.getKeyStatus(mountpoint, presentKey), total, lanes));
        } else {
          const keys = Array.from({ length: total }, randomKey);
          const identifiers = new Array(total);
          perRound[mode].push(
            await opsPerSecond(async (i) => {
              identifiers[i] = await kernel.addKey(mountpoint, keys[i]);
            }, total, lanes),
          );
          await Promise.all(identifiers.map((identifier) => kernel.removeKey(mountpoint, identifier)));
        }
      }
    }
    const sequential = Math.round(median(perRound.sequential));
    const concurrent = Math.round(median(perRound.concurrent));
    result[op] = { sequential, concurrent, inFlight, speedup: Math.round((concurrent / sequential) * 100) / 100 };
  }
  await kernel.removeKey(mountpoint, presentKey);
  return result;
}

// ------------------------------------------- equivalent jobs: package, CLI

/**
 * The package doing what the CLI jobs do, on fresh directories:
 * encrypt = read the key file + addKey + mkdir + setPolicy; unlock = addKey
 * (the key already in memory, as the key layer hands it over); lock =
 * removeKey; status = getKeyStatus + getPolicy. No .fscrypt metadata is
 * written or read: that is the key layer's job, measured by its own
 * benchmark. Order per run: encrypt, status, lock, unlock, as for the CLI,
 * so lock finds the directory opened by status in both.
 */
async function measurePackageJobs(kernel, mountpoint, workdir, { jobRuns, warmup }) {
  mkdirSync(workdir);
  const samples = Object.fromEntries(JOBS.map((job) => [job, []]));
  const stepSamples = Object.fromEntries(JOBS.map((job) => [job, {}]));
  const warmupRuns = Math.min(warmup, 20);
  for (let run = 0; run < warmupRuns + jobRuns; run++) {
    const record = run >= warmupRuns;
    // Times the job as a whole and each of its steps, so the report can say
    // which part of a job is the package and which is plain Node fs.
    const runJob = async (job, steps) => {
      const jobStart = process.hrtime.bigint();
      for (const [step, call] of steps) {
        const start = process.hrtime.bigint();
        await call();
        if (record) (stepSamples[job][step] ??= []).push(elapsedNs(start));
      }
      if (record) samples[job].push(elapsedNs(jobStart));
    };
    const keyFile = join(workdir, `key-${run}`);
    writeFileSync(keyFile, randomKey(), { mode: 0o600 });
    const dir = join(workdir, `dir-${run}`);
    let key;
    let identifier;
    await runJob('encrypt', [
      ['readFile', async () => (key = await readFile(keyFile))],
      ['addKey', async () => (identifier = await kernel.addKey(mountpoint, key))],
      ['mkdir', () => mkdir(dir)],
      ['setPolicy', () => kernel.setPolicy(dir, kernel.defaultPolicy(identifier))],
    ]);
    await runJob('status', [
      ['getKeyStatus', () => kernel.getKeyStatus(mountpoint, identifier)],
      ['getPolicy', () => kernel.getPolicy(dir)],
    ]);
    await runJob('lock', [['removeKey', () => kernel.removeKey(mountpoint, identifier)]]);
    await runJob('unlock', [['addKey', () => kernel.addKey(mountpoint, key)]]);
    key.fill(0);
    await kernel.removeKey(mountpoint, identifier);
  }
  return { samples, stepSamples };
}

/** Makes sure the CLI has a global config; returns 'existing' or 'temporary'. */
function ensureFscryptConf() {
  if (existsSync(FSCRYPT_CONF)) return 'existing';
  // protojson as fscrypt writes it (int64 as strings). raw_key protectors do
  // not hash, so the hashing costs only have to be valid.
  const text = `${JSON.stringify(
    {
      source: 'raw_key',
      hash_costs: { time: '1', memory: '1024', parallelism: '1' },
      options: { padding: '32', contents: 'AES_256_XTS', filenames: 'AES_256_CTS', policy_version: '2' },
      use_fs_keyring_for_v1_policies: false,
      allow_cross_user_metadata: false,
    },
    null,
    '\t',
  )}\n`;
  writeFileSync(FSCRYPT_CONF, text, { flag: 'wx', mode: 0o644 }); // wx: never replace one written meanwhile
  onCleanup(() => {
    // Remove it only if it is still ours.
    if (existsSync(FSCRYPT_CONF) && readFileSync(FSCRYPT_CONF, 'utf8') === text) unlinkSync(FSCRYPT_CONF);
  });
  return 'temporary';
}

/**
 * Runs `fscrypt ...args` and resolves to its wall-clock time in ns. Async
 * (not spawnSync) so that SIGINT is handled, and the scratch filesystem
 * cleaned up, while the CLI runs.
 */
function timeFscrypt(args) {
  return new Promise((resolve, reject) => {
    const start = process.hrtime.bigint();
    const child = spawn('fscrypt', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (chunk) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      const ns = elapsedNs(start);
      if (code === 0) resolve(ns);
      else reject(new Error(`fscrypt ${args.join(' ')} failed (${signal ?? code}): ${stderr.trim()}`));
    });
  });
}

/** The fscrypt CLI doing the jobs, each a process run and timed wall-clock, as a caller shelling out would pay. */
async function measureCliJobs(mountpoint, workdir, { cliRuns }) {
  const config = ensureFscryptConf();
  mkdirSync(workdir);
  execFileSync('fscrypt', ['setup', mountpoint, '--quiet'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const samples = Object.fromEntries(JOBS.map((job) => [job, []]));
  const warmupRuns = 1;
  for (let run = 0; run < warmupRuns + cliRuns; run++) {
    const record = run >= warmupRuns;
    // A fresh 32-byte wrapping key per run, so each protector is unambiguous.
    const keyFile = join(workdir, `kek-${run}`);
    writeFileSync(keyFile, randomFillSync(Buffer.alloc(32)), { mode: 0o600 });
    const dir = join(workdir, `dir-${run}`);
    mkdirSync(dir);
    const time = async (job, args) => {
      const ns = await timeFscrypt(args);
      if (record) samples[job].push(ns);
    };
    await time('encrypt', ['encrypt', dir, '--source=raw_key', `--key=${keyFile}`, `--name=bench-${run}`, '--quiet']);
    await time('status', ['status', dir]);
    await time('lock', ['lock', dir, '--quiet']);
    await time('unlock', ['unlock', dir, `--key=${keyFile}`, '--quiet']);
    await timeFscrypt(['lock', dir, '--quiet']);
  }
  return { config, samples };
}

// ----------------------------------------------------------------- report

function buildReport({ json, ...parameters }, kernelVersion, contention, floorSamples, packageResult, throughput, packageJobs, cli) {
  const open = summarize(floorSamples.openClose);
  const latency = {};
  for (const op of OPERATIONS) {
    const pkg = summarize(packageResult.samples[op]);
    const floor = summarize(floorSamples[op]);
    const hop = summarize(packageResult.hops[op]);
    const overhead = round1(pkg.median - floor.median);
    // Paired: each call minus the hop timed just before it, so slow and fast
    // stretches of the run cancel out instead of moving one median alone.
    const overHop = packageResult.samples[op].map((ns, i) => ns - packageResult.hops[op][i]);
    const rest = round1(median(overHop) / 1000 - floor.median - open.median);
    latency[op] = { package: pkg, floor, hop, overhead, rest };
  }
  const jobs = {};
  for (const job of JOBS) {
    const pkg = summarize(packageJobs.samples[job]);
    const steps = Object.fromEntries(Object.entries(packageJobs.stepSamples[job]).map(([step, ns]) => [step, summarize(ns).median]));
    const fscrypt = cli.samples ? summarize(cli.samples[job]) : null;
    jobs[job] = { package: pkg, packageStepMedians: steps, cli: fscrypt, ratio: fscrypt ? Math.round(fscrypt.median / pkg.median) : null };
  }
  const checks = [
    ...OPERATIONS.map((op) => ({
      bound: `${op}: package median ≤ floor median + ${MAX_OVERHEAD_US} µs`,
      holds: latency[op].overhead <= MAX_OVERHEAD_US,
      value: `${latency[op].overhead} µs over the floor`,
    })),
    ...JOBS.map((job) => ({
      bound: `${job}: package ≥ ${MIN_CLI_RATIO}× faster than the fscrypt CLI`,
      holds: jobs[job].ratio === null ? null : jobs[job].ratio >= MIN_CLI_RATIO,
      value: jobs[job].ratio === null ? cli.skipped : `${jobs[job].ratio}×`,
    })),
  ];
  return {
    benchmark: 'kernel',
    unit: { latency: 'µs', throughput: 'ops/s' },
    machine: { kernel: kernelVersion, cpus: cpus().length, cpu: cpus()[0]?.model ?? 'unknown', node: process.version },
    // Share of all CPUs other processes used while per-op latencies were measured, and during the rest;
    // and the share the hypervisor took (steal).
    otherCpuPercent: { latency: contention.latency.otherCpuPercent, rest: contention.rest.otherCpuPercent },
    stealPercent: { latency: contention.latency.stealPercent, rest: contention.rest.stealPercent },
    parameters,
    latency,
    openClose: open,
    throughput,
    jobs,
    cli: { config: cli.config ?? null, skipped: cli.skipped ?? null },
    checks,
  };
}

const round1 = (x) => Math.round(x * 10) / 10;

function printReport(report) {
  const p = report.parameters;
  const lines = [];
  lines.push(`bench/kernel  Linux ${report.machine.kernel}, ${report.machine.cpus} CPUs (${report.machine.cpu}), Node ${report.machine.node}`);
  lines.push('Scratch ext4 (-O encrypt) on a loop device. All times in µs.');
  const busy = report.otherCpuPercent;
  const steal = report.stealPercent;
  lines.push(
    `Other processes used ${busy.latency}% of the CPUs while latencies were measured, ${busy.rest}% during the rest; ` +
      `the hypervisor took ${steal.latency}% and ${steal.rest}% (steal).`,
  );
  if (Math.max(busy.latency + steal.latency, busy.rest + steal.rest) > BUSY_MACHINE_PERCENT) {
    lines.push('WARNING: the machine was busy; thread wake-ups (the hop) are slower then, so async medians are inflated. Rerun when it is quiet.');
  }
  const slowestHop = Math.max(...OPERATIONS.map((op) => report.latency[op].hop.median));
  if (slowestHop > QUIET_HOP_US) {
    lines.push(
      `WARNING: a bare thread-pool hop took up to ${slowestHop} µs (median), above the ~${QUIET_HOP_US} µs of a quiet machine: ` +
        'vCPU wake-ups are slow right now (often host contention, invisible to the guest), which inflates every async number; ' +
        'judge the package by "rest", or rerun.',
    );
  }
  lines.push('');
  lines.push(`Per-operation latency: ${p.iterations} calls per op after ${p.warmup} warm-up, each awaited before the next.`);
  lines.push('  package  = await of the lib/kernel call (validation, thread-pool round trip, open()+ioctl()+close(), promise)');
  lines.push('  floor    = the same ioctl from C on an already-open fd, same thread, no hop (bench/kernel-floor.c)');
  lines.push(`  overhead = package median - floor median (bound: <= ${MAX_OVERHEAD_US})`);
  lines.push('  hop      = bare thread-pool round trip, await FileHandle.stat(), timed just before each package call');
  lines.push(`  open     = open()+close() the addon makes per call, from C: median ${report.openClose.median}`);
  lines.push('  rest     = median of (call - the hop before it) - floor - open: what validation, argument');
  lines.push('             copies and result conversion add; paired, so it holds still when the machine does not');
  lines.push(
    formatTable(
      ['operation', 'package med', 'p99', 'floor med', 'p99', 'overhead', 'hop med', 'p99', 'rest'],
      OPERATIONS.map((op) => {
        const l = report.latency[op];
        return [op, l.package.median, l.package.p99, l.floor.median, l.floor.p99, l.overhead, l.hop.median, l.hop.p99, l.rest];
      }),
    ),
  );
  lines.push('');
  lines.push(`Throughput, ops/s (median of 5 rounds of 4096 calls): one call at a time vs ${p.inFlight} in flight.`);
  lines.push('  floor ops/s = 1e6 / floor mean latency, one thread');
  lines.push(
    formatTable(
      ['operation', 'sequential', `${p.inFlight} in flight`, 'speed-up', 'floor ops/s'],
      Object.entries(report.throughput).map(([op, t]) => [op, t.sequential, t.concurrent, t.speedup, Math.round(1e6 / report.latency[op].floor.mean)]),
    ),
  );
  lines.push('');
  lines.push(`Equivalent jobs, package (${p.jobRuns} runs) vs the fscrypt CLI (${p.cliRuns} runs, wall-clock per process).`);
  lines.push('  encrypt: fs.promises.readFile(64-byte key file) + addKey + fs.promises.mkdir + setPolicy');
  lines.push('           vs  fscrypt encrypt DIR --source=raw_key --key=FILE (also writes .fscrypt metadata)');
  lines.push('  unlock:  addKey (key in memory)                 vs  fscrypt unlock DIR --key=FILE');
  lines.push('  lock:    removeKey (directory opened by status) vs  fscrypt lock DIR');
  lines.push('  status:  getKeyStatus + getPolicy               vs  fscrypt status DIR');
  lines.push('  steps = median of each step of the package job, awaited one after another');
  lines.push(`  ratio = CLI median / package median (bound: >= ${MIN_CLI_RATIO})`);
  if (report.cli.skipped) lines.push(`  fscrypt CLI not measured: ${report.cli.skipped}`);
  else if (report.cli.config === 'temporary') lines.push(`  (${FSCRYPT_CONF} did not exist: a temporary one was used and removed)`);
  lines.push(
    formatTable(
      ['job', 'package med', 'p99', 'CLI med', 'p99', 'ratio', 'package steps'],
      JOBS.map((job) => {
        const j = report.jobs[job];
        const steps = Object.entries(j.packageStepMedians).map(([step, us]) => `${step} ${us}`).join(' + ');
        return [job, j.package.median, j.package.p99, j.cli?.median, j.cli?.p99, j.ratio === null ? null : `${j.ratio}x`, steps];
      }),
    ),
  );
  lines.push('');
  lines.push('Bounds:');
  for (const check of report.checks) {
    const verdict = check.holds === null ? 'n/a ' : check.holds ? 'ok  ' : 'FAIL';
    lines.push(`  ${verdict} ${check.bound} (${check.value})`);
  }
  process.stdout.write(`${lines.join('\n')}\n`);
}

// ------------------------------------------------------------------- main

async function main() {
  const options = parseArgs(process.argv.slice(2));
  requireRoot('bench/kernel');
  requireExt4Encryption();
  requireCommand('mkfs.ext4', 'e2fsprogs');
  requireCommand('gcc', 'gcc');
  ensurePackageBuilt();
  const floorBinary = compileC('kernel-floor.c', 'kernel-floor');
  const kernel = await import('../dist/index.js');

  const scratch = makeScratchExt4({ sizeMiB: 256 });
  const mountpoint = scratch.mountpoint;
  const support = await kernel.probe(mountpoint);
  if (!support.supported) {
    throw new PreconditionError(`fscrypt is not supported on the scratch filesystem: ${support.reason}${support.remedy ? `; ${support.remedy}` : ''}`);
  }

  const latencyContention = startContentionMeter();
  progress(`C floor, ${options.iterations} iterations per op`);
  const floorSamples = measureFloor(floorBinary, mountpoint, join(mountpoint, 'floor'), options);
  progress(`package, ${options.iterations} iterations per op, hop interleaved`);
  const packageResult = await measurePackage(kernel, mountpoint, join(mountpoint, 'package'), options);
  const contention = { latency: latencyContention() };
  const restContention = startContentionMeter();
  progress(`throughput, 1 vs ${options.inFlight} in flight`);
  const throughput = await measureThroughput(kernel, mountpoint, options);
  progress(`package jobs, ${options.jobRuns} runs`);
  const packageJobs = await measurePackageJobs(kernel, mountpoint, join(mountpoint, 'jobs'), options);
  let cli;
  if (hasCommand('fscrypt')) {
    progress(`fscrypt CLI jobs, ${options.cliRuns} runs`);
    cli = await measureCliJobs(mountpoint, join(mountpoint, 'cli'), options);
  } else {
    cli = { skipped: 'the fscrypt command is not installed (apt-get install fscrypt)' };
  }
  contention.rest = restContention();
  scratch.cleanup();

  const report = buildReport(options, release(), contention, floorSamples, packageResult, throughput, packageJobs, cli);
  if (options.json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  else printReport(report);
}

main().catch((error) => {
  process.stderr.write(`kernel: ${error instanceof PreconditionError ? error.message : error.stack}\n`);
  process.exitCode = error instanceof PreconditionError ? 2 : 1;
});
