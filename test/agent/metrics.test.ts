// The agent's metrics (lib/agent/metrics.ts): every metric in the exposition
// text with its labels, the invariant-2 gauge, and labels that stay bounded
// whatever a caller passes.
import t from 'tap';
import { register as globalRegistry } from 'prom-client';
import { AgentMetrics, MAX_LABEL_VALUES, OTHER_LABEL } from '../../lib/agent/metrics.js';

/** The samples of the exposition text: name{labels} -> value. */
function samples(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    out.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return out;
}

t.test('every metric is exposed, with its labels and type', async (t) => {
  const metrics = new AgentMetrics();
  metrics.observeHook('prepare', 0.2, 'ok');
  metrics.observeHook('lock', 3, 'error');
  metrics.lockRetry();
  metrics.lockRetry();
  metrics.countError('lock', 'ERR_FILES_BUSY');
  metrics.countApiRequest('create', 'persistentvolumes');
  metrics.countApiError('create', 'persistentvolumes', 409);
  metrics.countApiError('watch', 'persistentvolumes', 'network');
  metrics.countEventDropped('queue_full');
  metrics.setVolumeStates({ available: 2, bound: 1 });
  metrics.setSlotProblems(1);
  metrics.setInformerAge(12.5);
  const text = await metrics.metrics();
  const s = samples(text);
  t.equal(s.get('fscrypt_local_hook_duration_seconds_count{hook="prepare",outcome="ok"}'), 1);
  t.equal(s.get('fscrypt_local_hook_duration_seconds_sum{hook="lock",outcome="error"}'), 3);
  t.equal(s.get('fscrypt_local_hook_duration_seconds_bucket{le="0.25",hook="prepare",outcome="ok"}'), 1);
  t.equal(s.get('fscrypt_local_hook_duration_seconds_bucket{le="2.5",hook="lock",outcome="error"}'), 0);
  t.equal(s.get('fscrypt_local_hook_duration_seconds_bucket{le="+Inf",hook="lock",outcome="error"}'), 1);
  t.equal(s.get('fscrypt_local_lock_retries_total'), 2);
  t.equal(s.get('fscrypt_local_errors_total{operation="lock",code="ERR_FILES_BUSY"}'), 1);
  t.equal(s.get('fscrypt_local_api_requests_total{verb="create",resource="persistentvolumes"}'), 1);
  t.equal(s.get('fscrypt_local_api_errors_total{verb="create",resource="persistentvolumes",status="409"}'), 1);
  t.equal(s.get('fscrypt_local_api_errors_total{verb="watch",resource="persistentvolumes",status="network"}'), 1);
  t.equal(s.get('fscrypt_local_events_dropped_total{reason="queue_full"}'), 1);
  t.equal(s.get('fscrypt_local_volumes{state="available"}'), 2);
  t.equal(s.get('fscrypt_local_volumes{state="bound"}'), 1);
  t.equal(s.get('fscrypt_local_slot_problems'), 1);
  t.equal(s.get('fscrypt_local_informer_age_seconds'), 12.5);
  t.equal(s.get('fscrypt_local_keys_without_target'), 0);
  for (const [name, type] of [
    ['hook_duration_seconds', 'histogram'],
    ['lock_retries_total', 'counter'],
    ['errors_total', 'counter'],
    ['api_requests_total', 'counter'],
    ['api_errors_total', 'counter'],
    ['events_dropped_total', 'counter'],
    ['volumes', 'gauge'],
    ['keys_without_target', 'gauge'],
    ['slot_problems', 'gauge'],
    ['informer_age_seconds', 'gauge'],
  ] as const) {
    t.match(text, new RegExp(`^# HELP fscrypt_local_${name} \\S`, 'm'), `${name} has help`);
    t.match(text, new RegExp(`^# TYPE fscrypt_local_${name} ${type}$`, 'm'), `${name} is a ${type}`);
  }
  t.match(metrics.contentType, /^text\/plain; version=0\.0\.4/);
});

