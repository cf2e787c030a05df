// The manifests agree with the agent's code and with each other, for the
// base and every overlay that renders a DaemonSet: the flags the agent runs
// with are flags `fscrypt-local run` has; the registrar's socket paths lead
// to the agent's --csi-endpoint and to where kubelet looks; the CSIDriver is
// the agent's driver; the probes reach the agent's --listen-address; every
// class of the overlay's ConfigMap (read by the agent's own loader) has its
// hostDir mounted at its mountDir, and its key source under a read-only
// Secret mount (or a KMS socket shared with a sidecar).
import { mkdirSync } from 'node:fs';
import { join, posix } from 'node:path';
import t, { type Test } from 'tap';
import { loadConfig } from '../../lib/agent/config/index.js';
import { DEFAULT_DRIVER_NAME, socketPath } from '../../lib/agent/csi/server.js';
import { parseListenAddress } from '../../lib/agent/health-server.js';
import { DEFAULT_ARGON2_COSTS } from '../../lib/keys/sources/passphrase.js';
import { SERVICE_THREADPOOL_SIZE } from '../../lib/volume/thread-pool.js';
import { writeConfigMapMount } from '../fixtures/agent/configmap-mount.js';
import {
  agentArgv,
  container,
  effectiveFlag,
  hostPathOf,
  imageStage,
  KUBECTL,
  kustomizations,
  memoryBytes,
  mountAt,
  mountsOf,
  podSpec,
  render,
  runFlags,
  within,
  type K8s,
  type Mount,
} from '../fixtures/deploy.js';
import { needs } from '../fixtures/system/optional.js';
import { scratchDir } from '../fixtures/system/scratch-fs.js';

const MiB = 1024 * 1024;

/** The container port a probe or Service names (by name or number). */
function containerPort(c: K8s, port: string | number): number | undefined {
  if (typeof port === 'number') return port;
  return (c.ports as K8s[] | undefined)?.find((p) => p.name === port)?.containerPort;
}

/** A `--flag=value` or `--flag value` of a sidecar's args. */
function argOf(c: K8s, flag: string): string | undefined {
  const args = (c.args ?? []) as string[];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === flag) return args[i + 1];
    if (args[i]!.startsWith(`${flag}=`)) return args[i]!.slice(flag.length + 1);
  }
  return undefined;
}

interface Agent {
  ds: K8s;
  agent: K8s;
  mounts: Mount[];
  flag(name: string): string;
}

function agentOf(t: Test, objects: K8s[]): Agent {
  const ds = objects.find((o) => o.kind === 'DaemonSet')!;
  const agent = container(ds, 'agent');
  const { argv, env } = agentArgv(agent, imageStage());
  const flags = runFlags();
  t.same(argv.slice(0, 2), ['fscrypt-local', 'run'], 'the agent container runs `fscrypt-local run` (the image ENTRYPOINT or its command)');
  for (const arg of argv.slice(2)) {
    if (!arg.startsWith('--')) continue;
    t.ok(flags.has(arg.split('=')[0]!), `\`fscrypt-local run\` has the flag ${arg.split('=')[0]}`);
  }
  const pod = { namespace: ds.metadata.namespace as string, nodeName: 'node-a' };
  return {
    ds,
    agent,
    mounts: mountsOf(ds, agent),
    flag(name) {
      const flag = flags.get(name);
      if (flag === undefined) throw new Error(`fscrypt-local run has no ${name}`);
      const value = effectiveFlag(argv, env, flag, pod);
      if (value === undefined) throw new Error(`the agent gets no value for ${name}`);
      return value;
    },
  };
}

function checkCsi(t: Test, objects: K8s[], a: Agent): void {
  const kubeletDir = a.flag('--kubelet-dir');
  const socket = socketPath(a.flag('--csi-endpoint'));
  const hostSocket = hostPathOf(a.mounts, socket);
  t.equal(hostSocket, posix.join(kubeletDir, 'plugins', DEFAULT_DRIVER_NAME, 'csi.sock'), "the agent's socket is kubelet's plugins/<driver>/csi.sock on the host");

  const registrar = container(a.ds, 'node-driver-registrar');
  const registrarMounts = mountsOf(a.ds, registrar);
  const csiAddress = argOf(registrar, '--csi-address') ?? '/run/csi/socket';
  t.equal(hostPathOf(registrarMounts, csiAddress), hostSocket, "the registrar's --csi-address is the agent's socket");
  t.equal(argOf(registrar, '--kubelet-registration-path'), hostSocket, '--kubelet-registration-path is where that socket is on the host');
  const registration = argOf(registrar, '--plugin-registration-path') ?? '/registration';
  t.equal(hostPathOf(registrarMounts, registration), posix.join(kubeletDir, 'plugins_registry'), "the registrar's registration directory is kubelet's plugins_registry");
  const health = argOf(registrar, '--http-endpoint');
  t.ok(health, 'the registrar serves /healthz');
  t.equal(registrar.livenessProbe?.httpGet?.path, '/healthz');
  t.equal(containerPort(registrar, registrar.livenessProbe?.httpGet?.port), parseListenAddress(health ?? ':0').port, "the registrar's probe reaches its --http-endpoint");

  const driver = objects.find((o) => o.kind === 'CSIDriver')!;
  t.equal(driver.metadata.name, DEFAULT_DRIVER_NAME, "the CSIDriver is the agent's driver");
  t.equal(driver.spec.attachRequired, false, 'no attach step (node-only driver)');
  t.equal(driver.spec.podInfoOnMount, true);
  t.same(driver.spec.volumeLifecycleModes, ['Persistent']);
  t.equal(driver.spec.fsGroupPolicy, 'File', 'fsGroup applies to our fsType-less PVs, as to upstream local PVs');

  const pods = posix.join(kubeletDir, 'pods');
  const podsMount = mountAt(a.mounts, pods);
  t.equal(hostPathOf(a.mounts, pods), pods, "kubelet's pods directory is at the same path inside and out (targets are host paths)");
  t.equal(podsMount?.mount.mountPropagation, 'Bidirectional', 'publish mounts reach the host');
  t.equal(a.agent.securityContext?.privileged, true, 'Bidirectional propagation needs a privileged container');
}

