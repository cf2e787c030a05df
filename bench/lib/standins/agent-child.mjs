// The node agent as its own process, for bench/agent.mjs: runAgent() from
// dist/ (what `fscrypt-local run` calls), with nothing else in the process
// but this IPC shim, so its RSS, event loop and CPU are the agent's. It runs
// with the agent's thread pool and --expose-gc (agent-process.mjs sets
// both). argv[2] is a JSON object: the RunAgentOptions that are plain data
// (configDir, nodeName, namespace, csiEndpoint, listenAddress, kubeletDir,
// discoveryPeriodMs), plus apiServer (the fake's URL) and logFile (the
// agent logs there at info level, synchronously, as it writes to stderr in
// a pod).
//
// Operations (bench/lib/standins/ipc-child.mjs); times are process.hrtime ns as
// strings (CLOCK_MONOTONIC: comparable with the benchmark's own):
//   start        runAgent(); { startedAt, returnedAt, health: { host, port } }
//   waitReady    resolves { at } when Agent.readiness().ok first holds (polled every 10 ms)
//   waitQuiet    resolves { at, cpuMs } once the process used less than maxCpuPercent of
//                one CPU over the last windowMs (sampled every 250 ms): the work the
//                agent queued for itself (reconciles after its own PV events, the census
//                they trigger) is done
//   status       the slots: [{ key, root, condition, descriptor }]
//   memory       { rss, heapUsed, heapTotal, external, arrayBuffers } in bytes, after a full GC if { gc: true }
//   rssStart / rssStop        peak RSS (bytes), sampled every 50 ms in between
//   probeStart / probeStop    bench/lib/measure/wait-probe.mjs in this process
//   trashIdle    resolves when the agent's TrashCollector is idle
//   usage        { cpuMs (user + system since start), maxRssBytes }
//   stop         running.stop(); { ms }
import { serve } from './ipc-child.mjs';
import { startWaitProbe } from '../measure/wait-probe.mjs';

const config = JSON.parse(process.argv[2]);
const stamp = () => String(process.hrtime.bigint());
let running;
let rssTimer;
let rssPeak = 0;
let stopProbe;
let modules;

async function load() {
  const start = process.hrtime.bigint();
  const [{ runAgent }, { createAgentLog }, { KubeConfig }, { default: pino }] = await Promise.all([
    import('../../../dist/agent/run-agent.js'),
    import('../../../dist/agent/log.js'),
    import('@kubernetes/client-node'),
    import('pino'),
  ]);
  modules = { runAgent, createAgentLog, KubeConfig, pino };
  return { importMs: Number(process.hrtime.bigint() - start) / 1e6, loadedAt: stamp() };
}

function kubeConfig() {
  const kc = new modules.KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'fake', server: config.apiServer, skipTLSVerify: true }],
    users: [{ name: 'fake' }],
    contexts: [{ name: 'fake', cluster: 'fake', user: 'fake' }],
    currentContext: 'fake',
  });
  return kc;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

await serve(
  {
    async start() {
      if (running !== undefined) throw new Error('the agent is already running');
      const { apiServer, logFile, ...options } = config;
      const log = modules.createAgentLog({ destination: modules.pino.destination({ dest: logFile, sync: true, append: true }) });
      const kc = kubeConfig();
      const startedAt = stamp();
      running = await modules.runAgent({ ...options, kubeConfig: kc, log });
      return { startedAt, returnedAt: stamp(), health: running.health };
    },
    async waitReady({ timeoutMs }) {
      const deadline = Date.now() + timeoutMs;
      while (!running.agent.readiness().ok) {
        if (Date.now() > deadline) throw new Error(`not ready after ${timeoutMs} ms: ${running.agent.readiness().reasons.join('; ')}`);
        await sleep(10);
      }
      return { at: stamp() };
    },
    async waitQuiet({ windowMs, maxCpuPercent, timeoutMs }) {
      const since = process.cpuUsage();
      const deadline = Date.now() + timeoutMs;
      const samples = [{ at: Date.now(), cpu: 0 }];
      for (;;) {
        await sleep(250);
        const used = process.cpuUsage(since);
        const sample = { at: Date.now(), cpu: (used.user + used.system) / 1000 };
        samples.push(sample);
        while (samples.length > 1 && sample.at - samples[1].at >= windowMs) samples.shift();
        const oldest = samples[0];
        if (sample.at - oldest.at >= windowMs && ((sample.cpu - oldest.cpu) / (sample.at - oldest.at)) * 100 < maxCpuPercent) {
          return { at: stamp(), cpuMs: sample.cpu };
        }
        if (Date.now() > deadline) throw new Error(`still busy after ${timeoutMs} ms`);
      }
    },
    status: () => running.agent.status().slots.map(({ key, root, condition, descriptor }) => ({ key, root, condition, descriptor })),
    memory({ gc }) {
      if (gc) globalThis.gc();
      const { rss, heapUsed, heapTotal, external, arrayBuffers } = process.memoryUsage();
      return { rss, heapUsed, heapTotal, external, arrayBuffers };
    },
    rssStart() {
      rssPeak = process.memoryUsage.rss();
      clearInterval(rssTimer);
      rssTimer = setInterval(() => (rssPeak = Math.max(rssPeak, process.memoryUsage.rss())), 50);
    },
    rssStop() {
      clearInterval(rssTimer);
      return Math.max(rssPeak, process.memoryUsage.rss());
    },
    probeStart() {
      stopProbe = startWaitProbe();
    },
    probeStop: () => stopProbe(),
    trashIdle: () => running.agent.trash.idle(),
    usage() {
      const cpu = process.cpuUsage();
      return { cpuMs: (cpu.user + cpu.system) / 1000, maxRssBytes: process.resourceUsage().maxRSS * 1024 };
    },
    async stop() {
      const start = process.hrtime.bigint();
      await running.stop();
      running = undefined;
      return { ms: Number(process.hrtime.bigint() - start) / 1e6 };
    },
  },
  load,
);
