// The agent against an API server that fails for a long stretch (every
// request answered 500, watches cut), and one that is slow or does not answer
// at all, while kubelet publishes and unpublishes and a tenant releases a
// volume. CSI never needs the API server (invariant 9's spirit): publishes
// and unpublishes go on; reclaims wait and then complete once, with one PV
// per slot; /healthz, /readyz, the informer-age gauge and the log say what
// is wrong, the log once per outage and not once per retry.
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { slotStatus } from '../../lib/volume/index.js';
import { agentNode, defaultConfig } from '../fixtures/agent/agent.js';
import { eventLines, keyOf, live, logLines, meta, metric, probe, publish, pvOf, pvsOfSlot, unpublish } from '../fixtures/agent/agent-faults.js';
import { recordFigure } from '../fixtures/campaign/campaign.js';

const COMMAND = 'npx tap test/agent/faults-api.test.ts';
// Short agent timings, so that a "long" outage is many consecutive failures in seconds.
const TIMINGS = { configPeriodMs: 200, retry: { initialMs: 100, maxMs: 500 }, informerRestart: { initialMs: 100, maxMs: 500 }, informerStaleAfterMs: 1500 };
const OUTAGE_ATTEMPTS = 25;

t.test('500s and cut watches for a long stretch: CSI works, the reclaim waits, then completes once; the outage is told once', async (t) => {
  const node = await agentNode(t);
  const [a, b] = [node.addSlot('ssd0'), node.addSlot('ssd1')];
  node.writeConfig(defaultConfig(node.kek, node.hostDir));
  const agent = await node.start({ timings: { ...TIMINGS, apiTimeoutMs: 2000 } });
  await node.until('ready', () => agent.running.agent.readiness().ok);
  const [pvA, pvB] = [await pvOf(node, a), await pvOf(node, b)];
  node.api.bind(meta(pvA).name, { namespace: 'default', name: 'db-0' });
  node.api.bind(meta(pvB).name, { namespace: 'default', name: 'cache-0' });
  await node.until('both claims recorded', async () => (await slotStatus(a)).volume?.claimed && (await slotStatus(b)).volume?.claimed);
  const generationB = (await slotStatus(b)).volume!.generation;

  // The outage: every request fails, every open watch is cut; meanwhile B's claim is deleted.
  const before = node.api.requests.length;
  node.api.failNext({ status: 500, count: Infinity, message: 'etcdserver: request timed out' });
  node.api.dropWatches({ reset: true });
  node.api.release(meta(pvB).name);

  // kubelet goes on: publish, write, unpublish (the key leaves), and publish again for good.
  const first = await publish(agent, node, pvA);
  await writeFile(join(first, 'rows'), 'written during the outage');
  await unpublish(agent, pvA, first);
  t.equal(await keyOf(a), 'absent', 'an unpublish during the outage takes the key out');
  const second = await publish(agent, node, pvA);
  t.equal(await readFile(join(second, 'rows'), 'utf8'), 'written during the outage', 'a publish during the outage serves the data');

  const failedLists = () => node.api.requests.slice(before).filter((r) => r.resource === 'persistentvolumes' && (r.verb === 'list' || r.verb === 'watch') && r.status === 500).length;
  await node.until(`${OUTAGE_ATTEMPTS} consecutive failed lists`, () => failedLists() >= OUTAGE_ATTEMPTS);
  t.equal((await slotStatus(b)).volume!.generation, generationB, 'the release waits: nothing is erased on a stale view');

  const health = await probe(agent, '/healthz?verbose');
  t.equal(health.status, 200, 'liveness stays ok: a restart would not cure the API server, and would stop CSI meanwhile');
  t.match(health.body, /informer is stale: nothing heard from the API server for \d+ s, \d+ attempt\(s\) failed \(last: the API server answered: HTTP 500 InternalError: etcdserver: request timed out\); CSI keeps serving, reclaims wait, and the agent retries/, '/healthz?verbose says the informer is stale, and what goes on');
  const ready = await probe(agent, '/readyz');
  t.equal(ready.status, 503);
  t.match(ready.body, /PersistentVolumes not listed yet \(is the API server reachable\?\)/, '/readyz says why');
  const age = metric((await probe(agent, '/metrics')).body, 'fscrypt_local_informer_age_seconds');
  t.ok(age !== undefined && age >= 1, `the informer-age gauge is read at scrape time (${age} s)`);

  const failed = node.api.clearFaults();
  const next = await node.until('B reclaimed once the API server is back', async () => {
    const pvs = await pvsOfSlot(node, b);
    return pvs.length === 1 && meta(pvs[0]!).name !== meta(pvB).name ? pvs[0] : undefined;
  });
  await node.until('the released PV gone', () => node.api.get('persistentvolumes', meta(pvB).name) === undefined);
  t.equal(Number(meta(next).annotations['fscrypt-local.github.io/generation']), generationB + 1, 'B has a new generation');
  t.equal(live(node).length, 2, 'one PV per slot, no duplicate');
  t.same(node.pvs().map((pv) => meta(pv).name).sort(), [meta(pvA).name, meta(next).name].sort(), 'A keeps its PV');
  t.equal(await readFile(join(second, 'rows'), 'utf8'), 'written during the outage', 'A stays published across the outage');
  await unpublish(agent, pvA, second);
  t.equal(await keyOf(a), 'absent');

  const lines = logLines(agent);
  const outage = lines.filter((l) => l.level === 'warn' && /PersistentVolume/.test(l.msg));
  t.equal(outage.length, 1, `the outage is logged once, not at each of ${failedLists()} retries`);
  t.match(outage[0]?.msg, /failed; (restarting it|retrying)\. Until it works again, CSI publishes and unpublishes go on, and reclaims of released volumes wait; .*Check the API server/, 'in words that say what goes on and what to check');
  const recovered = lines.filter((l) => /^the PersistentVolume watch works again, after (\d+) failed attempt\(s\) over \d+ s$/.test(l.msg));
  t.equal(recovered.length, 1, 'and once when it recovers');
  t.ok(Number(recovered[0]?.attempts) >= OUTAGE_ATTEMPTS, `with the count of failed attempts (${recovered[0]?.attempts})`);
  t.notMatch((await probe(agent, '/healthz?verbose')).body, /stale/, 'the note is gone');
  await node.until('the Events written once the API server is back', () => eventLines(node).some((e) => /^CryptoErased: vol-1 of slot fast-disks\/ssd1 was crypto-erased/.test(e)));
  node.api.assertNoInvalidWrites(t);
  recordFigure({ area: 'faults', name: 'API server 500s and cut watches: failed requests injected', value: failed, command: COMMAND });
});