function checkProbes(t: Test, objects: K8s[], a: Agent): void {
  const port = parseListenAddress(a.flag('--listen-address')).port;
  t.equal(a.agent.livenessProbe?.httpGet?.path, '/healthz');
  t.equal(a.agent.readinessProbe?.httpGet?.path, '/readyz');
  t.equal(containerPort(a.agent, a.agent.livenessProbe?.httpGet?.port), port, 'liveness reaches --listen-address');
  t.equal(containerPort(a.agent, a.agent.readinessProbe?.httpGet?.port), port, 'readiness reaches --listen-address');
  const service = objects.find((o) => o.kind === 'Service' && o.metadata.name === 'fscrypt-local-metrics')!;
  const labels = a.ds.spec.template.metadata.labels as Record<string, string>;
  t.ok(Object.entries(service.spec.selector as Record<string, string>).every(([k, v]) => labels[k] === v), "the metrics Service selects the agent's pods");
  t.equal(containerPort(a.agent, service.spec.ports[0].targetPort), port, 'and reaches /metrics');
}

async function checkConfig(t: Test, objects: K8s[], a: Agent): Promise<void> {
  const configDir = a.flag('--config');
  const configMount = mountAt(a.mounts, configDir);
  t.equal(configMount?.mount.mountPath, configDir, 'the ConfigMap volume is mounted at --config');
  t.equal(configMount?.mount.readOnly, true);
  const name = configMount?.volume.configMap?.name;
  const cm = objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name === name);
  if (cm === undefined) {
    t.comment(`no ConfigMap ${name} here: an overlay supplies it`);
    return;
  }
  t.equal(cm.metadata.namespace, a.ds.metadata.namespace, "the ConfigMap is in the agent's namespace");
  const dir = join(scratchDir(t), 'config');
  mkdirSync(dir);
  writeConfigMapMount(dir, cm.data as Record<string, string>);
  const { config, warnings } = await loadConfig(dir);
  t.same(warnings, [], "the agent's loader takes the example without a warning");
  t.ok(config.classes.length > 0, 'it serves at least one class');
  const classes = objects.filter((o) => o.kind === 'StorageClass').map((o) => o.metadata.name);
  for (const c of config.classes) {
    t.ok(classes.includes(c.className), `${c.className}: its StorageClass is in the overlay`);
    const m = mountAt(a.mounts, c.mountDir);
    t.equal(hostPathOf(a.mounts, c.mountDir), c.hostDir, `${c.className}: hostDir ${c.hostDir} is mounted at mountDir ${c.mountDir}`);
    t.ok(m !== undefined && ['HostToContainer', 'Bidirectional'].includes(m.mount.mountPropagation), `${c.className}: with propagation, so slots mounted later are seen`);
    const source = c.fscrypt.keySource;
    if (source.kind === 'kms') {
      const sock = socketPath(source.socket);
      const shared = mountAt(a.mounts, sock);
      t.ok(shared?.volume.emptyDir !== undefined, `${c.className}: the KMS socket is in a pod-private volume`);
      const peers = (podSpec(a.ds).containers as K8s[]).filter((x) => x.name !== 'agent' && mountsOf(a.ds, x).some((pm) => pm.volume.name === shared?.volume.name));
      t.equal(peers.length, 1, `${c.className}: one sidecar (the KMS plugin) shares the socket's volume`);
      const rel = posix.relative(shared!.mount.mountPath, sock);
      const peerMount = mountsOf(a.ds, peers[0]!).find((pm) => pm.volume.name === shared?.volume.name)!;
      t.ok(((peers[0]!.args ?? []) as string[]).some((arg) => arg.includes(posix.join(peerMount.mount.mountPath, rel))), `${c.className}: the plugin listens where the agent dials`);
    } else {
      const m2 = mountAt(a.mounts, source.path);
      t.ok(m2?.volume.secret !== undefined, `${c.className}: ${source.kind} key source ${source.path} is in a Secret volume`);
      t.equal(m2?.mount.readOnly, true, `${c.className}: mounted read-only`);
      const mode = m2?.volume.secret?.defaultMode;
      t.ok(mode !== undefined && (mode & 0o077) === 0, `${c.className}: readable by root only (defaultMode ${mode?.toString(8)})`);
      const items = m2?.volume.secret?.items as K8s[] | undefined;
      if (items !== undefined) t.ok(items.some((i) => posix.join(m2!.mount.mountPath, i.path) === source.path), `${c.className}: the Secret projects that file`);
    }
  }
  const tolerated = (podSpec(a.ds).tolerations ?? []) as K8s[];
  t.ok(tolerated.some((x) => x.operator === 'Exists' && (x.key === undefined || x.key === config.notReadyTaintKey)), 'the agent tolerates the start-up taint it removes');
}

