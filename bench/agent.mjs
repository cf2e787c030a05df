// bench/agent: the node agent at scale (issue 9). The real agent (runAgent
// from dist/, as `fscrypt-local run` starts it, with its production timings:
// 10 s discovery period, 5 s config period, 5 min resync) runs in a process
// of its own (bench/lib/standins/agent-process.mjs), as on a node, so that its RSS,
// event loop and CPU are its own; the fake Kubernetes API server of the
// tests runs in another (bench/lib/standins/fake-apiserver-process.mjs), and this
// process drives both, makes the slots and plays kubelet.
//
//   - the node: --slots (1000) slots, one StorageClass, file key source. The
//     slots are directories of --filesystems (4) loop ext4 -O encrypt
//     filesystems, each bind-mounted into the class's hostDir (upstream's
//     shared-disk recipe; bench/lib/bind-mounts.mjs), so every slot is a
//     first-level mount point of hostDir. The publish targets live in a
//     kubelet-like tree on a loop ext4 of their own.
//   - the anchor: upstream's design, one serial discovery pass over the same
//     hostDir against a fresh fake API server (bench/lib/standins/upstream-discovery.mjs):
//     time to every PV created, without and with its 10 s discovery period
//     (slots that appear while it sleeps wait for the next pass), and what
//     client-go's default rate limit would add (computed, not slept).
//   - cold start, in a new agent process: from runAgent() to every PV
//     created (the write's own time in the fake server) and to ready
//     (Agent.readiness().ok, polled every 10 ms in the agent's process;
//     /readyz is then asked once over HTTP and must answer 200); also from
//     the fork (node's start and the modules' import included). The agent
//     initialises (init-slot) and prepares every slot, then creates its PV.
//   - steady state, right after the cold start, with every volume known:
//     --idle (12) seconds of nothing but the agent's own timers (a discovery
//     pass over every slot and config re-reads among them): RSS after a full
//     GC, the peak RSS sampled every 50 ms, the event-loop delay
//     (bench/lib/measure/wait-probe.mjs, in the agent's process). The baseline is
//     the agent's process after a GC just before runAgent(), its modules
//     loaded.
//   - publish: a few PVs bound in the fake server; NodePublishVolume /
//     NodeUnpublishVolume over gRPC on the agent's CSI socket from a real
//     grpc-js client in a worker thread of this process
//     (bench/lib/standins/csi-kubelet.mjs), one at a time (--runs cycles) and
//     --concurrency at once (--runs / concurrency rounds), p50/p99.
//   - reclaim: --reclaim (100) PVs bound, their claims recorded by the
//     agent, then all released at once in the fake server: time until as
//     many new PVs exist and every released one is gone (crypto-erase,
//     new generation, old PV deleted, new PV created).
//   - warm restart, --restarts (2) times: the agent stopped (its SIGTERM
//     shutdown) and a new agent process started on the same slots and PVs:
//     time to ready (reconcile only), and that it created no PV.
//
//   node bench/agent.mjs [--json] [--slots=N] [--filesystems=N] [--reclaim=N] [--runs=N]
//                        [--concurrency=N] [--idle=SECONDS] [--restarts=N]
//
// Goals (issue 9; reported, never asserted): RSS under 150 MiB in the steady
// state, cold start under 60 s, publish p99 under 50 ms with 1000 volumes
// known.
//
// The agent's process has the agent's thread pool (UV_THREADPOOL_SIZE=64,
// lib/volume/thread-pool.ts) and --expose-gc; this process needs neither.
// The agent logs at info level, synchronously, to a file in the scratch
// directory (as it writes to stderr in a pod); its warnings and errors are
// counted.
//
// Needs root (loop mounts, bind mounts, keyrings). Runs the built package
// (dist/; bench/run.mjs builds first). Everything lives in temp dirs and is
// unmounted and deleted on exit, on an error or on a signal: the helper
// processes are killed, the slots' bind mounts are detached with their
// hostDir's filesystem (a lazy unmount), and the keys go with their
// filesystems.
import { randomFillSync, randomUUID } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { cpus, loadavg, release } from 'node:os';
import { join } from 'node:path';
import { bindMany } from './lib/bind-mounts.mjs';
import { ensurePackageBuilt } from './lib/build.mjs';
import { startContentionMeter } from './lib/measure/contention.mjs';
import { startAgentProcess } from './lib/standins/agent-process.mjs';
import { startFakeApiServerProcess } from './lib/standins/fake-apiserver-process.mjs';
import { startPhaseContentionMeter } from './lib/measure/phase-contention.mjs';
import { startRetryingKubelet } from './lib/standins/kubelet-retrying.mjs';
import { PreconditionError, requireCommand, requireExt4Encryption, requireRoot } from './lib/preflight.mjs';
import { makeScratchExt4 } from './lib/scratch-fs.mjs';
import { summarize } from './lib/measure/stats.mjs';
import { formatTable } from './lib/measure/table.mjs';
import { rateLimitedSeconds, UPSTREAM_DISCOVERY_PERIOD_MS, upstreamDiscoveryPass } from './lib/standins/upstream-discovery.mjs';

const GOAL_RSS_MIB = 150;
const GOAL_COLD_START_MS = 60_000;
const GOAL_PUBLISH_P99_MS = 50;
const BUSY_MACHINE_PERCENT = 10;
const DEFAULTS = { slots: 1000, filesystems: 4, reclaim: 100, runs: 200, concurrency: 8, idle: 12, restarts: 2 };
const NODE = 'bench-node';
const CLASS = 'local-encrypted';
const TAINT = 'sig-storage-local-static-provisioner/agent-not-ready';
const DISCOVERY_PERIOD_MS = 10_000; // `fscrypt-local run`'s default, as upstream's
const WAIT_TIMEOUT_MS = 15 * 60_000;
// Settled: the agent's process used under 5% of a CPU for 2 s (its own queued work is done).
const QUIET_WINDOW_MS = 2000;
const QUIET_CPU_PERCENT = 5;
const PV_EVENT_PERIOD_MS = 1000;
const MIB = 1048576;