t.test('a slow API server (every answer 2 s late) and one that does not answer: the reclaim completes, one PV, told', async (t) => {
  const node = await agentNode(t);
  const [a, b] = [node.addSlot('ssd0'), node.addSlot('ssd1')];
  node.writeConfig(defaultConfig(node.kek, node.hostDir));
  const agent = await node.start({ timings: { ...TIMINGS, informerStaleAfterMs: 30_000, apiTimeoutMs: 3000 } });
  await node.until('ready', () => agent.running.agent.readiness().ok);
  const [pvA, pvB] = [await pvOf(node, a), await pvOf(node, b)];
  node.api.bind(meta(pvA).name, { namespace: 'default', name: 'db-0' });
  node.api.bind(meta(pvB).name, { namespace: 'default', name: 'cache-0' });
  await node.until('both claims recorded', async () => (await slotStatus(a)).volume?.claimed && (await slotStatus(b)).volume?.claimed);

  // Slow: every answer 2 s late, within the agent's 3 s deadline.
  let start = node.api.requests.length;
  node.api.setLatency(2000);
  const target = await publish(agent, node, pvA);
  await writeFile(join(target, 'rows'), 'kept');
  await unpublish(agent, pvA, target);
  t.equal(await keyOf(a), 'absent', 'publish and unpublish do not wait for the API server');
  node.api.release(meta(pvB).name);
  const pvB2 = await node.until('B reclaimed while slow', async () => {
    const pvs = await pvsOfSlot(node, b);
    return pvs.length === 1 && meta(pvs[0]!).name !== meta(pvB).name ? pvs[0] : undefined;
  });
  const slowAnswers = node.api.requests.length - start;

  // Hung: a PV create that is not answered within the deadline (the API server applies it later, as a real one may).
  node.api.setLatency(0);
  node.api.bind(meta(pvB2).name, { namespace: 'default', name: 'cache-1' });
  await node.until('the claim recorded', async () => (await slotStatus(b)).volume?.claimed);
  start = node.api.requests.length;
  node.api.setLatency(8000, { method: 'POST', path: /\/persistentvolumes$/ });
  node.api.release(meta(pvB2).name);
  const failed = await node.until('a ReconcileFailed event for the timeout', () => eventLines(node).find((e) => /^ReconcileFailed: slot fast-disks\/ssd1: create PersistentVolume .*: no answer from the API server within 3 s/.test(e)));
  t.match(failed, /is it overloaded, or the connection to it broken\?.*retrying/, 'the Event says what is wrong and that it retries');
  node.api.setLatency(0);
  const pvB3 = await node.until('B reclaimed after the hang', async () => {
    const pvs = await pvsOfSlot(node, b);
    return pvs.length === 1 && ![meta(pvB).name, meta(pvB2).name].includes(meta(pvs[0]!).name) ? pvs[0] : undefined;
  });
  // Every create the agent sent has been answered (the delayed one too) before the PVs are counted.
  const creates = async () => metric((await probe(agent, '/metrics')).body, 'fscrypt_local_api_requests_total', { verb: 'create', resource: 'persistentvolumes' }) ?? 0;
  const answered = () => node.api.requests.slice(start).filter((r) => r.method === 'POST' && r.resource === 'persistentvolumes').length;
  const sent = await creates();
  await node.until('every create answered', () => node.api.requests.filter((r) => r.method === 'POST' && r.resource === 'persistentvolumes').length >= sent, 30_000);
  t.ok(answered() >= 2, `the hung create and its retry both reached the API server (${answered()})`);
  t.same((await pvsOfSlot(node, b)).map((pv) => meta(pv).name), [meta(pvB3).name], 'one PV for B: the late create of the same name was refused (AlreadyExists) or was the one');
  t.equal(live(node).length, 2, 'one PV per slot');
  const timeouts = logLines(agent).filter((l) => l.level === 'warn' && /no answer from the API server within 3 s/.test(String(l.err)));
  t.ok(timeouts.length >= 1 && timeouts.length <= 2, `the timeout is logged when it starts, not at every retry (${timeouts.length})`);
  t.match(logLines(agent).find((l) => /^slot reconcile works again, after \d+ failure\(s\)$/.test(l.msg)), { slot: 'fast-disks/ssd1' }, 'and the recovery too');
  node.api.assertNoInvalidWrites(t);
  recordFigure({ area: 'faults', name: 'API server slow: answers delayed 2 s', value: slowAnswers, command: COMMAND });
  recordFigure({ area: 'faults', name: 'API server hung: PV creates unanswered past the deadline', value: answered() - 1, command: COMMAND });
});
