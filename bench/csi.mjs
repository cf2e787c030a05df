// bench/csi: what kubelet waits for (issue 8). NodePublishVolume and
// NodeUnpublishVolume over real gRPC, against the real CsiServer (dist/), with
// a real grpc-js client on the unix socket (authority localhost) in a worker
// thread of its own (bench/lib/standins/csi-kubelet.mjs, kubelet's stand-in).
//
//   - the slots: --volumes (32) of them, each a subdirectory of one of a few
//     loop ext4 -O encrypt filesystems bind-mounted on itself (a slot is a
//     mount point), initSlot'ed with a file key source and prepare'd; one
//     protector opened per slot and held, as the agent holds them. Targets
//     live in a kubelet-like tree (<kubelet>/pods/<uid>/volumes/
//     kubernetes.io~csi/<pv>/mount) on a plain loop ext4, as kubelet's root
//     directory would.
//   - one at a time: publish, then unpublish, cycling over the slots;
//     in flight: rounds of --volumes publishes at once (one per slot), then
//     their unpublishes at once. Each call is timed by the client, from just
//     before it is made until its answer arrives; p50 and p99.
//   - the breakdown of each call, from the server's hookObserver
//     (CsiServerOptions): the hook (lib/volume unlock / lock) from its start
//     through its steps to its end, matched to the client's call by volume
//     and order. RPC overhead = the client's total minus the hook: gRPC
//     both ways, the request checks, the target path check and the handle's
//     resolution (which reads the slot state). Inside the hook: up to the
//     target's durable record (slot lock, state read, the volume claim and
//     its encryption policy checked, mount table checks, the state write),
//     the unwrap of the volume key under the protector (timed by a thin
//     wrapper around the slot's open protector), the ADD_KEY ioctl (the step
//     minus the unwrap), the bind mount (mkdir, mount(8), mountinfo check),
//     and the release of the slot lock.
//   - the PLAIN baseline, in the same run, interleaved call by call (one at
//     a time) or round by round (in flight) with the encrypted calls, on the
//     same filesystems: a second gRPC server on its own socket, built from the
//     same server code (rpc.ts's unary wrapper, the same request and target
//     checks, the same VolumeResolver, slot lock, slot state reads and
//     durable writes, mount helpers) with lib/volume's unlock and lock less
//     everything about encryption (bench/lib/standins/csi-plain-node.mjs says exactly
//     what). It publishes an unencrypted directory of a slot like the
//     others. encrypted p50 / plain p50 is what encryption costs a publish.
//   - the gRPC round trip alone: a NodeGetCapabilities (no I/O) before each
//     single cycle and beside each round's publishes.
//   - the same encrypted calls (a round, then single cycles for twice as
//     long as the round took, and again) while a TrashCollector in the same process
//     deletes a crypto-erased volume of --trash-files empty files (in
//     directories of 1000, just written, so their metadata is cached: the
//     deletion is CPU-bound, the harder case for the calls) on a slot of its
//     own filesystem. Only calls made entirely while the deletion ran count;
//     how long it took, and how much of it the calls covered, is reported.
//     Whether the calls wait for the server process itself is sampled in
//     every phase (bench/lib/measure/wait-probe.mjs): the event loop's delay and a
//     thread-pool round trip of an fs call that touches no disk.
//
// The thread pool is what the agent should run with: UV_THREADPOOL_SIZE=64
// (lib/volume/thread-pool.ts) unless set in the environment (the script runs
// itself again with it set: bench/lib/thread-pool.mjs). The servers log
// nothing (a log that only keeps warnings), so logging costs neither side.
// kubelet dials a new connection per call; here each server has one channel,
// so connection setup is not measured.
//
//   node bench/csi.mjs [--json] [--runs=N] [--volumes=N] [--trash-files=N] [--trash-concurrency=N]
//
// --runs: calls of each kind per configuration (one at a time: N cycles; in
// flight: N / volumes rounds, at least one). --trash-concurrency: the
// TrashCollector's unlinks in flight (default: its own, 32). Goals (issue
// 8; reported, never asserted): publish p50 within 2x of the plain publish,
// publish p99 under 10 ms with 32 volumes in flight.
//
// Needs root (loop mounts, bind mounts, keyrings). Runs the built package
// (dist/; bench/run.mjs builds first). Everything lives in temp dirs and is
// unmounted and deleted on exit, on an error or on a signal.
import { execFileSync } from 'node:child_process';
import { randomBytes, randomFillSync, randomUUID } from 'node:crypto';
import { closeSync, mkdirSync, openSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, release } from 'node:os';
import { join } from 'node:path';
import { BUILT_ENV, ensurePackageBuilt } from './lib/build.mjs';
import { onCleanup } from './lib/cleanup.mjs';
import { startContentionMeter } from './lib/measure/contention.mjs';
import { startKubelet } from './lib/standins/csi-kubelet.mjs';
import { PreconditionError, requireCommand, requireExt4Encryption, requireRoot } from './lib/preflight.mjs';
import { makeScratchExt4 } from './lib/scratch-fs.mjs';
import { summarize } from './lib/measure/stats.mjs';
import { formatTable } from './lib/measure/table.mjs';
import { reexecWithThreadPool } from './lib/thread-pool.mjs';
import { startWaitProbe } from './lib/measure/wait-probe.mjs';

