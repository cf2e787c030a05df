// `fscrypt-local run`, wired: the config reloader, the logger, metrics, the
// Kubernetes client, the Event recorder, the Agent (CSI server, informer,
// slots) and the health server; and the shutdown SIGTERM asks for: stop the
// informers, finish in-flight hooks and RPCs, wipe the open protectors,
// remove the socket. Published volumes stay published: kubelet owns them,
// and the next agent finds them through the slots' state.
import { CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import { FscryptError } from '../kernel/errors.js';
import { disableCoreDumps, threadPoolWarning } from '../volume/index.js';
import { Agent } from './agent.js';
import type { AgentStepObserver } from './agent-steps.js';
import { ConfigReloader, matchesNamePattern, type LoadedConfig } from './config/index.js';
import { clientNodeEventSink, EventRecorder } from './events.js';
import { eventLoopWatch, HealthServer } from './health-server.js';
import { createAgentLog, type AgentLog } from './log.js';
import { AgentMetrics } from './metrics.js';

export interface RunAgentOptions {
  configDir: string;
  nodeName: string;
  namespace: string;
  csiEndpoint: string;
  kubeconfig?: string | undefined;
  listenAddress: string;
  kubeletDir: string;
  discoveryPeriodMs: number;
  log?: AgentLog;
  /** For tests: the KubeConfig to use instead of loading one. */
  kubeConfig?: KubeConfig;
  /** For the crash tests only (no flag or variable of `fscrypt-local run` reaches it): told after each durable step of every operation (AGENT_STEPS). */
  onStep?: AgentStepObserver;
  /** Shortened timings for tests. */
  timings?: {
    configPeriodMs?: number;
    retry?: { initialMs?: number; maxMs?: number };
    informerRestart?: { initialMs?: number; maxMs?: number };
    informerStaleAfterMs?: number;
    /** Deadline of each Kubernetes API request (default 30 s). */
    apiTimeoutMs?: number;
  };
}

export interface RunningAgent {
  agent: Agent;
  health: { host: string; port: number };
  config(): LoadedConfig;
  stop(): Promise<void>;
}

export async function runAgent(options: RunAgentOptions): Promise<RunningAgent> {
  const log = options.log ?? createAgentLog();
  // Before any protector is opened: the agent holds every slot's protector
  // key for its life, and a core dump would write them all to the node's disk.
  disableCoreDumps();
  const warning = threadPoolWarning();
  if (warning !== undefined) log.warn({}, warning);

  const metrics = new AgentMetrics();
  let recorder: EventRecorder | undefined;
  const reloader = new ConfigReloader(options.configDir, {
    periodMs: options.timings?.configPeriodMs ?? 5000,
    onChange: (next) => {
      log.info({ classes: next.config.classes.map((c) => c.className) }, 'configuration changed');
      for (const w of next.warnings) log.warn({ file: w.file, key: w.key }, w.message);
    },
    onRejected: (error) => {
      log.error({ file: error.file, key: error.key }, `configuration change rejected, still running on the last good one: ${error.message}`);
      metrics.countError('config', 'rejected');
      recorder?.record({ kind: 'Node', name: options.nodeName }, 'Warning', 'ConfigRejected', `the new configuration was rejected (the agent keeps the last good one): ${error.message}`);
    },
  });
  // Local input first: a bad config is reported before anything talks to the cluster.
  const first = await reloader.start();
  for (const w of first.warnings) log.warn({ file: w.file, key: w.key }, w.message);
  let kc: KubeConfig;
  try {
    kc = options.kubeConfig ?? loadKubeConfig(options.kubeconfig);
  } catch (error) {
    reloader.stop();
    throw error;
  }

  recorder = new EventRecorder({ sink: clientNodeEventSink(kc.makeApiClient(CoreV1Api), options.timings?.apiTimeoutMs), namespace: options.namespace, component: 'fscrypt-local', host: options.nodeName, log, metrics });
  const agent = new Agent({
    nodeName: options.nodeName,
    kubeConfig: kc,
    csiEndpoint: options.csiEndpoint,
    kubeletDir: options.kubeletDir,
    discoveryPeriodMs: options.discoveryPeriodMs,
    settings: () => reloader.current().config,
    matches: matchesNamePattern,
    log,
    reporter: recorder,
    signals: metrics,
    apiObserver: { request: (verb, resource) => metrics.countApiRequest(verb, resource), error: (verb, resource, status) => metrics.countApiError(verb, resource, status) },
    ...(options.onStep ? { onStep: options.onStep } : {}),
    ...(options.timings?.retry ? { retry: options.timings.retry } : {}),
    ...(options.timings?.apiTimeoutMs === undefined ? {} : { apiTimeoutMs: options.timings.apiTimeoutMs }),
    informer: {
      ...(options.timings?.informerRestart ? { restartDelay: options.timings.informerRestart } : {}),
      ...(options.timings?.informerStaleAfterMs ? { staleAfterMs: options.timings.informerStaleAfterMs } : {}),
    },
  });
  metrics.informerAgeFrom(() => agent.informerAgeSeconds());
  const loop = eventLoopWatch();
  const health = new HealthServer({
    listenAddress: options.listenAddress,
    metrics,
    healthy: () => {
      const checks = [loop.check(), agent.health()];
      return { ok: checks.every((c) => c.ok), reasons: checks.flatMap((c) => c.reasons) };
    },
    ready: () => agent.readiness(),
    log,
  });
  let address: { host: string; port: number };
  try {
    address = await health.start();
    await agent.start();
  } catch (error) {
    // A port in use, a socket path that cannot be bound: undo what started, so the process can exit with the error.
    reloader.stop();
    loop.stop();
    await agent.stop().catch(() => undefined);
    await recorder.stop().catch(() => undefined);
    await health.stop().catch(() => undefined);
    throw error;
  }

  let stopping: Promise<void> | undefined;
  return {
    agent,
    health: address,
    config: () => reloader.current(),
    stop: () =>
      (stopping ??= (async () => {
        reloader.stop();
        await agent.stop();
        await recorder.stop();
        await health.stop();
        loop.stop();
        log.info({}, 'stopped: in-flight work finished, protectors wiped, socket removed');
      })()),
  };
}

function loadKubeConfig(file: string | undefined): KubeConfig {
  const kc = new KubeConfig();
  if (file) {
    try {
      kc.loadFromFile(file);
    } catch (error) {
      throw FscryptError.invalidArgument(`cannot load the kubeconfig ${file}: ${(error as Error).message}`);
    }
  } else {
    if (!process.env.KUBERNETES_SERVICE_HOST) {
      throw FscryptError.invalidArgument('not running in a Kubernetes pod (KUBERNETES_SERVICE_HOST is unset): pass --kubeconfig FILE or set KUBECONFIG');
    }
    kc.loadFromCluster();
  }
  return kc;
}