const USAGE = 'usage: node bench/agent.mjs [--json] [--slots=N] [--filesystems=N] [--reclaim=N] [--runs=N] [--concurrency=N] [--idle=SECONDS] [--restarts=N]';

function parseArgs(argv) {
  const options = { json: false, ...DEFAULTS };
  const integer = { '--slots': 'slots', '--filesystems': 'filesystems', '--reclaim': 'reclaim', '--runs': 'runs', '--concurrency': 'concurrency', '--idle': 'idle', '--restarts': 'restarts' };
  for (const arg of argv) {
    const [name, value] = arg.split('=', 2);
    if (arg === '--json') options.json = true;
    else if (name in integer && /^\d+$/.test(value ?? '') && (Number(value) > 0 || name === '--restarts')) options[integer[name]] = Number(value);
    else throw new PreconditionError(`unknown or bad argument ${arg}\n${USAGE}`);
  }
  if (options.concurrency + options.reclaim > options.slots) {
    throw new PreconditionError(`--concurrency (${options.concurrency}) + --reclaim (${options.reclaim}) slots are bound, more than --slots (${options.slots})\n${USAGE}`);
  }
  if (options.filesystems > options.slots) throw new PreconditionError(`--filesystems (${options.filesystems}) is more than --slots (${options.slots})\n${USAGE}`);
  return options;
}

const log = (message) => process.stderr.write(`bench/agent: ${message}\n`);
const now = () => Number(process.hrtime.bigint());
const round = (x, digits = 2) => Math.round(x * 10 ** digits) / 10 ** digits;
const msSince = (start) => round((now() - start) / 1e6, 1);
const mib = (bytes) => round(bytes / MIB, 1);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Summary of nanosecond samples in ms: { n, p50, p99, mean, max }. */
function inMs(samplesNs) {
  const s = summarize(samplesNs);
  return { n: s.n, p50: round(s.median / 1000, 3), p99: round(s.p99 / 1000, 3), mean: round(s.mean / 1000, 3), max: round(Math.max(...samplesNs) / 1e6, 3) };
}

/** Polls `check` every `everyMs` until it holds; returns the time (hrtime ns) it first did. */
async function until(what, check, { everyMs = 10, timeoutMs = WAIT_TIMEOUT_MS } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return now();
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(everyMs);
  }
}