const GOAL_RATIO = 2;
const GOAL_P99_MS = 10;
const BUSY_MACHINE_PERCENT = 10;
const DEFAULTS = { runs: 320, volumes: 32, trashFiles: 100_000 };
const SLOTS_PER_FILESYSTEM = 8;
const FILES_PER_DIR = 1000;
const NODE = 'bench-node';

const USAGE = 'usage: node bench/csi.mjs [--json] [--runs=N] [--volumes=N] [--trash-files=N] [--trash-concurrency=N]';

function parseArgs(argv) {
  const options = { json: false, ...DEFAULTS };
  const integer = { '--runs': 'runs', '--volumes': 'volumes', '--trash-files': 'trashFiles', '--trash-concurrency': 'trashConcurrency' };
  for (const arg of argv) {
    const [name, value] = arg.split('=', 2);
    if (arg === '--json') options.json = true;
    else if (name in integer && /^\d+$/.test(value ?? '') && Number(value) > 0) options[integer[name]] = Number(value);
    else throw new PreconditionError(`unknown or bad argument ${arg}\n${USAGE}`);
  }
  return options;
}

const log = (message) => process.stderr.write(`bench/csi: ${message}\n`);
const now = () => Number(process.hrtime.bigint());
const round = (x, digits = 2) => Math.round(x * 10 ** digits) / 10 ** digits;
const times = (ratio) => (ratio === null ? '-' : `${ratio}x`);
const run = (command, args) => execFileSync(command, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

/** Summary of nanosecond samples in ms: { n, p50, p99, mean, max }. */
function inMs(samplesNs) {
  const s = summarize(samplesNs);
  return { n: s.n, p50: round(s.median / 1000, 3), p99: round(s.p99 / 1000, 3), mean: round(s.mean / 1000, 3), max: round(Math.max(...samplesNs) / 1e6, 3) };
}

/** Mount points this run made (slots bound on themselves, targets), unmounted on any exit before their filesystems. */
function mountRegistry() {
  const paths = new Set();
  onCleanup(() => {
    for (const path of [...paths].reverse()) {
      try {
        run('umount', ['-l', path]);
      } catch {
        // not mounted (a target already unpublished)
      }
    }
  });
  return { add: (path) => paths.add(path) };
}

function bindOnItself(dir, mounts) {
  mkdirSync(dir, { recursive: true });
  run('mount', ['--bind', dir, dir]);
  mounts.add(dir);
  return dir;
}

/**
 * What the servers saw of each call's hook, by RPC and volume, in order:
 * { start, end, ok, steps: { name: time }, unwrapNs?, stateWriteNs? }, with
 * times in hrtime ns.
 */
function hookRecorder() {
  const open = new Map();
  const done = new Map();
  const key = (rpc, volumeId) => `${rpc} ${volumeId}`;
  const observe = ({ rpc, volumeId, event }) => {
    const at = now();
    const k = key(rpc, volumeId);
    if (event.kind === 'hook-start') {
      open.set(k, { start: at, steps: {} });
      return;
    }
    const record = open.get(k);
    if (record === undefined) return;
    if (event.kind === 'step') record.steps[event.step] = at;
    else if (event.kind === 'hook-end') {
      Object.assign(record, { end: at, ok: event.ok });
      open.delete(k);
      if (!done.has(k)) done.set(k, []);
      done.get(k).push(record);
    }
  };
  const note = (field) => (rpc, volumeId, ns) => {
    const record = open.get(key(rpc, volumeId));
    if (record) record[field] = ns;
  };
  observe.stateWrite = note('stateWriteNs');
  return {
    observe,
    unwrapped: note('unwrapNs'),
    take(rpc, volumeId) {
      const record = done.get(key(rpc, volumeId))?.shift();
      if (record === undefined) throw new Error(`no hook was observed for ${rpc} of ${volumeId}`);
      return record;
    },
  };
}

/**
 * The slot's open protector as the server sees it, with the unwrap of each
 * volume key timed (the key itself passes through untouched).
 */
function timedProtector(protector, onUnwrap) {
  return {
    get descriptor() {
      return protector.descriptor;
    },
    get info() {
      return protector.info;
    },
    get root() {
      return protector.root;
    },
    addPolicy: (policyKey) => protector.addPolicy(policyKey),
    async unwrapPolicyKey(identifier) {
      const start = now();
      try {
        return await protector.unwrapPolicyKey(identifier);
      } finally {
        onUnwrap(now() - start);
      }
    },
    close: () => protector.close(),
  };
}

// How a call's time divides, by what the hooks reported. Each entry: [part, from the record and the call → ns].
const since = (r, from, to) => r.steps[to] - (from === 'start' ? r.start : r.steps[from]);
const BREAKDOWN = {
  encrypted: {
    NodePublishVolume: {
      rpc: (r, c) => c.end - c.start - (r.end - r.start),
      recorded: (r) => since(r, 'start', 'unlock:target-recorded'),
      unwrap: (r) => r.unwrapNs,
      addKey: (r) => since(r, 'unlock:target-recorded', 'unlock:key-added') - r.unwrapNs,
      mount: (r) => since(r, 'unlock:key-added', 'unlock:mounted'),
      release: (r) => r.end - r.steps['unlock:mounted'],
    },
    NodeUnpublishVolume: {
      rpc: (r, c) => c.end - c.start - (r.end - r.start),
      unmount: (r) => since(r, 'start', 'lock:unmounted'),
      removeKey: (r) => since(r, 'lock:unmounted', 'lock:key-removed'),
      stateWrite: (r) => since(r, 'lock:key-removed', 'lock:recorded'),
      release: (r) => r.end - r.steps['lock:recorded'],
    },
  },
  plain: {
    NodePublishVolume: {
      rpc: (r, c) => c.end - c.start - (r.end - r.start),
      recorded: (r) => since(r, 'start', 'plain:target-recorded'),
      stateWrite: (r) => r.stateWriteNs,
      mount: (r) => since(r, 'plain:target-recorded', 'plain:mounted'),
      release: (r) => r.end - r.steps['plain:mounted'],
    },
    NodeUnpublishVolume: {
      rpc: (r, c) => c.end - c.start - (r.end - r.start),
      unmount: (r) => since(r, 'start', 'plain:unmounted'),
      stateWrite: (r) => since(r, 'plain:unmounted', 'plain:recorded'),
      release: (r) => r.end - r.steps['plain:recorded'],
    },
  },
};

/** Collects the calls of one configuration: totals and parts, per server and RPC. */
function sampleSet() {
  const samples = {};
  return {
    samples,
    add(server, method, call, record) {
      const bucket = ((samples[server] ??= {})[method] ??= { total: [] });
      bucket.total.push(call.end - call.start);
      if (record === undefined) return; // a call with no hook
      if (!(record.start >= call.start && record.end <= call.end)) {
        throw new Error(`the hook observed for ${method} (${record.start}..${record.end}) is not inside the client's call (${call.start}..${call.end}): calls and hooks are mismatched`);
      }
      for (const [part, of] of Object.entries(BREAKDOWN[server][method])) {
        const ns = of(record, call);
        if (!Number.isFinite(ns)) throw new Error(`${server} ${method}: no measurement of ${part} (steps seen: ${Object.keys(record.steps).join(', ')})`);
        (bucket[part] ??= []).push(ns);
      }
    },
  };
}

function summarizeSet(samples) {
  return Object.fromEntries(
    Object.entries(samples).map(([server, methods]) => [
      server,
      Object.fromEntries(Object.entries(methods).map(([method, parts]) => [method, Object.fromEntries(Object.entries(parts).map(([part, ns]) => [part, inMs(ns)]))])),
    ]),
  );
}

/** Fills `root` with `files` empty files in directories of FILES_PER_DIR (synchronous: nothing else runs yet). */
function fillWithEmptyFiles(root, files) {
  const start = now();
  for (let d = 0; d * FILES_PER_DIR < files; d++) {
    const dir = join(root, `d${String(d).padStart(4, '0')}`);
    mkdirSync(dir);
    const count = Math.min(FILES_PER_DIR, files - d * FILES_PER_DIR);
    for (let i = 0; i < count; i++) closeSync(openSync(join(dir, `f${String(i).padStart(4, '0')}`), 'wx'));
  }
  return (now() - start) / 1e6;
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  requireRoot('bench/csi');
  requireExt4Encryption();
  requireCommand('mount', 'mount');
  ensurePackageBuilt();
  const { SERVICE_THREADPOOL_SIZE, threadPoolSize } = await import('../dist/volume/thread-pool.js');
  if (await reexecWithThreadPool(SERVICE_THREADPOOL_SIZE, { [BUILT_ENV]: '1' })) return;
  const lib = await import('../dist/index.js');
  const csi = await import('../dist/agent/csi/index.js');
  const { startPlainNodeServer, plainSlotState } = await import('./lib/standins/csi-plain-node.mjs');
  const { writeSlotState } = await import('../dist/volume/slot/slot-state.js');
  for (const name of ['initSlot', 'openSlotProtector', 'prepare', 'unlock', 'lock', 'erase', 'TrashCollector', 'parseKeySource']) {
    if (typeof lib[name] !== 'function') throw new Error(`dist/index.js does not export ${name}: run npm run build`);
  }

  const { volumes } = options;
  const sequentialCycles = options.runs;
  const rounds = Math.max(1, Math.round(options.runs / volumes));
  const filesystems = Math.ceil(volumes / SLOTS_PER_FILESYSTEM);
  const lazyOff = ['-E', 'lazy_itable_init=0,lazy_journal_init=0']; // no ext4lazyinit writing during the timed calls

  // Scratch filesystems first, the mounts made on them after (cleanup runs last-registered first).
  log(`making ${filesystems} slot filesystems, a kubelet filesystem and a trash slot filesystem`);
  const kubeletFs = makeScratchExt4({ sizeMiB: 64, mkfsArgs: lazyOff });
  const slotFss = Array.from({ length: filesystems }, () => makeScratchExt4({ sizeMiB: 128, mkfsArgs: lazyOff }));
  const trashDirs = Math.ceil(options.trashFiles / FILES_PER_DIR);
  const trashFs = makeScratchExt4({
    sizeMiB: 128 + Math.ceil((options.trashFiles * 600) / 1048576),
    mkfsArgs: ['-N', String(options.trashFiles + trashDirs + 4096), ...lazyOff],
  });
  const mounts = mountRegistry();
  const kek = join(kubeletFs.dir, 'kek');
  writeFileSync(kek, randomFillSync(Buffer.alloc(32)), { mode: 0o600 });
  const source = lib.parseKeySource(`file:${kek}`);
  const kubeletDir = join(kubeletFs.mountpoint, 'kubelet');
  const newTarget = (pv) => {
    const parent = join(kubeletDir, 'pods', randomUUID(), 'volumes', 'kubernetes.io~csi', pv);
    mkdirSync(parent, { recursive: true, mode: 0o750 });
    const target = join(parent, 'mount');
    mounts.add(target);
    return target;
  };

  const recorder = hookRecorder();
  const protectors = [];
  const encryptedTable = new Map();
  const plainTable = new Map();
  const slots = { encrypted: [], plain: [] };
  log(`preparing ${volumes} encrypted and ${volumes} plain slots`);
  for (let i = 0; i < volumes; i++) {
    const fs = slotFss[i % filesystems];
    const root = bindOnItself(join(fs.mountpoint, `enc-${i}`), mounts);
    await lib.initSlot(root, source);
    const protector = await lib.openSlotProtector(root, source);
    protectors.push(protector);
    const volume = await lib.prepare(root, protector);
    const volumeId = csi.formatVolumeHandle({ nodeName: NODE, slot: protector.descriptor, generation: volume.generation, identifier: volume.identifier });
    encryptedTable.set(protector.descriptor, { root, protector: timedProtector(protector, (ns) => recorder.unwrapped('NodePublishVolume', volumeId, ns)) });
    slots.encrypted.push({ volumeId, target: newTarget(`pv-enc-${i}`) });

    const plainRoot = bindOnItself(join(fs.mountpoint, `plain-${i}`), mounts);
    mkdirSync(join(plainRoot, '.fscrypt-local'), { mode: 0o700 });
    mkdirSync(join(plainRoot, 'vol-1'), { mode: 0o755 });
    const descriptor = randomBytes(8).toString('hex');
    const identifier = randomBytes(16).toString('hex');
    await writeSlotState(plainRoot, plainSlotState(descriptor, identifier));
    plainTable.set(descriptor, { root: plainRoot });
    slots.plain.push({ volumeId: csi.formatVolumeHandle({ nodeName: NODE, slot: descriptor, generation: 1, identifier }), target: newTarget(`pv-plain-${i}`) });
  }

  // The trash slot: a volume filled with empty files through a target, then locked (released).
  const trashSlot = bindOnItself(join(trashFs.mountpoint, 'slot'), mounts);
  await lib.initSlot(trashSlot, source);
  const trashProtector = await lib.openSlotProtector(trashSlot, source);
  protectors.push(trashProtector);
  const trashVolume = await lib.prepare(trashSlot, trashProtector);
  const fillTarget = join(trashFs.dir, 'fill');
  mounts.add(fillTarget);
  await lib.unlock(trashVolume, trashProtector, { path: fillTarget });
  log(`filling the trash volume with ${options.trashFiles} empty files`);
  const fillMs = fillWithEmptyFiles(fillTarget, options.trashFiles);
  await lib.lock(trashVolume, fillTarget);
  log(`filled in ${round(fillMs / 1000, 1)} s`);

  const warnings = [];
  const quiet = { info() {}, warn: (fields, message) => warnings.push(message), error: (fields, message) => warnings.push(message) };
  const socketDir = join(kubeletFs.dir, 'sockets');
  mkdirSync(socketDir, { mode: 0o700 });
  const server = new csi.CsiServer({ nodeId: NODE, kubeletDir, slots: encryptedTable, log: quiet, hookObserver: recorder.observe });
  await server.start(`unix://${join(socketDir, 'encrypted.sock')}`);
  const plainServer = await startPlainNodeServer({ socket: join(socketDir, 'plain.sock'), nodeId: NODE, kubeletDir, slots: plainTable, log: quiet, observe: recorder.observe });
  const kubelet = startKubelet({ encrypted: join(socketDir, 'encrypted.sock'), plain: join(socketDir, 'plain.sock') });
  const trash = new lib.TrashCollector(options.trashConcurrency === undefined ? {} : { concurrency: options.trashConcurrency });

  const capability = { mount: { fs_type: '', mount_flags: [] }, access_mode: { mode: 'SINGLE_NODE_WRITER' } };
  const publishCall = (server, { volumeId, target }) => ({ server, method: 'NodePublishVolume', request: { volume_id: volumeId, target_path: target, volume_capability: capability, readonly: false } });
  const unpublishCall = (server, { volumeId, target }) => ({ server, method: 'NodeUnpublishVolume', request: { volume_id: volumeId, target_path: target } });
  // The gRPC round trip alone: a call that does no I/O, before each cycle, and beside each round's publishes.
  const transportCall = (server) => ({ server, method: 'NodeGetCapabilities', request: {} });
  const cycle = (server, slot) => [[transportCall(server)], [publishCall(server, slot)], [unpublishCall(server, slot)]];
  const allAtOnce = (server) => [[...slots[server].map((s) => publishCall(server, s)), transportCall(server)], slots[server].map((s) => unpublishCall(server, s))];
  const HOOKED = new Set(['NodePublishVolume', 'NodeUnpublishVolume']);

  /**
   * Runs the batches; every call's time and hook go into `set` (if the call
   * lies in `window`, when given). Returns how many publishes went in.
   */
  const measure = async (batches, set, window) => {
    const results = await kubelet.run(batches);
    let inside = 0;
    batches.forEach((batch, b) =>
      batch.forEach((call, c) => {
        const timing = results[b][c];
        const record = HOOKED.has(call.method) ? recorder.take(call.method, call.request.volume_id) : undefined;
        if (window && !(timing.start >= window.start && timing.end <= (window.end ?? Infinity))) return;
        set?.add(call.server, call.method, timing, record);
        if (call.method === 'NodePublishVolume') inside++;
      }),
    );
    return inside;
  };

  const meter = startContentionMeter();
  const loadBefore = loadavg();
  const sets = {};
  const waits = {};
  let deletion;
  try {
    log('warm-up: every slot published and unpublished once');
    await measure([...allAtOnce('encrypted'), ...allAtOnce('plain')]);

    log(`one at a time: ${sequentialCycles} encrypted and ${sequentialCycles} plain publish/unpublish cycles, interleaved`);
    sets.sequential = sampleSet();
    const interleaved = [];
    for (let k = 0; k < sequentialCycles; k++) interleaved.push(...cycle('encrypted', slots.encrypted[k % volumes]), ...cycle('plain', slots.plain[k % volumes]));
    let probe = startWaitProbe();
    await measure(interleaved, sets.sequential);
    waits.sequential = await probe();

    log(`${volumes} in flight: ${rounds} rounds each, encrypted and plain alternating`);
    sets.inFlight = sampleSet();
    const alternating = [];
    for (let k = 0; k < rounds; k++) alternating.push(...allAtOnce('encrypted'), ...allAtOnce('plain'));
    probe = startWaitProbe();
    await measure(alternating, sets.inFlight);
    waits.inFlight = await probe();

    // Background deletion: crypto-erase the trash volume; its ciphertext goes to the collector.
    log(`erasing the trash volume; measuring while its ${options.trashFiles} files are deleted in the background`);
    sets.sequentialDuringDeletion = sampleSet();
    sets.inFlightDuringDeletion = sampleSet();
    const eraseStart = now();
    await lib.erase(trashVolume, { trash });
    const window = { start: now(), end: undefined };
    const eraseMs = (window.start - eraseStart) / 1e6;
    const idle = trash.idle().then(() => (window.end = now()));
    probe = startWaitProbe();
    const during = { sequential: 0, inFlight: 0 };
    // A round, then single cycles for twice as long as the round took (a round yields
    // --volumes publishes, a single cycle one), and again: both configurations sample
    // the whole deletion, until it is over or both have their counts.
    const enough = () => during.sequential >= sequentialCycles && during.inFlight >= rounds * volumes;
    for (let k = 0; window.end === undefined && !enough(); ) {
      const roundStart = now();
      if (during.inFlight < rounds * volumes) during.inFlight += await measure(allAtOnce('encrypted'), sets.inFlightDuringDeletion, window);
      const singlesNs = 2 * Math.max(now() - roundStart, 1e8);
      for (const cyclesStart = now(); window.end === undefined && during.sequential < sequentialCycles && now() - cyclesStart < singlesNs; k++) {
        during.sequential += await measure(cycle('encrypted', slots.encrypted[k % volumes]), sets.sequentialDuringDeletion, window);
      }
    }
    const measuredUntil = Math.min(now(), window.end ?? Infinity);
    waits.duringDeletion = await probe();
    await idle;
    const status = trash.status();
    if (status.failures.length > 0) throw new Error(`the background deletion failed: ${status.failures.map((f) => f.error.message).join('; ')}`);
    if (status.removed.files !== options.trashFiles) throw new Error(`the background deletion removed ${status.removed.files} files, expected ${options.trashFiles}`);
    deletion = {
      files: options.trashFiles,
      dirs: trashDirs,
      fillMs: round(fillMs, 0),
      eraseMs: round(eraseMs),
      deletionMs: round((window.end - window.start) / 1e6, 0),
      measuredMs: round((measuredUntil - window.start) / 1e6, 0),
      callsDuring: { sequential: during.sequential, inFlight: during.inFlight },
    };
    deletion.coveredPercent = round((100 * deletion.measuredMs) / deletion.deletionMs, 0);
    log(`deletion took ${round(deletion.deletionMs / 1000, 2)} s; ${deletion.callsDuring.sequential} one-at-a-time and ${deletion.callsDuring.inFlight} in-flight publishes ran inside it`);
  } finally {
    await kubelet.close();
    await server.stop();
    await plainServer.stop();
    await trash.close();
    for (const protector of protectors) protector.close();
  }
  const contention = meter();
  const loadAfter = loadavg();
  if (warnings.length > 0) log(`the servers warned ${warnings.length} times, first: ${warnings[0]}`);

  const report = buildReport(options, { sets, waits, deletion, rounds, filesystems, threadPool: threadPoolSize(), contention, loadBefore, loadAfter, warnings: warnings.length });
  if (options.json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  else printReport(report);
}

function buildReport({ json, ...parameters }, m) {
  const configurations = Object.fromEntries(Object.entries(m.sets).map(([name, set]) => [name, summarizeSet(set.samples)]));
  const publish = (config, server) => configurations[config]?.[server]?.NodePublishVolume?.total;
  const ratio = (a, b) => (a && b ? round(a / b, 2) : null);
  const ratios = {
    sequential: { publishP50: ratio(publish('sequential', 'encrypted')?.p50, publish('sequential', 'plain')?.p50), publishP99: ratio(publish('sequential', 'encrypted')?.p99, publish('sequential', 'plain')?.p99) },
    inFlight: { publishP50: ratio(publish('inFlight', 'encrypted')?.p50, publish('inFlight', 'plain')?.p50), publishP99: ratio(publish('inFlight', 'encrypted')?.p99, publish('inFlight', 'plain')?.p99) },
    deletionSequential: { publishP50: ratio(publish('sequentialDuringDeletion', 'encrypted')?.p50, publish('sequential', 'encrypted')?.p50), publishP99: ratio(publish('sequentialDuringDeletion', 'encrypted')?.p99, publish('sequential', 'encrypted')?.p99) },
    deletionInFlight: { publishP50: ratio(publish('inFlightDuringDeletion', 'encrypted')?.p50, publish('inFlight', 'encrypted')?.p50), publishP99: ratio(publish('inFlightDuringDeletion', 'encrypted')?.p99, publish('inFlight', 'encrypted')?.p99) },
  };
  const p99InFlight = publish('inFlight', 'encrypted').p99;
  const goals = [
    {
      goal: `publish p50 within ${GOAL_RATIO}x of the plain publish (one at a time)`,
      met: ratios.sequential.publishP50 <= GOAL_RATIO,
      value: `${publish('sequential', 'encrypted').p50} ms vs ${publish('sequential', 'plain').p50} ms: ${times(ratios.sequential.publishP50)} (${parameters.volumes} in flight: ${times(ratios.inFlight.publishP50)})`,
    },
    {
      goal: `publish p99 under ${GOAL_P99_MS} ms with ${parameters.volumes} volumes in flight`,
      met: p99InFlight < GOAL_P99_MS,
      value: `${p99InFlight} ms (p50 ${publish('inFlight', 'encrypted').p50} ms; plain p99 ${publish('inFlight', 'plain').p99} ms)`,
    },
  ];
  const duringP99 = publish('inFlightDuringDeletion', 'encrypted')?.p99;
  if (duringP99 !== undefined) {
    goals.push({
      goal: `the same, while ${m.deletion.files} files are deleted in the background`,
      met: duringP99 < GOAL_P99_MS,
      value: `${duringP99} ms (${times(ratios.deletionInFlight.publishP99)} the p99 without; one at a time p50 ${times(ratios.deletionSequential.publishP50)})`,
    });
  }
  return {
    benchmark: 'csi',
    unit: 'ms',
    machine: { kernel: release(), cpus: cpus().length, cpu: cpus()[0]?.model ?? 'unknown', node: process.version, threadPool: m.threadPool },
    load: {
      otherCpuPercent: m.contention.otherCpuPercent,
      kernelCpuPercent: m.contention.kernelCpuPercent,
      stealPercent: m.contention.stealPercent,
      loadavgBefore: m.loadBefore.map((x) => round(x)),
      loadavgAfter: m.loadAfter.map((x) => round(x)),
    },
    parameters: { ...parameters, rounds: m.rounds, filesystems: m.filesystems, slotsPerFilesystem: SLOTS_PER_FILESYSTEM, filesPerDir: FILES_PER_DIR },
    configurations,
    // How long the server process made work wait, sampled through each phase (bench/lib/measure/wait-probe.mjs).
    waits: m.waits,
    ratios,
    deletion: m.deletion,
    serverWarnings: m.warnings,
    goals,
  };
}

const PUBLISH_PARTS = [
  ['rpc', 'RPC overhead (client total - hook)'],
  ['recorded', 'hook start -> target recorded (lock, checks, state write)'],
  ['stateWrite', '  of which the durable state write'],
  ['unwrap', 'unwrap the volume key (protector)'],
  ['addKey', 'add key (FS_IOC_ADD_ENCRYPTION_KEY)'],
  ['mount', 'mount (mkdir, mount --bind, mountinfo)'],
  ['release', 'release the slot lock'],
  ['total', 'total (client)'],
];
const UNPUBLISH_PARTS = [
  ['rpc', 'RPC overhead (client total - hook)'],
  ['unmount', 'hook start -> unmounted (lock, checks, umount, rmdir)'],
  ['removeKey', 'remove key (REMOVE_KEY + status)'],
  ['stateWrite', 'durable state write'],
  ['release', 'release the slot lock'],
  ['total', 'total (client)'],
];

function printReport(report) {
  const p = report.parameters;
  const c = report.configurations;
  const lines = [];
  lines.push(`bench/csi  Linux ${report.machine.kernel}, ${report.machine.cpus} CPUs (${report.machine.cpu}), Node ${report.machine.node}, UV_THREADPOOL_SIZE ${report.machine.threadPool}`);
  lines.push(`CSI node calls over gRPC on the unix socket (client in a worker thread), ${p.volumes} slots on ${p.filesystems} loop ext4 -O encrypt filesystems, file key source.`);
  lines.push(`one at a time: ${p.runs} publish/unpublish cycles; in flight: ${p.rounds} rounds of ${p.volumes} publishes at once, then their unpublishes. Encrypted and plain interleaved.`);
  lines.push('plain = the same server path publishing an unencrypted directory (bench/lib/standins/csi-plain-node.mjs). Times in ms; parts are medians of each part, so they need not add up.');
  const l = report.load;
  lines.push(
    `Load: other processes used ${l.otherCpuPercent}% of the CPUs during the run, the hypervisor took ${l.stealPercent}% (steal), kernel threads ${l.kernelCpuPercent}% ` +
      `(journal, loop, writeback: mostly this run's own I/O); loadavg ${l.loadavgBefore.join(' ')} before, ${l.loadavgAfter.join(' ')} after.`,
  );
  if (l.otherCpuPercent + l.stealPercent > BUSY_MACHINE_PERCENT) lines.push('WARNING: the machine was busy; every latency is inflated, p99 most. Rerun when it is quiet.');
  lines.push('');

  const columns = [
    ['1 enc', c.sequential?.encrypted],
    ['1 plain', c.sequential?.plain],
    [`${p.volumes} enc`, c.inFlight?.encrypted],
    [`${p.volumes} plain`, c.inFlight?.plain],
    ['1 enc +del', c.sequentialDuringDeletion?.encrypted],
    [`${p.volumes} enc +del`, c.inFlightDuringDeletion?.encrypted],
  ];
  const totals = (method, title = method) =>
    formatTable(
      [title, ...columns.map(([name]) => name)],
      ['n', 'p50', 'p99', 'max'].map((stat) => [stat, ...columns.map(([, s]) => s?.[method]?.total?.[stat])]),
    );
  lines.push(totals('NodePublishVolume'));
  lines.push('');
  lines.push(totals('NodeUnpublishVolume'));
  lines.push('');
  lines.push(totals('NodeGetCapabilities', 'gRPC round trip (NodeGetCapabilities)'));
  lines.push('');
  const parts = (method, names) => formatTable([`${method} p50`, ...columns.map(([name]) => name)], names.map(([part, label]) => [label, ...columns.map(([, s]) => s?.[method]?.[part]?.p50)]));
  lines.push(parts('NodePublishVolume', PUBLISH_PARTS));
  lines.push('');
  lines.push(parts('NodeUnpublishVolume', UNPUBLISH_PARTS));
  lines.push('');
  const w = report.waits;
  const waitColumns = [
    ['1 in flight', w.sequential],
    [`${p.volumes} in flight`, w.inFlight],
    [`${p.volumes} / 1 during deletion`, w.duringDeletion],
  ];
  lines.push('Waits in the server process (sampled through each phase, encrypted and plain calls together):');
  lines.push(
    formatTable(
      ['', ...waitColumns.map(([name]) => name)],
      [
        ['event loop delay p50', ...waitColumns.map(([, x]) => x?.eventLoopDelay.p50)],
        ['event loop delay p99', ...waitColumns.map(([, x]) => x?.eventLoopDelay.p99)],
        ['thread-pool round trip p50', ...waitColumns.map(([, x]) => x?.poolRoundTrip.p50)],
        ['thread-pool round trip p99', ...waitColumns.map(([, x]) => x?.poolRoundTrip.p99)],
      ],
    ),
  );
  lines.push('');
  const r = report.ratios;
  lines.push(`Encrypted / plain publish: one at a time p50 ${times(r.sequential.publishP50)}, p99 ${times(r.sequential.publishP99)}; ${p.volumes} in flight p50 ${times(r.inFlight.publishP50)}, p99 ${times(r.inFlight.publishP99)}.`);
  const d = report.deletion;
  if (d) {
    lines.push(
      `Background deletion: ${d.files} empty files in ${d.dirs} directories (filled in ${round(d.fillMs / 1000, 1)} s), erase ${d.eraseMs} ms, then deleted by the TrashCollector ` +
        `(${p.trashConcurrency ?? 'its default'} unlinks in flight) in ${round(d.deletionMs / 1000, 2)} s; ` +
        `the calls covered its first ${round(d.measuredMs / 1000, 2)} s (${d.coveredPercent}%): ${d.callsDuring.sequential} one-at-a-time and ${d.callsDuring.inFlight} in-flight publishes inside it.`,
    );
    lines.push(
      `Encrypted publish during the deletion / without: one at a time p50 ${times(r.deletionSequential.publishP50)}, p99 ${times(r.deletionSequential.publishP99)}; ` +
        `${p.volumes} in flight p50 ${times(r.deletionInFlight.publishP50)}, p99 ${times(r.deletionInFlight.publishP99)}.`,
    );
  }
  lines.push('');
  lines.push('Goals (issue 8; reported, not asserted):');
  for (const goal of report.goals) lines.push(`  ${goal.met ? 'met    ' : 'NOT met'} ${goal.goal}: ${goal.value}`);
  process.stdout.write(`${lines.join('\n')}\n`);
}

main().catch((error) => {
  if (error instanceof PreconditionError) {
    process.stderr.write(`bench/csi: ${error.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`bench/csi: ${error.stack ?? error}\n`);
  process.exit(1);
});