function checkPod(t: Test, objects: K8s[], a: Agent): void {
  const spec = podSpec(a.ds);
  t.equal(spec.priorityClassName, 'system-node-critical');
  t.equal(a.ds.spec.updateStrategy.type, 'RollingUpdate');
  t.equal(a.ds.spec.updateStrategy.rollingUpdate.maxUnavailable, 1, 'one node at a time');
  t.equal(a.ds.spec.updateStrategy.rollingUpdate.maxSurge ?? 0, 0, 'never two agents on a node');
  t.equal(spec.hostPID, true, 'the blocker report sees the processes that hold files open');
  const env = new Map(((a.agent.env ?? []) as K8s[]).map((e) => [e.name, e]));
  t.equal(env.get('MY_NODE_NAME')?.valueFrom?.fieldRef?.fieldPath, 'spec.nodeName', 'MY_NODE_NAME from the downward API');
  t.equal(env.get('MY_NAMESPACE')?.valueFrom?.fieldRef?.fieldPath, 'metadata.namespace', 'MY_NAMESPACE from the downward API');
  t.equal(env.get('UV_THREADPOOL_SIZE')?.value, String(SERVICE_THREADPOOL_SIZE), 'UV_THREADPOOL_SIZE as lib/volume wants it');
  t.equal(imageStage().env.UV_THREADPOOL_SIZE, String(SERVICE_THREADPOOL_SIZE), 'and the image sets it too');
  t.match(env.get('NODE_OPTIONS')?.value ?? '', /^--max-semi-space-size=\d+$/, "NODE_OPTIONS caps V8's young generation (and sets nothing else)");
  t.equal(imageStage().env.NODE_OPTIONS, env.get('NODE_OPTIONS')?.value, 'the image sets the same NODE_OPTIONS');
  // The figures behind these sizes are measured by test/agent/soak.test.ts, which runs the agent with this container's
  // environment and checks its peak RSS plus one Argon2id run against the limit, and its steady RSS against the request.
  const limit = memoryBytes(a.agent.resources.limits.memory);
  const request = memoryBytes(a.agent.resources.requests.memory);
  const argon2 = DEFAULT_ARGON2_COSTS.memory * 1024;
  t.ok(limit >= request + argon2, `the limit (${limit / MiB} MiB) leaves room above the request (${request / MiB} MiB) for one Argon2id run (${argon2 / MiB} MiB)`);
  const sa = spec.serviceAccountName;
  for (const kind of ['ClusterRoleBinding', 'RoleBinding']) {
    const binding = objects.find((o) => o.kind === kind)!;
    t.ok(binding.subjects.some((s: K8s) => s.kind === 'ServiceAccount' && s.name === sa && s.namespace === a.ds.metadata.namespace), `the ${kind} binds the agent's ServiceAccount`);
  }
  const agentMounts = a.mounts.map((m) => m.mount.mountPath).sort();
  t.notOk(agentMounts.some((p) => within('/dev', p) || p === '/'), 'the agent gets no host /dev or root filesystem');
}

const DIRS_WITH_AGENT = kustomizations().filter((d) => d !== 'deploy/examples/monitoring');

t.test('the manifests agree with the agent', async (t) => {
  if (!needs(t, KUBECTL)) return;
  for (const dir of DIRS_WITH_AGENT) {
    await t.test(dir, async (t) => {
      const objects = render(dir).objects;
      const a = agentOf(t, objects);
      checkCsi(t, objects, a);
      checkProbes(t, objects, a);
      await checkConfig(t, objects, a);
      checkPod(t, objects, a);
    });
  }
});

t.test('the ServiceMonitor scrapes the metrics Service', async (t) => {
  if (!needs(t, KUBECTL)) return;
  const monitor = render('deploy/examples/monitoring').objects[0]!;
  const service = render('deploy').objects.find((o) => o.kind === 'Service')!;
  t.ok(Object.entries(monitor.spec.selector.matchLabels as Record<string, string>).every(([k, v]) => service.metadata.labels?.[k] === v), "its selector matches the Service's labels");
  t.ok(monitor.spec.namespaceSelector.matchNames.includes(service.metadata.namespace), "in the Service's namespace");
  t.ok((service.spec.ports as K8s[]).some((p) => p.name === monitor.spec.endpoints[0].port), 'on a port the Service names');
  t.equal(monitor.spec.endpoints[0].path, '/metrics');
});
