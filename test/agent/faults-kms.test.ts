// The agent with a KMS key source whose plugin is slow (every answer 1.5 s
// late), stalled, then down (its socket gone), beside a class with a key file.
// An open protector needs no KMS call, so publishes of set-up slots go on;
// what needs the plugin (a new slot, the agent's restart) waits, answers
// UNAVAILABLE naming the plugin's socket (kubelet retries), is reported
// (Event, metric, one log line), and converges once the plugin is back. The
// key-file slot is never held up by the KMS one (invariant 9's spirit).
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import t from 'tap';
import { agentNode, CLASS, type AgentNode, type StartedAgent } from '../fixtures/agent/agent.js';
import { eventLines, keyOf, live, logLines, meta, metric, probe, publish, pvOf, unpublish } from '../fixtures/agent/agent-faults.js';
import { recordFigure } from '../fixtures/campaign/campaign.js';
import type { K8sObject } from '../fixtures/fake-apiserver/index.js';
import { failure } from '../fixtures/helpers.js';
import { startFakeKms } from '../fixtures/kms-plugin.js';
import { socketProxy } from '../fixtures/agent/socket-proxy.js';

const COMMAND = 'npx tap test/agent/faults-kms.test.ts';
const KMS_CLASS = 'kms-disks';
const TIMINGS = { configPeriodMs: 200, retry: { initialMs: 100, maxMs: 1000 }, informerRestart: { initialMs: 100, maxMs: 1000 } };

/** A slot of the KMS class: a directory elsewhere on the disk bound under its hostDir. */
function kmsSlot(t: Parameters<typeof agentNode>[0] & { teardown(fn: () => void): void }, node: AgentNode, name: string): string {
  const backing = join(node.fs.mountpoint, 'backing-kms', name);
  mkdirSync(backing, { recursive: true });
  const slot = join(node.fs.mountpoint, KMS_CLASS, name);
  mkdirSync(slot, { recursive: true });
  execFileSync('mount', ['--bind', backing, slot]);
  t.teardown(() => {
    try {
      execFileSync('umount', [slot], { stdio: 'ignore' });
    } catch {
      // gone with its filesystem
    }
  });
  return slot;
}

/** kubelet's loop: publish until OK, answering only UNAVAILABLE meanwhile; returns the codes it saw. */
async function publishRetrying(agent: StartedAgent, node: AgentNode, pv: K8sObject, target: string): Promise<string[]> {
  const seen: string[] = [];
  await node.until(`${meta(pv).name} published`, async () => {
    const error = await failure(() => publish(agent, node, pv, target));
    if (error.code === 'NO_ERROR') return true;
    seen.push(`${grpc.status[error.code as number]}: ${String(error.details)}`);
    return false;
  });
  return seen;
}

