// RBAC coverage: the ClusterRole and the Role in deploy/ grant exactly what
// the agent calls. The calls are the ones a real client-node made to the
// fake API server during the agent's full test scenario
// (test/fixtures/agent/agent-story.ts, the story test/agent/scenario.test.ts
// asserts), run with the namespace the DaemonSet gives the agent, plus a
// pod restarting on the new volume (the same Event twice: the aggregating
// patch). Fails if the agent called a verb or resource nothing grants, if a
// rule grants one the agent never called, and if lib/ names a client-node
// API call the recorded session never made (a call this session does not
// reach would otherwise escape both checks).
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as k8s from '@kubernetes/client-node';
import t from 'tap';
import { slotStatus } from '../../lib/volume/index.js';
import { agentStory } from '../fixtures/agent/agent-story.js';
import { mountCapability } from '../fixtures/agent/csi.js';
import { agentArgv, container, effectiveFlag, imageStage, KUBECTL, REPO, render, runFlags, type K8s } from '../fixtures/deploy.js';
import type { RecordedRequest } from '../fixtures/fake-apiserver/index.js';
import { needs } from '../fixtures/system/optional.js';

interface Call {
  verb: string;
  group: string;
  /** resource, or resource/subresource */
  resource: string;
  /** undefined for cluster-scoped */
  namespace: string | undefined;
}

interface Grant {
  /** Where the rule applies: undefined = cluster-wide (a ClusterRole through a ClusterRoleBinding). */
  namespace: string | undefined;
  rule: K8s;
  from: string;
}

const key = (c: Call): string => `${c.verb} ${c.group === '' ? 'core' : c.group}/${c.resource}${c.namespace === undefined ? '' : ` in ${c.namespace}`}`;

/** The rules bound to the agent's ServiceAccount, with where each applies. */
function grantsOf(objects: K8s[], sa: { name: string; namespace: string }): Grant[] {
  const bindsAgent = (b: K8s) => (b.subjects as K8s[]).some((s) => s.kind === 'ServiceAccount' && s.name === sa.name && s.namespace === sa.namespace);
  const grants: Grant[] = [];
  for (const binding of objects.filter((o) => (o.kind === 'ClusterRoleBinding' || o.kind === 'RoleBinding') && bindsAgent(o))) {
    const role = objects.find((o) => o.kind === binding.roleRef.kind && o.metadata.name === binding.roleRef.name && (o.kind === 'ClusterRole' || o.metadata.namespace === binding.metadata.namespace));
    if (role === undefined) throw new Error(`${binding.kind} ${binding.metadata.name} binds ${binding.roleRef.kind} ${binding.roleRef.name}, which deploy/ does not define`);
    const namespace = binding.kind === 'RoleBinding' ? (binding.metadata.namespace as string) : undefined;
    for (const rule of role.rules as K8s[]) grants.push({ namespace, rule, from: `${role.kind} ${role.metadata.name}` });
  }
  return grants;
}

function grants(g: Grant, c: Call): boolean {
  if (g.namespace !== undefined && g.namespace !== c.namespace) return false;
  return (g.rule.apiGroups as string[]).includes(c.group) && (g.rule.resources as string[]).includes(c.resource) && (g.rule.verbs as string[]).includes(c.verb);
}

/** Every (verb, resource) a rule grants, in its scope. */
function granted(g: Grant): Call[] {
  const out: Call[] = [];
  for (const group of g.rule.apiGroups as string[]) for (const resource of g.rule.resources as string[]) for (const verb of g.rule.verbs as string[]) out.push({ verb, group, resource, namespace: g.namespace });
  return out;
}

function callOf(r: RecordedRequest): Call {
  return { verb: r.verb, group: r.group, resource: r.subresource ? `${r.resource}/${r.subresource}` : r.resource, namespace: r.namespace };
}

/** A grant of a namespaced resource by a Role applies in its namespace; the recorded call is the same triple there. */
function sameCall(a: Call, b: Call): boolean {
  return a.verb === b.verb && a.group === b.group && a.resource === b.resource && (a.namespace === undefined || a.namespace === b.namespace);
}

// ---------------------------------------------------------------------------
// The static side: which client-node calls lib/ names.

const VERBS: Record<string, string> = { create: 'create', read: 'get', list: 'list', patch: 'patch', replace: 'update', delete: 'delete', deleteCollection: 'deletecollection' };

function plural(kind: string): string {
  const lower = kind.toLowerCase();
  if (/(s|x|ch|sh)$/.test(lower)) return `${lower}es`;
  if (/[^aeiou]y$/.test(lower)) return `${lower.slice(0, -1)}ies`;
  return `${lower}s`;
}

/** Every method of client-node's generated *Api classes. */
function apiMethods(): Set<string> {
  const names = new Set<string>();
  for (const [name, value] of Object.entries(k8s)) {
    if (!/^[A-Z]\w*Api$/.test(name) || typeof value !== 'function') continue;
    for (const method of Object.getOwnPropertyNames((value as { prototype: object }).prototype)) if (method !== 'constructor') names.add(method);
  }
  return names;
}

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? sources(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : []));
}