t.test('process and event-loop metrics are there, prefixed, on a registry of its own', async (t) => {
  const metrics = new AgentMetrics();
  const s = samples(await metrics.metrics());
  t.ok(s.has('fscrypt_local_process_resident_memory_bytes'), 'RSS');
  t.ok(s.has('fscrypt_local_nodejs_eventloop_lag_seconds'), 'event loop lag');
  t.notOk((await globalRegistry.metrics()).includes('fscrypt_local_'), 'nothing on the global registry');
  const other = new AgentMetrics({ prefix: 'other_' });
  other.lockRetry();
  metrics.lockRetry();
  metrics.lockRetry();
  t.equal(samples(await other.metrics()).get('other_lock_retries_total'), 1, 'a second instance counts alone');
  t.equal(samples(await metrics.metrics()).get('fscrypt_local_lock_retries_total'), 2);
  t.throws(() => new AgentMetrics({ prefix: 'bad-prefix' }), { code: 'ERR_INVALID_ARG' });
  t.throws(() => new AgentMetrics({ prefix: '9lives_' }), { code: 'ERR_INVALID_ARG' });
});

t.test('the keys-without-target gauge reads 0 from the first scrape, and what it is set to', async (t) => {
  const metrics = new AgentMetrics();
  t.equal(samples(await metrics.metrics()).get('fscrypt_local_keys_without_target'), 0, 'present and 0 before any report');
  metrics.setOrphanKeys(2);
  t.equal(samples(await metrics.metrics()).get('fscrypt_local_keys_without_target'), 2, 'a violation shows');
  metrics.setOrphanKeys(0);
  t.equal(samples(await metrics.metrics()).get('fscrypt_local_keys_without_target'), 0, 'and clears');
});

t.test('a volume state absent from a new count reads 0, not its old count', async (t) => {
  const metrics = new AgentMetrics();
  metrics.setVolumeStates({ available: 3, published: 1 });
  metrics.setVolumeStates({ available: 4 });
  const s = samples(await metrics.metrics());
  t.equal(s.get('fscrypt_local_volumes{state="available"}'), 4);
  t.equal(s.get('fscrypt_local_volumes{state="published"}'), 0);
});

t.test('hookTimer observes the time between its start and the outcome', async (t) => {
  const metrics = new AgentMetrics();
  const done = metrics.hookTimer('unlock');
  await new Promise((resolve) => setTimeout(resolve, 20));
  done('ok');
  metrics.hookTimer('unlock')('error');
  const s = samples(await metrics.metrics());
  t.equal(s.get('fscrypt_local_hook_duration_seconds_count{hook="unlock",outcome="ok"}'), 1);
  t.equal(s.get('fscrypt_local_hook_duration_seconds_count{hook="unlock",outcome="error"}'), 1);
  t.ok(s.get('fscrypt_local_hook_duration_seconds_sum{hook="unlock",outcome="ok"}')! > 0, 'a duration was measured');
});

t.test('a label value that is not of a bounded set is counted as "other"', async (t) => {
  const metrics = new AgentMetrics();
  metrics.countError('publish', '/var/lib/kubelet/pods/x/volumes');
  metrics.countError('publish pod-a', 'EIO');
  metrics.setVolumeStates({ 'has space': 1, '': 1 });
  const text = await metrics.metrics();
  t.notMatch(text, /kubelet|pod-a|has space/, 'no path, name or free text in the output');
  const s = samples(text);
  t.equal(s.get(`fscrypt_local_errors_total{operation="publish",code="${OTHER_LABEL}"}`), 1);
  t.equal(s.get(`fscrypt_local_errors_total{operation="${OTHER_LABEL}",code="EIO"}`), 1);
  t.equal(s.get(`fscrypt_local_volumes{state="${OTHER_LABEL}"}`), 2, 'folded values add up');

});

t.test('a label takes at most MAX_LABEL_VALUES distinct values, then "other"', async (t) => {
  const metrics = new AgentMetrics();
  for (let i = 0; i < MAX_LABEL_VALUES + 10; i++) metrics.countError('prepare', `CODE_${i}`);
  const codes = [...samples(await metrics.metrics()).keys()].filter((k) => k.startsWith('fscrypt_local_errors_total{'));
  t.equal(codes.length, MAX_LABEL_VALUES + 1, `${MAX_LABEL_VALUES} values and "other"`);
  t.equal(samples(await metrics.metrics()).get(`fscrypt_local_errors_total{operation="prepare",code="${OTHER_LABEL}"}`), 10);
  metrics.countError('prepare', 'CODE_0');
  t.equal(samples(await metrics.metrics()).get('fscrypt_local_errors_total{operation="prepare",code="CODE_0"}'), 2, 'a value seen before keeps its series');
});