t.test('a KMS plugin slow, stalled, then down: set-up slots publish, new ones wait and are told, all converge', async (t) => {
  const node = await agentNode(t);
  const kms = await startFakeKms(t);
  const proxy = await socketProxy(t, kms.socket);
  node.api.put('storageclasses', { apiVersion: 'storage.k8s.io/v1', kind: 'StorageClass', metadata: { name: KMS_CLASS }, provisioner: 'kubernetes.io/no-provisioner', volumeBindingMode: 'WaitForFirstConsumer', reclaimPolicy: 'Delete' });
  const kmsDir = join(node.fs.mountpoint, KMS_CLASS);
  const ssd0 = node.addSlot('ssd0');
  const k0 = kmsSlot(t, node, 'k0');
  node.writeConfig({
    storageClassMap: `${CLASS}:\n  hostDir: ${node.hostDir}\n  fscrypt:\n    keySource: file:${node.kek}\n${KMS_CLASS}:\n  hostDir: ${kmsDir}\n  fscrypt:\n    keySource: kms:${proxy.socket}\n`,
  });
  let agent = await node.start({ timings: TIMINGS });
  await node.until('ready', () => agent.running.agent.readiness().ok);
  const [pvFile, pvKms] = [await pvOf(node, ssd0), await pvOf(node, k0)];
  const kmsTarget = await node.kubelet.newTarget(meta(pvKms).name);
  await publish(agent, node, pvKms, kmsTarget);
  await writeFile(join(kmsTarget, 'rows'), 'sealed by the KMS');
  await unpublish(agent, pvKms, kmsTarget);

  // Stalled: nothing passes. A new KMS slot's set-up waits; the set-up slots of both classes publish meanwhile.
  proxy.pause();
  const calls = () => kms.calls.status + kms.calls.encrypt + kms.calls.decrypt;
  const k1 = kmsSlot(t, node, 'k1');
  await node.until('k1 discovered', () => agent.running.agent.status().slots.find((s) => s.root === k1));
  const fileTarget = await publish(agent, node, pvFile);
  await publish(agent, node, pvKms, kmsTarget);
  t.equal(await readFile(join(kmsTarget, 'rows'), 'utf8'), 'sealed by the KMS', 'an open protector needs no KMS call: the KMS slot publishes');
  t.not(agent.running.agent.status().slots.find((s) => s.root === k1)?.condition, 'ready', 'while the new KMS slot waits for the plugin');
  await unpublish(agent, pvKms, kmsTarget);
  await unpublish(agent, pvFile, fileTarget);

  // Slow: every answer 1.5 s late (a set-up's calls take seconds, each inside its 3 s deadline). The new slot gets its PV.
  const slowFrom = calls();
  proxy.delay(1500);
  proxy.resume();
  await pvOf(node, k1);
  // The agent restarts under the slow plugin: kubelet's publishes are UNAVAILABLE until the protector is open, never NOT_FOUND.
  await agent.stop();
  agent = await node.start({ timings: TIMINGS });
  const fileCodes = await publishRetrying(agent, node, pvFile, await node.kubelet.newTarget(meta(pvFile).name));
  t.not(agent.running.agent.status().slots.find((s) => s.root === k0)?.condition, 'ready', 'the key-file slot published while the KMS slot was still opening: not held up by it');
  const kmsCodes = await publishRetrying(agent, node, pvKms, kmsTarget);
  // In the agent's first instants a slot is discovered but not yet listed, then listed while it opens: UNAVAILABLE both times (kubelet retries), never NOT_FOUND.
  t.ok(fileCodes.every((c) => /^UNAVAILABLE: .*(is still starting|is not open yet \(the agent is opening its protector)/.test(c)), `the key-file slot: only start-up answers before OK (${fileCodes.length})`);
  t.ok(kmsCodes.every((c) => /^UNAVAILABLE: .*the key source of slot .*k0 is not open yet \(the agent is opening its protector/.test(c)), `the KMS slot is UNAVAILABLE "not open yet" before OK, never NOT_FOUND (${kmsCodes.length} retries)`);
  t.equal(await readFile(join(kmsTarget, 'rows'), 'utf8'), 'sealed by the KMS', 'published after a slow unwrap');
  await unpublish(agent, pvKms, kmsTarget);
  const slowCalls = calls() - slowFrom;
  proxy.delay(0);

  // Down: the socket is gone. A new slot waits and is reported; after a restart the KMS slot cannot be opened.
  await proxy.down();
  const k2 = kmsSlot(t, node, 'k2');
  const told = await node.until('a ReconcileFailed event for k2', () => eventLines(node).find((e) => e.startsWith(`ReconcileFailed: slot ${KMS_CLASS}/k2:`)));
  t.match(told, new RegExp(`the KMS plugin at '${proxy.socket}' failed Status: (UNAVAILABLE|DEADLINE_EXCEEDED after 3000 ms)\\. The socket does not exist: is the plugin running, and is the path right\\? \\(retrying with backoff\\)`), 'the Event names the plugin socket and says it retries');
  await agent.stop();
  agent = await node.start({ timings: TIMINGS });
  await node.until('ready although the KMS slots cannot be opened', () => agent.running.agent.readiness().ok);
  const fileAgain = await publish(agent, node, pvFile);
  t.ok(fileAgain, 'the key-file slot publishes');
  await unpublish(agent, pvFile, fileAgain);
  const refused = await failure(() => publish(agent, node, pvKms, kmsTarget));
  t.equal(grpc.status[refused.code as number], 'UNAVAILABLE', 'a publish of the KMS slot is UNAVAILABLE: kubelet retries');
  t.match(refused.details, new RegExp(`the key source of slot ${k0} is not open yet \\(the KMS plugin at '${proxy.socket}' failed Status: .*The socket does not exist.*\\); kubelet retries`), 'naming the plugin socket');
  t.equal(await keyOf(k0), 'absent', 'no key added');
  const metrics = await node.until('the errors counted', async () => {
    const text = (await probe(agent, '/metrics')).body;
    return (metric(text, 'fscrypt_local_errors_total', { operation: 'reconcile', code: 'ERR_KEY_SOURCE' }) ?? 0) >= 2 && (metric(text, 'fscrypt_local_volumes', { state: 'pending' }) ?? 0) >= 2 ? text : undefined;
  }, 30_000);
  const keySourceErrors = metric(metrics, 'fscrypt_local_errors_total', { operation: 'reconcile', code: 'ERR_KEY_SOURCE' })!;
  t.ok((metric(metrics, 'fscrypt_local_slot_problems') ?? 0) >= 2, 'the slot-problems gauge counts the KMS slots');
  await node.until('both KMS slots say why they wait', () => agent.running.agent.status().slots.filter((s) => s.problem?.includes(proxy.socket)).length >= 2);
  const warned = logLines(agent).filter((l) => l.level === 'warn' && String(l.err).includes(proxy.socket));
  t.ok(warned.length >= 1 && warned.length <= 3, `one warning per KMS slot, not one per retry (${warned.length})`);

  // Back: everything converges.
  await proxy.up();
  await publishRetrying(agent, node, pvKms, kmsTarget);
  t.equal(await readFile(join(kmsTarget, 'rows'), 'utf8'), 'sealed by the KMS', 'the data is there once the plugin is back');
  await unpublish(agent, pvKms, kmsTarget);
  t.equal(await keyOf(k0), 'absent');
  await pvOf(node, k2);
  t.equal(live(node).length, 4, 'one PV per slot');
  for (const slot of [ssd0, k0, k1, k2]) t.equal((await pvOf(node, slot)) !== undefined, true, `${slot} has its PV`);
  await node.until('the recovery logged', () => logLines(agent).some((l) => l.slot === `${KMS_CLASS}/k0` && /^slot reconcile works again, after \d+ failure\(s\)$/.test(l.msg)));
  t.notOk(agent.running.agent.status().slots.some((s) => s.problem !== undefined), 'no slot has a problem left');
  node.api.assertNoInvalidWrites(t);
  recordFigure({ area: 'faults', name: 'KMS plugin slow: calls answered 1.5 s late', value: slowCalls, command: COMMAND });
  recordFigure({ area: 'faults', name: 'KMS plugin down: key-source failures', value: keySourceErrors, command: COMMAND });
});