/** (verb, resource) of each client-node call in lib/, with where it is. */
function namedCalls(): { verb: string; resource: string; where: string }[] {
  const methods = apiMethods();
  const out: { verb: string; resource: string; where: string }[] = [];
  for (const file of sources(join(REPO, 'lib'))) {
    const text = readFileSync(file, 'utf8');
    const where = file.slice(REPO.length);
    for (const match of text.matchAll(/\.([a-z][A-Za-z]*)\(/g)) {
      const method = match[1]!;
      // Bare create/read/list/... are KubernetesObjectApi's (and every Map's): generic clients are caught below.
      if (!methods.has(method) || !/[A-Z]/.test(method)) continue;
      const parsed = /^(create|read|list|patch|replace|deleteCollection|delete)(Namespaced)?([A-Z][A-Za-z]*?)(Status)?(ForAllNamespaces)?(WithHttpInfo)?$/.exec(method);
      if (parsed === null) {
        out.push({ verb: `? ${method}`, resource: '?', where });
        continue;
      }
      out.push({ verb: VERBS[parsed[1]!]!, resource: plural(parsed[3]!) + (parsed[4] ? '/status' : ''), where });
    }
    // A generic client's calls cannot be read off the source: none may be used.
    for (const match of text.matchAll(/\b(KubernetesObjectApi|ListWatch|new Watch)\b/g)) out.push({ verb: `? ${match[1]}`, resource: '?', where });
    for (const match of text.matchAll(/makeInformer(?:<[^>]*>)?\([^,]+,\s*'\/(?:api\/v1|apis\/[^/']+\/[^/']+)\/(?:namespaces\/[^/']+\/)?([a-z]+)'/g)) {
      out.push({ verb: 'list', resource: match[1]!, where }, { verb: 'watch', resource: match[1]!, where });
    }
  }
  return out;
}

// ---------------------------------------------------------------------------

t.test('the ClusterRole and Role grant exactly what the agent calls', async (t) => {
  if (!needs(t, KUBECTL)) return;
  const objects = render('deploy').objects;
  const ds = objects.find((o) => o.kind === 'DaemonSet')!;
  const agent = container(ds, 'agent');
  const { argv, env } = agentArgv(agent, imageStage());
  const eventsNamespace = effectiveFlag(argv, env, runFlags().get('--namespace')!, { namespace: ds.metadata.namespace })!;
  const sa = { name: ds.spec.template.spec.serviceAccountName as string, namespace: ds.metadata.namespace as string };
  const rules = grantsOf(objects, sa);
  t.ok(rules.length > 0, "rules are bound to the agent's ServiceAccount");
  for (const g of rules) {
    for (const field of ['apiGroups', 'resources', 'verbs']) t.notOk((g.rule[field] as string[]).includes('*'), `${g.from}: no wildcard ${field}`);
    t.notOk('resourceNames' in g.rule || 'nonResourceURLs' in g.rule, `${g.from}: plain resource rules only`);
  }

  // The story, with Events going where the DaemonSet sends them (the fake refuses an Event the real server would).
  const node = await agentStory(t, eventsNamespace === 'default' ? {} : { namespace: eventsNamespace });
  // A pod restarting on the new volume: published, unpublished, twice. The second Locked is the same Event again (a patch).
  const agentTwo = await node.start(eventsNamespace === 'default' ? {} : { namespace: eventsNamespace });
  const pv = await node.until('the generation-2 PV', () => node.pvs()[0]);
  const pvName = (pv.metadata as K8s).name as string;
  const handle = (pv.spec as K8s).csi.volumeHandle as string;
  node.api.bind(pvName, { namespace: 'default', name: 'data-db-1' });
  const slot = join(node.hostDir, 'ssd0'); // the story's slot
  await node.until('the claim recorded', async () => (await slotStatus(slot)).volume?.claimed);
  for (let i = 0; i < 2; i++) {
    const target = await node.kubelet.newTarget(pvName);
    await agentTwo.csi.node('NodePublishVolume', { volume_id: handle, target_path: target, volume_capability: mountCapability(), readonly: false });
    await agentTwo.csi.node('NodeUnpublishVolume', { volume_id: handle, target_path: target });
  }
  await node.until('the repeated Locked event aggregated', () =>
    node.api.events().some((e) => (e as K8s).reason === 'Locked' && (e as K8s).involvedObject.name === pvName && (e as K8s).count >= 2),
  );
  await agentTwo.stop();
  node.api.assertNoInvalidWrites(t);

  const nonResource = node.api.requests.filter((r) => r.resource === '');
  t.same(nonResource.map((r) => r.path), [], 'no non-resource requests (nothing system:discovery would have to cover)');
  const calls = node.api.requests.filter((r) => r.resource !== '').map(callOf);
  const called = new Map(calls.map((c) => [key(c), c]));
  t.comment(`called: ${[...called.keys()].sort().join('; ')}`);

  for (const [name, c] of called) t.ok(rules.some((g) => grants(g, c)), `the agent called ${name}: granted`);
  for (const g of rules) {
    for (const grant of granted(g)) t.ok(calls.some((c) => sameCall(grant, c)), `${g.from} grants ${key(grant)}: the agent calls it`);
  }

  const recorded = new Set(calls.map((c) => `${c.verb} ${c.resource}`));
  const named = namedCalls();
  t.ok(named.length >= 8, `lib/ names the agent's API calls (${named.length} found)`);
  for (const n of named) t.ok(recorded.has(`${n.verb} ${n.resource}`), `${n.where} calls ${n.verb} ${n.resource}: the recorded session made it`);
});