function httpGet(host, port, path) {
  return new Promise((resolve, reject) => {
    const req = request({ host, port, path, method: 'GET' }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** The agent's warnings and errors in its log file, by message. */
function logProblems(file) {
  const counts = new Map();
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (line === '') continue;
    let entry;
    try {
      entry = JSON.parse(line);
    } catch {
      continue;
    }
    if (entry.level !== 'warn' && entry.level !== 'error') continue;
    const key = `${entry.level}: ${entry.msg}`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return [...counts].sort((a, b) => b[1] - a[1]).map(([message, count]) => ({ message, count }));
}

/** A metric's samples from a Prometheus text page: { 'labels': value }. */
function metricSamples(text, name) {
  const samples = {};
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const match = /^(\S+?)(\{[^}]*\})?\s+(\S+)$/.exec(line);
    if (match && match[1] === name) samples[match[2] ?? ''] = Number(match[3]);
  }
  return samples;
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  requireRoot('bench/agent');
  requireExt4Encryption();
  requireCommand('mount', 'mount');
  ensurePackageBuilt();
  const { SERVICE_THREADPOOL_SIZE } = await import('../dist/volume/thread-pool.js');
  const { parseVolumeHandle } = await import('../dist/agent/csi/index.js');
  const { slotStatus } = await import('../dist/volume/index.js');
  const { CoreV1Api, StorageV1Api } = await import('@kubernetes/client-node');

  const meter = startContentionMeter();
  const loadBefore = loadavg();
  const { slots, filesystems } = options;
  const perFilesystem = Math.ceil(slots / filesystems);
  const lazyOff = ['-E', 'lazy_itable_init=0,lazy_journal_init=0']; // no ext4lazyinit writing while the agent is measured

  // Scratch filesystems first, the hostDir's last: cleanup runs last-registered first, so the
  // hostDir's lazy unmount detaches every slot's bind mount before the slots' filesystems go.
  log(`making ${filesystems} slot filesystems, a kubelet filesystem and a hostDir filesystem`);
  let start = now();
  const kubeletFs = makeScratchExt4({ sizeMiB: 64, mkfsArgs: lazyOff });
  const slotFss = Array.from({ length: filesystems }, () => makeScratchExt4({ sizeMiB: 256, mkfsArgs: lazyOff }));
  const hostFs = makeScratchExt4({ sizeMiB: 16, mkfsArgs: lazyOff });
  const mkfsMs = msSince(start);
  const hostDir = join(hostFs.mountpoint, 'disks');
  mkdirSync(hostDir);
  const pairs = [];
  for (let i = 0; i < slots; i++) {
    const fs = Math.floor(i / perFilesystem);
    const name = `d${fs}-${String(i % perFilesystem).padStart(4, '0')}`;
    pairs.push({ source: join(slotFss[fs].mountpoint, 'slots', name), target: join(hostDir, name) });
  }
  log(`bind-mounting ${slots} slot directories into ${hostDir}`);
  start = now();
  await bindMany(pairs);
  const bindMs = msSince(start);
  log(`${slots} bind mounts in ${round(bindMs / 1000, 1)} s`);

  const work = kubeletFs.dir;
  const kek = join(work, 'kek');
  writeFileSync(kek, randomFillSync(Buffer.alloc(32)), { mode: 0o600 });
  const configDir = join(work, 'config');
  mkdirSync(configDir);
  writeFileSync(join(configDir, 'storageClassMap'), `${CLASS}:\n  hostDir: ${hostDir}\n  mountDir: ${hostDir}\n  fscrypt:\n    keySource: file:${kek}\n`);
  writeFileSync(join(configDir, 'removeNodeNotReadyTaint'), 'true\n');
  const kubeletDir = join(kubeletFs.mountpoint, 'kubelet');
  mkdirSync(join(kubeletDir, 'pods'), { recursive: true });
  const socket = join(work, 'csi.sock');
  const logFile = join(work, 'agent.log');
  const storageClass = {
    apiVersion: 'storage.k8s.io/v1',
    kind: 'StorageClass',
    metadata: { name: CLASS },
    provisioner: 'kubernetes.io/no-provisioner',
    volumeBindingMode: 'WaitForFirstConsumer',
    reclaimPolicy: 'Delete',
  };
  const nodeObject = {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name: NODE, uid: randomUUID(), labels: { 'kubernetes.io/hostname': NODE } },
    spec: { taints: [{ key: TAINT, effect: 'NoSchedule' }] },
  };

  // The anchor: upstream's serial pass, on a fake API server of its own (empty, as the agent's is at its cold start).
  log(`anchor: upstream's serial discovery pass over the ${slots} slots`);
  const anchorApi = await startFakeApiServerProcess();
  await anchorApi.call('put', { resource: 'storageclasses', obj: storageClass });
  await anchorApi.call('put', { resource: 'nodes', obj: nodeObject });
  const anchorKc = anchorApi.kubeConfig();
  const anchorCore = anchorKc.makeApiClient(CoreV1Api);
  await anchorCore.listPersistentVolume(); // the informer's list, which upstream waits for before its first pass
  await anchorApi.call('mark');
  const pass = await upstreamDiscoveryPass({
    core: anchorCore,
    storage: anchorKc.makeApiClient(StorageV1Api),
    nodeName: NODE,
    nodeUid: nodeObject.metadata.uid,
    className: CLASS,
    hostDir,
    mountDir: hostDir,
  });
  const anchorStats = await anchorApi.call('stats');
  await anchorApi.close();
  if (pass.created !== slots) throw new Error(`the upstream model created ${pass.created} PVs for ${slots} slots (skipped: ${pass.skipped.slice(0, 3).join('; ')})`);
  const anchor = {
    passMs: round(pass.ms, 0),
    perCreateMs: round(pass.ms / pass.created, 2),
    withPeriodMs: round(pass.ms + UPSTREAM_DISCOVERY_PERIOD_MS, 0),
    requests: pass.requests,
    rateLimitedMs: round(Math.max(pass.ms, rateLimitedSeconds(pass.requests) * 1000), 0),
    fakeApiCpuMs: anchorStats.cpuMs,
  };
  log(`anchor pass: ${round(pass.ms / 1000, 2)} s for ${pass.created} PVs`);

  const api = await startFakeApiServerProcess();
  await api.call('put', { resource: 'storageclasses', obj: storageClass });
  await api.call('put', { resource: 'nodes', obj: nodeObject });
  const agentOptions = {
    configDir,
    nodeName: NODE,
    namespace: 'default',
    csiEndpoint: `unix://${socket}`,
    listenAddress: '127.0.0.1:0',
    kubeletDir,
    discoveryPeriodMs: DISCOVERY_PERIOD_MS,
    apiServer: api.url,
    logFile,
  };
  const memory = async (gc) => {
    const m = await agent.call('memory', { gc });
    return { rssMiB: mib(m.rss), heapUsedMiB: mib(m.heapUsed), heapTotalMiB: mib(m.heapTotal), externalMiB: mib(m.external), arrayBuffersMiB: mib(m.arrayBuffers) };
  };

  /** Waits until the agent has done the work it queued for itself; { at (hrtime ns), cpuMs }. */
  const settle = async () => {
    const quiet = await agent.call('waitQuiet', { windowMs: QUIET_WINDOW_MS, maxCpuPercent: QUIET_CPU_PERCENT, timeoutMs: WAIT_TIMEOUT_MS });
    return { at: BigInt(quiet.at) - BigInt(QUIET_WINDOW_MS * 1e6), cpuMs: quiet.cpuMs };
  };
  const eventsDropped = async (health) => {
    const samples = metricSamples((await httpGet(health.host, health.port, '/metrics')).body, 'fscrypt_local_events_dropped_total');
    return Object.values(samples).reduce((a, b) => a + b, 0);
  };

  let agent;
  let kubelet;
  /**
   * Forks a new agent process (it becomes `agent`), runs runAgent() in it
   * and waits until it is ready. With `measure`, also its RSS after a GC
   * before runAgent() (the baseline), its peak RSS, CPU and event-loop delay
   * from runAgent() to ready. Times in ms from runAgent(), startedAt in hrtime ns.
   */
  const launch = async ({ measure = false } = {}) => {
    agent = await startAgentProcess(agentOptions, { threadPoolSize: SERVICE_THREADPOOL_SIZE });
    const baseline = measure ? await memory(true) : undefined;
    const cpuBefore = (await agent.call('usage')).cpuMs;
    const phaseLoad = startPhaseContentionMeter([agent.pid, api.pid]);
    if (measure) {
      await agent.call('rssStart');
      await agent.call('probeStart');
    }
    const started = await agent.call('start');
    const { at } = await agent.call('waitReady', { timeoutMs: WAIT_TIMEOUT_MS });
    const load = phaseLoad();
    const waits = measure ? await agent.call('probeStop') : undefined;
    const rssPeak = measure ? await agent.call('rssStop') : undefined;
    const cpuAfter = (await agent.call('usage')).cpuMs;
    const startedAt = BigInt(started.startedAt);
    const sinceStart = (hrtime) => round(Number(BigInt(hrtime) - startedAt) / 1e6, 0);
    return {
      baseline,
      startedAt,
      returnedMs: sinceStart(started.returnedAt),
      readyMs: sinceStart(at),
      fromForkMs: round(Number(BigInt(at) - agent.forkedAt) / 1e6, 0),
      importMs: round(agent.ready.importMs, 0),
      health: started.health,
      waits,
      rssPeakMiB: rssPeak === undefined ? undefined : mib(rssPeak),
      agentCpuMs: round(cpuAfter - cpuBefore, 0),
      load,
    };
  };
  const report = { parameters: { ...options, slotsPerFilesystem: perFilesystem, discoveryPeriodMs: DISCOVERY_PERIOD_MS }, setup: { mkfsMs, bindMs }, anchor };
  delete report.parameters.json;
  try {
    // Cold start: a new agent process on slots it has never seen.
    log(`cold start: runAgent() on ${slots} new slots, in a new process`);
    await api.call('mark');
    const allPvs = api.call('waitFor', { live: slots, timeoutMs: WAIT_TIMEOUT_MS });
    allPvs.catch(() => undefined); // awaited below; a timeout must not end the process as an unhandled rejection first
    const cold = await launch({ measure: true });
    const pvsAt = BigInt((await allPvs).at);
    const readyz = await httpGet(cold.health.host, cold.health.port, '/readyz');
    if (readyz.status !== 200) throw new Error(`/readyz answered ${readyz.status} although the agent is ready: ${readyz.body}`);
    const coldApi = await api.call('stats');
    report.baseline = cold.baseline;
    report.coldStart = {
      runAgentReturnedMs: cold.returnedMs,
      allPvsMs: round(Number(pvsAt - cold.startedAt) / 1e6, 0),
      readyMs: cold.readyMs,
      readyFromForkMs: cold.fromForkMs,
      importMs: cold.importMs,
      readyzStatus: readyz.status,
      rssPeakMiB: cold.rssPeakMiB,
      agentCpuMs: cold.agentCpuMs,
      load: cold.load,
      eventLoopDelay: cold.waits.eventLoopDelay,
      apiRequests: coldApi.requests,
      fakeApiCpuMs: coldApi.cpuMs,
    };
    let records = await agent.call('status');
    const readySlots = records.filter((s) => s.condition === 'ready').length;
    if (readySlots !== slots) throw new Error(`${readySlots} of ${slots} slots are ready after the cold start: ${JSON.stringify(records.find((s) => s.condition !== 'ready'))}`);
    log(`cold start: every PV in ${round(report.coldStart.allPvsMs / 1000, 2)} s, ready in ${round(report.coldStart.readyMs / 1000, 2)} s; waiting for the agent to settle`);
    const coldSettled = await settle();
    report.coldStart.settledMs = round(Number(coldSettled.at - cold.startedAt) / 1e6, 0);
    report.coldStart.settleCpuMs = round(coldSettled.cpuMs, 0);
    report.coldStart.eventsDropped = await eventsDropped(cold.health);
    log(`cold start: settled ${round((report.coldStart.settledMs - report.coldStart.readyMs) / 1000, 2)} s after ready`);

    // Steady state.
    log(`steady state: ${options.idle} s idle with ${slots} volumes known`);
    await memory(true);
    await agent.call('rssStart');
    await agent.call('probeStart');
    await api.call('mark');
    const idleLoad = startPhaseContentionMeter([agent.pid, api.pid]);
    await sleep(options.idle * 1000);
    const idleContention = idleLoad();
    const idleWaits = await agent.call('probeStop');
    const idlePeak = mib(await agent.call('rssStop'));
    const idleApi = await api.call('stats');
    const steady = await memory(true);
    report.steady = {
      idleSeconds: options.idle,
      ...steady,
      rssAfterGcMiB: steady.rssMiB,
      rssPeakMiB: idlePeak,
      overBaselineMiB: round(steady.rssMiB - cold.baseline.rssMiB, 1),
      eventLoopDelay: idleWaits.eventLoopDelay,
      poolRoundTrip: idleWaits.poolRoundTrip,
      load: idleContention,
      apiRequests: idleApi.requests,
    };
    delete report.steady.rssMiB;
    log(`steady state: RSS ${report.steady.rssAfterGcMiB} MiB after GC (peak ${idlePeak} MiB), event loop p99 ${idleWaits.eventLoopDelay.p99} ms`);

    // Publish / unpublish, from a kubelet stand-in in this process (a worker thread), as kubelet is another process.
    const rootOf = (handle) => records.find((r) => r.descriptor === parseVolumeHandle(handle)?.slot)?.root;
    const pvs = (await api.call('pvs')).sort((a, b) => a.name.localeCompare(b.name));
    if (pvs.length !== slots) throw new Error(`the fake API server holds ${pvs.length} PVs for ${slots} slots`);
    const bindAndWait = async (chosen) => {
      await api.call('bind', { names: chosen.map((pv) => pv.name), namespace: 'default' });
      const roots = chosen.map((pv) => rootOf(pv.handle));
      await until('the agent to record the claims', async () => (await Promise.all(roots.map((root) => slotStatus(root)))).every((s) => s.volume?.claimed === true), { everyMs: 100 });
    };
    const published = pvs.slice(0, options.concurrency);
    log(`publish: ${published.length} PVs bound; ${options.runs} publish/unpublish cycles one at a time, rounds of ${options.concurrency} at once, and one at a time with PV events`);
    await bindAndWait(published);
    await settle();
    const volumes = published.map((pv) => {
      const parent = join(kubeletDir, 'pods', randomUUID(), 'volumes', 'kubernetes.io~csi', pv.name);
      mkdirSync(parent, { recursive: true, mode: 0o750 });
      return { volumeId: pv.handle, target: join(parent, 'mount') };
    });
    kubelet = startRetryingKubelet(socket);
    const capability = { mount: { fs_type: '', mount_flags: [] }, access_mode: { mode: 'SINGLE_NODE_WRITER' } };
    const publishCall = ({ volumeId, target }) => ({ method: 'NodePublishVolume', request: { volume_id: volumeId, target_path: target, volume_capability: capability, readonly: false } });
    const unpublishCall = ({ volumeId, target }) => ({ method: 'NodeUnpublishVolume', request: { volume_id: volumeId, target_path: target } });
    const allAtOnce = () => [volumes.map(publishCall), volumes.map(unpublishCall)];
    /** Runs the batches with the agent's wait probe on; per method: latencies (first attempt to success), retried calls, failed attempts' errors. */
    const measure = async (batches) => {
      await agent.call('probeStart');
      const phaseLoad = startPhaseContentionMeter([agent.pid, api.pid]);
      const results = await kubelet.run(batches);
      const load = phaseLoad();
      const waits = await agent.call('probeStop');
      const byMethod = {};
      batches.forEach((batch, b) =>
        batch.forEach((call, c) => {
          const r = results[b][c];
          const m = (byMethod[call.method] ??= { ns: [], retried: 0, errors: [] });
          m.ns.push(r.end - r.start);
          if (r.attempts > 1) m.retried++;
          m.errors.push(...r.errors);
        }),
      );
      return { byMethod, waits, load };
    };
    const cyclesOf = (n) => {
      const cycles = [];
      for (let k = 0; k < n; k++) cycles.push([publishCall(volumes[k % volumes.length])], [unpublishCall(volumes[k % volumes.length])]);
      return cycles;
    };
    await measure(allAtOnce()); // warm-up: every volume published and unpublished once
    const configurations = {};
    configurations.sequential = await measure(cyclesOf(options.runs));
    const rounds = Math.max(1, Math.round(options.runs / options.concurrency));
    configurations.concurrent = await measure(Array.from({ length: rounds }, allAtOnce).flat());
    // The same cycles while the cluster changes PVs: another PV of this node is modified every
    // second (an annotation), so the agent reconciles that slot, and then runs its census of
    // every slot, as it does after any slot's work.
    const bystanders = pvs.slice(options.concurrency, pvs.length - options.reclaim);
    let touched = 0;
    const toucher = setInterval(() => void api.call('touch', { name: bystanders[touched++ % bystanders.length].name }).catch(() => undefined), PV_EVENT_PERIOD_MS);
    try {
      configurations.sequentialWithPvEvents = await measure(cyclesOf(options.runs));
    } finally {
      clearInterval(toucher);
    }
    await kubelet.close();
    kubelet = undefined;
    report.publish = {
      volumes: volumes.length,
      rounds,
      pvEvents: touched,
      ...Object.fromEntries(
        Object.entries(configurations).map(([name, { byMethod, waits, load }]) => [
          name,
          {
            ...Object.fromEntries(
              Object.entries(byMethod).map(([method, m]) => [method, { ...inMs(m.ns), retried: m.retried, failedAttempts: m.errors.length, errors: [...new Set(m.errors.map((e) => e.replace(/[0-9a-f]{8}-[0-9a-f-]{27}|v1\.[0-9a-z.]+|fscrypt-[0-9a-f]+-\d+/g, '…')))].slice(0, 3) }]),
            ),
            eventLoopDelay: waits.eventLoopDelay,
            poolRoundTrip: waits.poolRoundTrip,
            load,
          },
        ]),
      ),
    };
    await settle();
    report.publish.eventsDropped = (await eventsDropped(cold.health)) - report.coldStart.eventsDropped;
    const pub = report.publish;
    log(
      `publish p50/p99: one at a time ${pub.sequential.NodePublishVolume.p50}/${pub.sequential.NodePublishVolume.p99} ms, ${options.concurrency} at once ${pub.concurrent.NodePublishVolume.p50}/${pub.concurrent.NodePublishVolume.p99} ms, ` +
        `with PV events ${pub.sequentialWithPvEvents.NodePublishVolume.p50}/${pub.sequentialWithPvEvents.NodePublishVolume.p99} ms`,
    );

    // Reclaim.
    const reclaimed = pvs.slice(pvs.length - options.reclaim);
    log(`reclaim: ${reclaimed.length} PVs bound, then all released at once`);
    await bindAndWait(reclaimed);
    await settle();
    const names = reclaimed.map((pv) => pv.name);
    const before = pvs.map((pv) => pv.name);
    await api.call('mark');
    const firstNew = api.call('waitFor', { live: 1, excluding: before, timeoutMs: WAIT_TIMEOUT_MS });
    const allNew = api.call('waitFor', { live: reclaimed.length, excluding: before, gone: names, timeoutMs: WAIT_TIMEOUT_MS });
    for (const waiting of [firstNew, allNew]) waiting.catch(() => undefined); // awaited below
    await agent.call('rssStart');
    await agent.call('probeStart');
    const reclaimLoad = startPhaseContentionMeter([agent.pid, api.pid]);
    const releaseStart = now();
    await api.call('release', { names });
    const allNewAt = BigInt((await allNew).at);
    const reclaimContention = reclaimLoad();
    const firstNewAt = BigInt((await firstNew).at);
    const reclaimWaits = await agent.call('probeStop');
    const reclaimPeak = mib(await agent.call('rssStop'));
    await agent.call('trashIdle');
    const trashIdleMs = msSince(releaseStart);
    const reclaimSettled = await settle();
    const reclaimApi = await api.call('stats');
    const after = await api.call('pvs');
    const liveAfter = after.filter((pv) => !pv.deleting);
    if (liveAfter.length !== slots) throw new Error(`${liveAfter.length} PVs exist after the reclaim, for ${slots} slots`);
    report.reclaim = {
      pvs: reclaimed.length,
      allMs: round(Number(allNewAt - BigInt(releaseStart)) / 1e6, 0),
      firstNewPvMs: round(Number(firstNewAt - BigInt(releaseStart)) / 1e6, 0),
      trashIdleMs: round(trashIdleMs, 0),
      settledMs: round(Number(reclaimSettled.at - BigInt(releaseStart)) / 1e6, 0),
      rssPeakMiB: reclaimPeak,
      load: reclaimContention,
      eventLoopDelay: reclaimWaits.eventLoopDelay,
      apiRequests: reclaimApi.requests,
    };
    log(`reclaim: ${reclaimed.length} new PVs and the old ones gone in ${round(report.reclaim.allMs / 1000, 2)} s`);

    const metricsPage = (await httpGet(cold.health.host, cold.health.port, '/metrics')).body;
    report.agentMetrics = {
      eventsDropped: metricSamples(metricsPage, 'fscrypt_local_events_dropped_total'),
      errors: metricSamples(metricsPage, 'fscrypt_local_errors_total'),
      apiErrors: metricSamples(metricsPage, 'fscrypt_local_api_errors_total'),
    };
    report.firstProcess = { maxRssMiB: mib((await agent.call('usage')).maxRssBytes) };

    // Warm restarts: the agent stopped (SIGTERM's clean shutdown), and a new process started on the same slots and PVs.
    report.warmRestarts = [];
    for (let r = 0; r < options.restarts; r++) {
      log(`warm restart ${r + 1}/${options.restarts}: stop, then a new process runs runAgent() on the same slots`);
      const { ms: stopMs } = await agent.call('stop');
      await agent.close();
      agent = undefined;
      await api.call('mark');
      const warm = await launch();
      const warmSettled = await settle();
      const warmApi = await api.call('stats');
      const creates = warmApi.requests['create persistentvolumes'] ?? 0;
      if (creates > 0) throw new Error(`the restarted agent created ${creates} PVs on slots that had theirs`);
      records = await agent.call('status');
      const ready = records.filter((s) => s.condition === 'ready').length;
      if (ready !== slots) throw new Error(`${ready} of ${slots} slots are ready after a warm restart`);
      report.warmRestarts.push({
        stopMs: round(stopMs, 0),
        readyMs: warm.readyMs,
        settledMs: round(Number(warmSettled.at - warm.startedAt) / 1e6, 0),
        readyFromForkMs: warm.fromForkMs,
        runAgentReturnedMs: warm.returnedMs,
        agentCpuMs: warm.agentCpuMs,
        load: warm.load,
        importMs: warm.importMs,
        pvCreates: creates,
        apiRequests: warmApi.requests,
      });
      log(`warm restart: ready in ${round(warm.readyMs / 1000, 2)} s`);
    }
    report.afterRestarts = options.restarts > 0 ? { rssAfterGcMiB: (await memory(true)).rssMiB } : undefined;
  } finally {
    await kubelet?.close();
    if (agent !== undefined) {
      await agent.call('stop').catch(() => undefined);
      await agent.close();
    }
    const apiStats = await api.call('stats').catch(() => undefined);
    await api.close();
    if (apiStats && (apiStats.invalidWrites.length > 0 || apiStats.internalErrors.length > 0)) {
      log(`the fake API server refused ${apiStats.invalidWrites.length} writes and failed ${apiStats.internalErrors.length} times: ${[...apiStats.invalidWrites, ...apiStats.internalErrors].slice(0, 3).join('; ')}`);
    }
    report.fakeApiServer = apiStats && { rssMiB: apiStats.rssMiB, invalidWrites: apiStats.invalidWrites.length, internalErrors: apiStats.internalErrors.length };
  }
  report.agentLogProblems = logProblems(logFile);
  report.threadPool = SERVICE_THREADPOOL_SIZE;
  report.contention = meter();
  report.loadBefore = loadBefore;
  report.loadAfter = loadavg();

  const document = buildReport(report);
  if (options.json) process.stdout.write(`${JSON.stringify(document, null, 2)}\n`);
  else printReport(document);
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

function buildReport(m) {
  const cold = m.coldStart;
  const coldMs = Math.max(cold.allPvsMs, cold.readyMs);
  const warmReady = m.warmRestarts.length > 0 ? median(m.warmRestarts.map((w) => w.readyMs)) : null;
  const ratio = (a, b) => (a === null || !b ? null : round(a / b, 2));
  const ratios = {
    coldStartVsAnchorPass: ratio(cold.allPvsMs, m.anchor.passMs),
    coldStartVsAnchorWithPeriod: ratio(cold.allPvsMs, m.anchor.withPeriodMs),
    coldStartVsAnchorRateLimited: ratio(cold.allPvsMs, m.anchor.rateLimitedMs),
    warmRestartVsAnchorPass: ratio(warmReady, m.anchor.passMs),
  };
  const publishP99 = m.publish.sequential.NodePublishVolume.p99;
  const concurrentP99 = m.publish.concurrent.NodePublishVolume.p99;
  const eventsP99 = m.publish.sequentialWithPvEvents.NodePublishVolume.p99;
  const slots = m.parameters.slots;
  const goals = [
    {
      goal: `RSS under ${GOAL_RSS_MIB} MiB in the steady state (${slots} volumes known)`,
      met: m.steady.rssPeakMiB < GOAL_RSS_MIB,
      value: `peak ${m.steady.rssPeakMiB} MiB while idle, ${m.steady.rssAfterGcMiB} MiB after a full GC (the process before runAgent(), modules loaded: ${m.baseline.rssMiB} MiB); the first process's peak over cold start, publishes and reclaim ${m.firstProcess.maxRssMiB} MiB`,
    },
    {
      goal: `cold start under ${GOAL_COLD_START_MS / 1000} s (${slots} slots initialised, prepared, PVs created, ready)`,
      met: coldMs < GOAL_COLD_START_MS,
      value: `${round(coldMs / 1000, 2)} s (every PV ${round(cold.allPvsMs / 1000, 2)} s, ready ${round(cold.readyMs / 1000, 2)} s, settled ${round(cold.settledMs / 1000, 2)} s); warm restart ${warmReady === null ? '-' : `${round(warmReady / 1000, 2)} s`}`,
    },
    {
      goal: `publish p99 under ${GOAL_PUBLISH_P99_MS} ms with ${slots} volumes known (one at a time)`,
      met: publishP99 < GOAL_PUBLISH_P99_MS,
      value:
        `${publishP99} ms (p50 ${m.publish.sequential.NodePublishVolume.p50} ms); ${m.parameters.concurrency} at once: p99 ${concurrentP99} ms; ` +
        `one at a time with PV events: p99 ${eventsP99} ms, ${m.publish.sequentialWithPvEvents.NodeUnpublishVolume.retried} unpublishes retried`,
    },
  ];
  return {
    benchmark: 'agent',
    unit: 'ms',
    machine: { kernel: release(), cpus: cpus().length, cpu: cpus()[0]?.model ?? 'unknown', node: process.version, threadPool: m.threadPool },
    load: {
      otherCpuPercent: m.contention.otherCpuPercent,
      kernelCpuPercent: m.contention.kernelCpuPercent,
      stealPercent: m.contention.stealPercent,
      loadavgBefore: m.loadBefore.map((x) => round(x)),
      loadavgAfter: m.loadAfter.map((x) => round(x)),
    },
    parameters: m.parameters,
    setup: m.setup,
    anchor: m.anchor,
    baseline: m.baseline,
    coldStart: m.coldStart,
    steady: m.steady,
    publish: m.publish,
    reclaim: m.reclaim,
    warmRestarts: m.warmRestarts,
    afterRestarts: m.afterRestarts,
    firstProcess: m.firstProcess,
    ratios,
    agentMetrics: m.agentMetrics,
    agentLogProblems: m.agentLogProblems,
    fakeApiServer: m.fakeApiServer,
    goals,
  };
}

const seconds = (ms) => (ms === null || ms === undefined ? '-' : round(ms / 1000, 2));
const times = (x) => (x === null ? '-' : `${x}x`);

function requestsLine(requests) {
  return Object.entries(requests)
    .sort((a, b) => b[1] - a[1])
    .map(([what, n]) => `${what} ${n}`)
    .join(', ');
}

function printReport(r) {
  const p = r.parameters;
  const lines = [];
  lines.push(`bench/agent  Linux ${r.machine.kernel}, ${r.machine.cpus} CPUs (${r.machine.cpu}), Node ${r.machine.node}, UV_THREADPOOL_SIZE ${r.machine.threadPool}`);
  lines.push(
    `The node agent (runAgent, production timings: ${p.discoveryPeriodMs / 1000} s discovery period) in a process of its own against the fake API server in another; ` +
      `${p.slots} slots (bind mounts of directories of ${p.filesystems} loop ext4 -O encrypt filesystems, ${p.slotsPerFilesystem} each) in one class, file key source.`,
  );
  lines.push(`Setup: mkfs ${seconds(r.setup.mkfsMs)} s, ${p.slots} bind mounts ${seconds(r.setup.bindMs)} s.`);
  const l = r.load;
  lines.push(
    `Load: other processes used ${l.otherCpuPercent}% of the CPUs over the whole run (each phase's own share is in its table), the hypervisor took ${l.stealPercent}% (steal), kernel threads ${l.kernelCpuPercent}%; ` +
      `loadavg ${l.loadavgBefore.join(' ')} before, ${l.loadavgAfter.join(' ')} after.`,
  );
  if (l.otherCpuPercent + l.stealPercent > BUSY_MACHINE_PERCENT) lines.push('WARNING: the machine was busy; every time is inflated, p99 most. Rerun when it is quiet.');
  lines.push('');

  const c = r.coldStart;
  const w = r.warmRestarts;
  lines.push(
    formatTable(
      ['start-up (s)', 'every PV', 'ready', 'settled', 'ready from fork', 'runAgent returned', 'event loop p99 (ms)', 'event loop max (ms)', 'RSS peak (MiB)', 'other CPU %'],
      [
        [`cold start (${p.slots} slots: init, prepare, PV)`, seconds(c.allPvsMs), seconds(c.readyMs), seconds(c.settledMs), seconds(c.readyFromForkMs), seconds(c.runAgentReturnedMs), c.eventLoopDelay.p99, c.eventLoopDelay.max, c.rssPeakMiB, c.load.otherCpuPercent],
        ...w.map((x, i) => [`warm restart ${i + 1} (reconcile only)`, '-', seconds(x.readyMs), seconds(x.settledMs), seconds(x.readyFromForkMs), seconds(x.runAgentReturnedMs), '-', '-', '-', x.load.otherCpuPercent]),
        [`upstream model: one serial pass`, seconds(r.anchor.passMs), '-', '-', '-', '-', '-', '-', '-', '-'],
        [`upstream model + its ${UPSTREAM_DISCOVERY_PERIOD_MS / 1000} s discovery period`, seconds(r.anchor.withPeriodMs), '-', '-', '-', '-', '-', '-', '-', '-'],
        [`upstream model at client-go's default 5 QPS (computed)`, seconds(r.anchor.rateLimitedMs), '-', '-', '-', '-', '-', '-', '-', '-'],
      ],
    ),
  );
  lines.push(
    `Cold start: the agent used ${seconds(c.agentCpuMs)} s of CPU up to ready and ${seconds(c.settleCpuMs)} s more until settled (its own reconciles after its PVs' events, and censuses), ` +
      `the fake API server ${seconds(c.fakeApiCpuMs)} s; the agent's modules loaded in ${seconds(c.importMs)} s. ` +
      `Warm restarts: the old agent stopped in ${w.map((x) => `${seconds(x.stopMs)} s`).join(', ') || '-'}; the new one used ${w.map((x) => `${seconds(x.agentCpuMs)} s`).join(', ') || '-'} of CPU up to ready.`,
  );
  lines.push(`Cold start API requests: ${requestsLine(c.apiRequests)}. Upstream model: ${r.anchor.requests} requests, ${r.anchor.perCreateMs} ms per PV create.`);
  lines.push(
    `Agent cold start / upstream pass: ${times(r.ratios.coldStartVsAnchorPass)}; / upstream pass + period: ${times(r.ratios.coldStartVsAnchorWithPeriod)}; ` +
      `/ upstream at 5 QPS: ${times(r.ratios.coldStartVsAnchorRateLimited)}. Warm restart / upstream pass: ${times(r.ratios.warmRestartVsAnchorPass)}.`,
  );
  lines.push('');

  const s = r.steady;
  lines.push(`Steady state (${s.idleSeconds} s idle, ${p.slots} volumes known):`);
  lines.push(
    formatTable(
      ['memory (MiB)', 'value'],
      [
        ['RSS after a full GC', s.rssAfterGcMiB],
        ['RSS peak while idle (sampled every 50 ms)', s.rssPeakMiB],
        ['heap used / total', `${s.heapUsedMiB} / ${s.heapTotalMiB}`],
        ['external (of which array buffers)', `${s.externalMiB} (${s.arrayBuffersMiB})`],
        ['the process before runAgent(), modules loaded (after a GC)', r.baseline.rssMiB],
        ['a restarted agent, ready (after a GC)', r.afterRestarts?.rssAfterGcMiB],
        ['the first process\'s peak: cold start to reclaim (maxrss)', r.firstProcess.maxRssMiB],
      ],
    ),
  );
  lines.push(
    `Event loop delay while idle: p50 ${s.eventLoopDelay.p50} ms, p99 ${s.eventLoopDelay.p99} ms, max ${s.eventLoopDelay.max} ms; thread-pool round trip p99 ${s.poolRoundTrip.p99} ms ` +
      `(other processes used ${s.load.otherCpuPercent}% of the CPUs meanwhile).`,
  );
  lines.push(`API requests while idle: ${requestsLine(s.apiRequests) || 'none'}.`);
  lines.push('');

  const pub = r.publish;
  const columns = [
    ['1 at a time', pub.sequential],
    [`${p.concurrency} at once`, pub.concurrent],
    [`1 at a time, PV events`, pub.sequentialWithPvEvents],
  ];
  for (const method of ['NodePublishVolume', 'NodeUnpublishVolume']) {
    lines.push(
      formatTable(
        [`${method} (ms), ${p.slots} volumes known`, ...columns.map(([name]) => name)],
        [
          ...['n', 'p50', 'p99', 'max', 'retried'].map((stat) => [stat, ...columns.map(([, x]) => x[method][stat])]),
          ['other CPU %', ...columns.map(([, x]) => x.load.otherCpuPercent)],
        ],
      ),
    );
    lines.push('');
  }
  lines.push(
    `${pub.volumes} PVs bound and published in turn; times are kubelet's, from the first attempt to the answer of the one that succeeded (a failed call is retried after 500 ms, then doubling). ` +
      `PV events: another PV modified every ${PV_EVENT_PERIOD_MS / 1000} s (${pub.pvEvents} in all).`,
  );
  for (const [name, x] of columns) {
    for (const method of ['NodePublishVolume', 'NodeUnpublishVolume']) {
      if (x[method].failedAttempts > 0) lines.push(`  ${name}: ${x[method].failedAttempts} failed ${method} attempts: ${x[method].errors.join(' | ')}`);
    }
  }
  lines.push(`Event loop delay during the calls (p99): ${columns.map(([name, x]) => `${name} ${x.eventLoopDelay.p99} ms`).join(', ')}.`);
  lines.push('');

  const rc = r.reclaim;
  lines.push(
    `Reclaim of ${rc.pvs} Released PVs (released at once): every new PV created and every old one gone in ${seconds(rc.allMs)} s (the first new PV at ${seconds(rc.firstNewPvMs)} s; ` +
      `${round(rc.pvs / (rc.allMs / 1000), 1)} PVs/s); the old generations' ciphertext deleted by ${seconds(rc.trashIdleMs)} s, the agent settled by ${seconds(rc.settledMs)} s. ` +
      `Event loop p99 ${rc.eventLoopDelay.p99} ms, max ${rc.eventLoopDelay.max} ms; RSS peak ${rc.rssPeakMiB} MiB; other processes used ${rc.load.otherCpuPercent}% of the CPUs.`,
  );
  lines.push(`Reclaim API requests: ${requestsLine(rc.apiRequests)}.`);
  lines.push('');
  if (r.agentMetrics) {
    const dropped = Object.values(r.agentMetrics.eventsDropped).reduce((a, b) => a + b, 0);
    const errors = Object.entries(r.agentMetrics.errors).filter(([, v]) => v > 0);
    lines.push(
      `Agent metrics: ${dropped} Events dropped (rate limit per object: ${r.coldStart.eventsDropped} by the end of the cold start, ${r.publish.eventsDropped} in the publish cycles)` +
        `${errors.length ? `; errors ${errors.map(([k, v]) => `${k} ${v}`).join(', ')}` : ''}.`,
    );
  }
  const problems = r.agentLogProblems;
  lines.push(`Agent log: ${problems.length === 0 ? 'no warnings or errors' : problems.map((x) => `${x.count}x ${x.message}`).join('; ')}.`);
  if (r.fakeApiServer) lines.push(`Fake API server: ${r.fakeApiServer.rssMiB} MiB RSS at the end, ${r.fakeApiServer.invalidWrites} invalid writes, ${r.fakeApiServer.internalErrors} internal errors.`);
  lines.push('');
  lines.push('Goals (issue 9; reported, not asserted):');
  for (const goal of r.goals) lines.push(`  ${goal.met ? 'met    ' : 'NOT met'} ${goal.goal}: ${goal.value}`);
  process.stdout.write(`${lines.join('\n')}\n`);
}

main().catch((error) => {
  if (error instanceof PreconditionError) {
    process.stderr.write(`bench/agent: ${error.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`bench/agent: ${error.stack ?? error}\n`);
  process.exit(1);
});
