// The deployment renders and the API server would take it: `kubectl
// kustomize` of deploy/ and of every overlay under deploy/examples/ succeeds,
// and every rendered object (and the smoke Job, applied on its own)
// validates against the Kubernetes OpenAPI schema (kubernetes-models). The
// ServiceMonitor is a Prometheus Operator custom resource, which
// kubernetes-models has no schema for: it is checked structurally here, by
// the fields the operator requires and the ones we rely on.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { DEPLOY, describe, kustomizations, KUBECTL, modelFor, overlays, parseYamlStream, render, type K8s } from '../fixtures/deploy.js';
import { needs } from '../fixtures/system/optional.js';

/** What the schema alone cannot say but the API server requires of every object here. */
function metadataProblems(o: K8s): string[] {
  const problems: string[] = [];
  if (typeof o.apiVersion !== 'string' || typeof o.kind !== 'string') problems.push('no apiVersion or kind');
  if (typeof o.metadata?.name !== 'string' || !/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(o.metadata.name)) problems.push(`invalid name ${JSON.stringify(o.metadata?.name)}`);
  return problems;
}

/** The ServiceMonitor's shape (monitoring.coreos.com/v1): required fields and the types of those we set. */
function serviceMonitorProblems(o: K8s): string[] {
  const problems: string[] = [];
  const spec = o.spec as K8s | undefined;
  if (o.apiVersion !== 'monitoring.coreos.com/v1') problems.push(`apiVersion ${o.apiVersion}`);
  if (typeof o.metadata?.namespace !== 'string') problems.push('no namespace');
  if (spec === undefined || typeof spec !== 'object') return [...problems, 'no spec'];
  const known = new Set(['selector', 'namespaceSelector', 'endpoints', 'jobLabel', 'targetLabels', 'podTargetLabels', 'sampleLimit']);
  for (const key of Object.keys(spec)) if (!known.has(key)) problems.push(`unknown spec.${key}`);
  const labels = spec.selector?.matchLabels;
  if (labels === undefined || typeof labels !== 'object' || Object.values(labels).some((v) => typeof v !== 'string')) problems.push('spec.selector.matchLabels must map strings to strings');
  if (spec.namespaceSelector !== undefined && !(Array.isArray(spec.namespaceSelector.matchNames) && spec.namespaceSelector.matchNames.every((n: unknown) => typeof n === 'string'))) {
    problems.push('spec.namespaceSelector.matchNames must be a list of names');
  }
  if (!Array.isArray(spec.endpoints) || spec.endpoints.length === 0) return [...problems, 'spec.endpoints must be a non-empty list'];
  const endpointKeys = new Set(['port', 'path', 'interval', 'scrapeTimeout', 'scheme', 'honorLabels']);
  for (const [i, e] of (spec.endpoints as K8s[]).entries()) {
    for (const key of Object.keys(e)) if (!endpointKeys.has(key)) problems.push(`unknown spec.endpoints[${i}].${key}`);
    if (typeof e.port !== 'string' || e.port === '') problems.push(`spec.endpoints[${i}].port must name a Service port`);
    if (e.path !== undefined && (typeof e.path !== 'string' || !e.path.startsWith('/'))) problems.push(`spec.endpoints[${i}].path must be an absolute path`);
    for (const d of ['interval', 'scrapeTimeout']) if (e[d] !== undefined && !/^(\d+(ms|s|m|h))+$/.test(e[d])) problems.push(`spec.endpoints[${i}].${d} must be a Prometheus duration`);
  }
  return problems;
}

/** Validates every object: the schema, or by hand where kubernetes-models has none. */
async function validateAll(t: Test, what: string, objects: K8s[]): Promise<void> {
  const names = new Set<string>();
  for (const o of objects) {
    const id = describe(o);
    t.same(metadataProblems(o), [], `${what}: ${id}: metadata`);
    t.notOk(names.has(`${o.apiVersion} ${id}`), `${what}: ${id} is rendered once`);
    names.add(`${o.apiVersion} ${id}`);
    if (o.kind === 'ServiceMonitor') {
      t.same(serviceMonitorProblems(o), [], `${what}: ${id}: the ServiceMonitor's structure (no schema in kubernetes-models: checked by hand)`);
      continue;
    }
    const Model = await modelFor(o.apiVersion, o.kind);
    if (Model === undefined) {
      t.fail(`${what}: ${id}: kubernetes-models has no schema for ${o.apiVersion} ${o.kind}; add a structural check like the ServiceMonitor's`);
      continue;
    }
    let error: unknown;
    try {
      new Model(o).validate();
    } catch (caught) {
      error = caught;
    }
    t.equal(error, undefined, `${what}: ${id} validates against the OpenAPI schema`, error === undefined ? {} : { errors: (error as { errors?: unknown }).errors });
  }
}

t.test('every kustomization under deploy/ renders, and every object validates', async (t) => {
  if (!needs(t, KUBECTL)) return;
  const dirs = kustomizations();
  t.ok(dirs.includes('deploy'), 'deploy/ is a kustomization (kubectl apply -k deploy/)');
  t.ok(overlays().length >= 3, 'at least the basic, kms and monitoring overlays');
  for (const dir of dirs) {
    const rendered = render(dir);
    t.ok(rendered.objects.length > 0, `${dir} renders`);
    await validateAll(t, dir, rendered.objects);
  }
});

t.test('deploy/ renders the base and nothing else', async (t) => {
  if (!needs(t, KUBECTL)) return;
  const kinds = (dir: string) => render(dir).objects.map((o) => `${o.kind}/${o.metadata.name}`).sort();
  t.same(kinds('deploy'), kinds('deploy/base'));
  t.same(kinds('deploy'), [
    'CSIDriver/fscrypt-local.github.io',
    'ClusterRole/fscrypt-local-agent',
    'ClusterRoleBinding/fscrypt-local-agent',
    'DaemonSet/fscrypt-local',
    'Namespace/fscrypt-local',
    'Role/fscrypt-local-events',
    'RoleBinding/fscrypt-local-events',
    'Service/fscrypt-local-metrics',
    'ServiceAccount/fscrypt-local',
  ]);
});

t.test('the overlays hold what the deployment promises', async (t) => {
  if (!needs(t, KUBECTL)) return;
  const basic = render('deploy/examples/basic').objects;
  const kinds = new Set(basic.map((o) => o.kind));
  for (const kind of ['ConfigMap', 'StorageClass', 'PersistentVolumeClaim', 'Pod', 'DaemonSet', 'CSIDriver']) t.ok(kinds.has(kind), `basic has a ${kind}`);
  const sc = basic.find((o) => o.kind === 'StorageClass')!;
  t.equal(sc.provisioner, 'kubernetes.io/no-provisioner');
  t.equal(sc.volumeBindingMode, 'WaitForFirstConsumer');
  t.equal(sc.reclaimPolicy, 'Delete');
  const pvc = basic.find((o) => o.kind === 'PersistentVolumeClaim')!;
  t.equal(pvc.spec.storageClassName, sc.metadata.name, 'the claim is of the example class');
  const pod = basic.find((o) => o.kind === 'Pod')!;
  t.equal(pod.metadata.namespace, pvc.metadata.namespace, 'the pod is beside its claim');
  t.ok(pod.spec.volumes.some((v: K8s) => v.persistentVolumeClaim?.claimName === pvc.metadata.name), 'the pod uses the claim');
  t.equal(pod.spec.securityContext.runAsNonRoot, true, 'the demo pod is non-root');
  t.ok(pod.spec.securityContext.runAsUser > 0 && typeof pod.spec.securityContext.fsGroup === 'number', 'with an fsGroup');
  t.ok(pod.spec.containers.every((c: K8s) => c.securityContext?.allowPrivilegeEscalation === false && c.securityContext?.privileged !== true), 'and without privilege');
  const demoNs = basic.find((o) => o.kind === 'Namespace' && o.metadata.name === pod.metadata.namespace)!;
  t.equal(demoNs.metadata.labels['pod-security.kubernetes.io/enforce'], 'restricted', 'its namespace enforces the restricted standard');

  const monitoring = render('deploy/examples/monitoring').objects;
  t.same(monitoring.map((o) => o.kind), ['ServiceMonitor']);

  const kms = render('deploy/examples/kms').objects;
  const containers = kms.find((o) => o.kind === 'DaemonSet')!.spec.template.spec.containers.map((c: K8s) => c.name);
  t.same(containers.sort(), ['agent', 'kms-plugin', 'node-driver-registrar'], 'the KMS plugin runs as a sidecar');
  const plugin = kms.find((o) => o.kind === 'DaemonSet')!.spec.template.spec.containers.find((c: K8s) => c.name === 'kms-plugin');
  t.match(readFileSync(join(DEPLOY, 'examples/kms/kms-plugin.yaml'), 'utf8'), /PLACEHOLDER[^\n]*\n[^\n]*\n[^\n]*\n\s*image: /, 'the plugin image is marked as a placeholder');
  t.match(plugin.image, /example\.invalid/, 'and cannot be pulled by mistake (.invalid never resolves)');
});

t.test('the smoke Job validates, and runs the agent image in the agent namespace', async (t) => {
  if (!needs(t, KUBECTL)) return;
  const jobs = parseYamlStream(readFileSync(join(DEPLOY, 'smoke-job.yaml'), 'utf8'), 'deploy/smoke-job.yaml');
  t.equal(jobs.length, 1);
  await validateAll(t, 'deploy/smoke-job.yaml', jobs);
  const base = render('deploy').objects;
  const ds = base.find((o) => o.kind === 'DaemonSet')!;
  const agent = ds.spec.template.spec.containers.find((c: K8s) => c.name === 'agent');
  t.equal(jobs[0]!.spec.template.spec.containers[0].image, agent.image, 'the smoke test is the image the agent runs');
  const version = (JSON.parse(readFileSync(join(DEPLOY, '..', 'package.json'), 'utf8')) as { version: string }).version;
  t.equal(agent.image.split(':').pop(), version, "the image tag is the package's version");
  const ns = base.find((o) => o.kind === 'Namespace')!;
  t.equal(ns.metadata.labels['pod-security.kubernetes.io/enforce'], 'privileged', 'the agent namespace admits the privileged smoke Job (docs/cli.md applies it there)');
});
