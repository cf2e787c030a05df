// The Event recorder (lib/agent/events.ts): core/v1 Events that validate
// against the Kubernetes schema, aggregation into a count patch, the spam
// filter, a bounded queue while the API is down, retries on 5xx, drops on
// 4xx, and a record() that never throws. Then the client-node sink, against
// a real HTTP server, with the real client.
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { CoreV1Api, KubeConfig, type CoreV1Event } from '@kubernetes/client-node';
import { Event } from 'kubernetes-models/v1/Event';
import t, { type Test } from 'tap';
import { AGGREGATION_WINDOW_MS, apiStatus, clientNodeEventSink, EVENT_REASONS, EventRecorder, MAX_MESSAGE_BYTES, truncateUtf8, type EventRecorderOptions, type EventSink, type ObjectRef } from '../../lib/agent/events.js';
import { createAgentLog } from '../../lib/agent/log.js';
import { AgentMetrics } from '../../lib/agent/metrics.js';

const PV: ObjectRef = { kind: 'PersistentVolume', name: 'fscrypt-local-pv-1a2b', uid: '5f0c7a4e-0000-4000-8000-000000000001' };
const NODE: ObjectRef = { kind: 'Node', name: 'node-1' };

type Call = { verb: 'create'; namespace: string; body: CoreV1Event } | { verb: 'patch'; namespace: string; name: string; body: Record<string, unknown> };
/** What the stub does on one call: answer, reject with an HTTP status or a network error, or throw at once. */
type Behaviour = 'ok' | number | 'network' | 'throw' | 'hang';

class StubSink implements EventSink {
  readonly calls: Call[] = [];
  /** Behaviours for the next calls, in order; then `otherwise`. */
  readonly script: Behaviour[] = [];
  otherwise: Behaviour = 'ok';

  #act<T>(call: Call, value: T): Promise<T> {
    this.calls.push(call);
    const behaviour = this.script.shift() ?? this.otherwise;
    if (behaviour === 'throw') throw new Error('sink bug');
    if (behaviour === 'ok') return Promise.resolve(value);
    if (behaviour === 'hang') return new Promise(() => {});
    if (behaviour === 'network') return Promise.reject(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }));
    return Promise.reject(Object.assign(new Error(`HTTP-Code: ${behaviour}`), { code: behaviour, body: '{"kind":"Status","reason":"Invalid"}' }));
  }

  create(namespace: string, body: CoreV1Event): Promise<CoreV1Event> {
    return this.#act({ verb: 'create', namespace, body: structuredClone(body) }, body);
  }

  patch(namespace: string, name: string, body: object): Promise<unknown> {
    return this.#act({ verb: 'patch', namespace, name, body: structuredClone(body) as Record<string, unknown> }, {});
  }

  creates(): CoreV1Event[] {
    return this.calls.filter((c) => c.verb === 'create').map((c) => c.body);
  }
}

function logLines(): { log: ReturnType<typeof createAgentLog>; text: () => string } {
  const chunks: string[] = [];
  const destination = new Writable({
    write(chunk, _encoding, done) {
      chunks.push(String(chunk));
      done();
    },
  });
  return { log: createAgentLog({ destination, level: 'debug' }), text: () => chunks.join('') };
}

interface Rig {
  sink: StubSink;
  recorder: EventRecorder;
  metrics: AgentMetrics;
  clock: { now: number };
  logText: () => string;
  dropped(reason: string): Promise<number>;
  apiErrors(verb: string, status: string): Promise<number>;
}

async function sample(metrics: AgentMetrics, series: string): Promise<number> {
  const line = (await metrics.metrics()).split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.slice(series.length + 1));
}

function rig(t: Test, options: Partial<EventRecorderOptions> = {}): Rig {
  const sink = new StubSink();
  const metrics = new AgentMetrics();
  const clock = { now: Date.parse('2026-03-01T12:00:00.000Z') };
  const { log, text } = logLines();
  const recorder = new EventRecorder({
    sink,
    namespace: 'fscrypt-local',
    component: 'fscrypt-local',
    host: 'node-1',
    log,
    metrics,
    now: () => new Date(clock.now),
    retry: { initialDelayMs: 1, maxDelayMs: 5, maxAttempts: 5 },
    ...options,
  });
  t.teardown(() => recorder.stop());
  return {
    sink,
    recorder,
    metrics,
    clock,
    logText: text,
    dropped: (reason) => sample(metrics, `fscrypt_local_events_dropped_total{reason="${reason}"}`),
    apiErrors: (verb, status) => sample(metrics, `fscrypt_local_api_errors_total{verb="${verb}",resource="events",status="${status}"}`),
  };
}

t.test('an Event is a valid core/v1 Event about the object, in the namespace, from this node', async (t) => {
  const { sink, recorder } = rig(t);
  recorder.record(PV, 'Normal', EVENT_REASONS.Prepared, 'generation 3 prepared on slot /mnt/disks/ssd0');
  t.equal(sink.calls.length, 0, 'record() does not call the API itself');
  await recorder.flush();
  t.equal(sink.calls.length, 1);
  const call = sink.calls[0]!;
  t.equal(call.namespace, 'fscrypt-local');
  const body = call.body as CoreV1Event;
  t.match(body.metadata.name, /^fscrypt-local-pv-1a2b\.[0-9a-f]{16}$/);
  t.equal(body.metadata.namespace, 'fscrypt-local');
  t.same(body.involvedObject, { apiVersion: 'v1', kind: 'PersistentVolume', name: PV.name, uid: PV.uid });
  t.match(body, {
    apiVersion: 'v1',
    kind: 'Event',
    reason: 'Prepared',
    message: 'generation 3 prepared on slot /mnt/disks/ssd0',
    type: 'Normal',
    source: { component: 'fscrypt-local', host: 'node-1' },
    reportingComponent: 'fscrypt-local',
    reportingInstance: 'node-1',
    count: 1,
  });
  t.equal(body.firstTimestamp?.toISOString(), '2026-03-01T12:00:00.000Z');
  t.equal(body.lastTimestamp?.toISOString(), '2026-03-01T12:00:00.000Z');
  // What the API server would store: the JSON the client sends, checked against the OpenAPI schema.
  const wire = JSON.parse(JSON.stringify(body)) as ConstructorParameters<typeof Event>[0];
  t.doesNotThrow(() => new Event(wire).validate(), 'valid against the Kubernetes schema');

  recorder.record(NODE, 'Warning', EVENT_REASONS.SlotRefused, 'slot /mnt/disks/ssd1 is not a mount point');
  await recorder.flush();
  const node = sink.creates()[1]!;
  t.same(node.involvedObject, { apiVersion: 'v1', kind: 'Node', name: 'node-1' }, 'no uid when none is known');
  t.match(node.metadata.name, /^node-1\.[0-9a-f]{16}$/);
  t.doesNotThrow(() => new Event(JSON.parse(JSON.stringify(node)) as ConstructorParameters<typeof Event>[0]).validate());
});

t.test('every reason is CamelCase and names itself', async (t) => {
  for (const [name, value] of Object.entries(EVENT_REASONS)) {
    t.equal(value, name);
    t.match(value, /^[A-Z][A-Za-z]+$/);
  }
  for (const reason of ['Prepared', 'Published', 'Locked', 'LockBusy', 'CryptoErased', 'SlotRefused', 'ConfigRejected']) t.ok(reason in EVENT_REASONS, reason);
});

t.test('the same Event again within 10 minutes raises the count of the one written: a merge patch, same name', async (t) => {
  const { sink, recorder, clock } = rig(t);
  recorder.record(PV, 'Warning', EVENT_REASONS.LockBusy, 'files open: pid 42 (postgres)');
  await recorder.flush();
  clock.now += 60_000;
  recorder.record(PV, 'Warning', EVENT_REASONS.LockBusy, 'files open: pid 42 (postgres)');
  await recorder.flush();
  t.equal(sink.calls.length, 2);
  const [create, patch] = sink.calls;
  t.equal(create!.verb, 'create');
  t.equal(patch!.verb, 'patch');
  if (patch!.verb !== 'patch' || create!.verb !== 'create') return;
  t.equal(patch!.name, create!.body.metadata.name, 'the same Event');
  t.same(patch!.body, { count: 2, lastTimestamp: '2026-03-01T12:01:00.000Z' });

  clock.now += AGGREGATION_WINDOW_MS + 1;
  recorder.record(PV, 'Warning', EVENT_REASONS.LockBusy, 'files open: pid 42 (postgres)');
  recorder.record(PV, 'Warning', EVENT_REASONS.LockBusy, 'files open: pid 43 (psql)');
  recorder.record(PV, 'Normal', EVENT_REASONS.LockBusy, 'files open: pid 42 (postgres)');
  await recorder.flush();
  const later = sink.calls.slice(2);
  t.same(later.map((c) => c.verb), ['create', 'create', 'create'], 'past the window, or with another message or type: a new Event');
  const names = new Set([create!.body.metadata.name, ...later.map((c) => (c.verb === 'create' ? c.body.metadata.name : ''))]);
  t.equal(names.size, 4, 'every Event has a name of its own');
});

t.test('occurrences that arrive before the first is sent go out as one Event with their count', async (t) => {
  const { sink, recorder, clock } = rig(t);
  recorder.record(PV, 'Normal', EVENT_REASONS.Published, 'published to pod default/web-0');
  clock.now += 1000;
  recorder.record(PV, 'Normal', EVENT_REASONS.Published, 'published to pod default/web-0');
  recorder.record(PV, 'Normal', EVENT_REASONS.Published, 'published to pod default/web-0');
  await recorder.flush();
  t.equal(sink.calls.length, 1);
  t.match(sink.creates()[0], { count: 3 });
  t.equal(sink.creates()[0]!.lastTimestamp?.toISOString(), '2026-03-01T12:00:01.000Z');
  t.equal(sink.creates()[0]!.firstTimestamp?.toISOString(), '2026-03-01T12:00:00.000Z');
});

t.test('an occurrence during the request that creates the Event becomes one more patch', async (t) => {
  const { sink, recorder } = rig(t);
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  const create = sink.create.bind(sink);
  sink.create = async (namespace, body) => {
    const answer = create(namespace, body);
    await gate;
    return answer;
  };
  recorder.record(PV, 'Normal', EVENT_REASONS.Locked, 'locked');
  await new Promise((resolve) => setImmediate(resolve));
  await new Promise((resolve) => setImmediate(resolve));
  t.equal(sink.calls.length, 1, 'the create is on its way');
  recorder.record(PV, 'Normal', EVENT_REASONS.Locked, 'locked');
  release();
  await recorder.flush();
  t.same(sink.calls.map((c) => c.verb), ['create', 'patch']);
  t.match(sink.calls[1]!.body, { count: 2 });
});

t.test('messages are cut to 1024 bytes, never inside a character', async (t) => {
  const { sink, recorder } = rig(t);
  const long = `${'a'.repeat(1021)}ééé`;
  recorder.record(PV, 'Warning', EVENT_REASONS.ReconcileFailed, long);
  await recorder.flush();
  const message = sink.creates()[0]!.message!;
  t.equal(message, `${'a'.repeat(1021)}é`, '1021 + 2 bytes: the next é would not fit');
  t.ok(Buffer.byteLength(message) <= MAX_MESSAGE_BYTES);
  t.equal(truncateUtf8('short', 10), 'short');
  t.equal(truncateUtf8('€€', 4), '€', 'a 3-byte character is kept whole or left out');
  t.equal(truncateUtf8('€', 2), '');
});

t.test('the spam filter: 25 Events of one object, then one more per 5 minutes; other objects unaffected', async (t) => {
  const { sink, recorder, clock, dropped } = rig(t);
  for (let i = 0; i < 30; i++) recorder.record(PV, 'Warning', EVENT_REASONS.ReconcileFailed, `attempt ${i}`);
  recorder.record(NODE, 'Warning', EVENT_REASONS.SlotRefused, 'bad metadata');
  await recorder.flush();
  t.equal(sink.creates().filter((e) => e.involvedObject.kind === 'PersistentVolume').length, 25);
  t.equal(sink.creates().filter((e) => e.involvedObject.kind === 'Node').length, 1);
  t.equal(await dropped('rate_limited'), 5);
  clock.now += 5 * 60_000;
  recorder.record(PV, 'Warning', EVENT_REASONS.ReconcileFailed, 'attempt 30');
  recorder.record(PV, 'Warning', EVENT_REASONS.ReconcileFailed, 'attempt 31');
  await recorder.flush();
  t.equal(sink.creates().filter((e) => e.involvedObject.kind === 'PersistentVolume').length, 26, 'one token back after 5 minutes');
  t.equal(await dropped('rate_limited'), 6);
});

t.test('while the API is down the queue stays bounded: the oldest Events go, counted; the rest arrive later', async (t) => {
  const { sink, recorder, dropped, logText } = rig(t, { queueLimit: 3, retry: { initialDelayMs: 1, maxDelayMs: 2, maxAttempts: 1000 } });
  sink.otherwise = 503;
  for (let i = 1; i <= 5; i++) recorder.record(PV, 'Normal', EVENT_REASONS.Published, `published to pod p${i}`);
  t.equal(await dropped('queue_full'), 2, 'two over the bound, dropped at once');
  t.match(logText(), /event queue full/);
  while (sink.calls.length < 5) await new Promise((resolve) => setTimeout(resolve, 2));
  sink.otherwise = 'ok';
  await recorder.flush();
  const delivered = [...new Set(sink.creates().map((e) => e.message))];
  t.same(delivered, ['published to pod p3', 'published to pod p4', 'published to pod p5'], 'the newest three, in order');
  t.equal(await dropped('retries_exhausted'), 0);
});

t.test('a 5xx or network error is retried with the same Event; the API errors are counted', async (t) => {
  const { sink, recorder, apiErrors } = rig(t);
  sink.script.push(500, 'network');
  recorder.record(PV, 'Normal', EVENT_REASONS.CryptoErased, 'generation 2 crypto-erased');
  await recorder.flush();
  t.equal(sink.calls.length, 3);
  const names = new Set(sink.creates().map((e) => e.metadata.name));
  t.equal(names.size, 1, 'each try sends the same name');
  t.equal(await apiErrors('create', '500'), 1);
  t.equal(await apiErrors('create', 'network'), 1);
});

t.test('retries end: after maxAttempts the Event is dropped and counted', async (t) => {
  const { sink, recorder, dropped, logText } = rig(t, { retry: { initialDelayMs: 1, maxDelayMs: 1, maxAttempts: 3 } });
  sink.otherwise = 'network';
  recorder.record(PV, 'Normal', EVENT_REASONS.Locked, 'locked');
  await recorder.flush();
  t.equal(sink.calls.length, 3);
  t.equal(await dropped('retries_exhausted'), 1);
  t.match(logText(), /event dropped: the API did not take it/);
});

t.test('a 4xx is not retried: dropped with a warning; the same Event later is created anew', async (t) => {
  const { sink, recorder, dropped, logText, apiErrors } = rig(t);
  sink.script.push(422);
  recorder.record(PV, 'Warning', EVENT_REASONS.ConfigRejected, 'storageClassMap.fast: hostDir must be absolute');
  await recorder.flush();
  t.equal(sink.calls.length, 1, 'one try only');
  t.equal(await dropped('rejected'), 1);
  t.equal(await apiErrors('create', '422'), 1);
  const warning = logText().split('\n').find((line) => line.includes('rejected by the API server'));
  t.match(JSON.parse(warning!), { level: 'warn', status: 422, reason: 'ConfigRejected' });
  recorder.record(PV, 'Warning', EVENT_REASONS.ConfigRejected, 'storageClassMap.fast: hostDir must be absolute');
  await recorder.flush();
  t.same(sink.calls.map((c) => c.verb), ['create', 'create'], 'not a patch of an Event that does not exist');
});

t.test('a 409 on create means an earlier try got through: later occurrences patch it', async (t) => {
  const { sink, recorder } = rig(t);
  sink.script.push(409);
  recorder.record(PV, 'Normal', EVENT_REASONS.Locked, 'locked');
  await recorder.flush();
  t.same(sink.calls.map((c) => c.verb), ['create', 'patch'], 'the count the server may lack is patched in');
  recorder.record(PV, 'Normal', EVENT_REASONS.Locked, 'locked');
  await recorder.flush();
  t.same(sink.calls.map((c) => c.verb), ['create', 'patch', 'patch']);
  t.match(sink.calls[2]!.body, { count: 2 });
});

t.test('a 404 on patch (the Event expired) writes it again with the count so far', async (t) => {
  const { sink, recorder } = rig(t);
  recorder.record(PV, 'Normal', EVENT_REASONS.Locked, 'locked');
  await recorder.flush();
  sink.script.push(404);
  recorder.record(PV, 'Normal', EVENT_REASONS.Locked, 'locked');
  await recorder.flush();
  t.same(sink.calls.map((c) => c.verb), ['create', 'patch', 'create']);
  const [first, again] = sink.creates();
  t.equal(again!.metadata.name, first!.metadata.name);
  t.equal(again!.count, 2);
});

t.test('record() never throws: not for a sink that throws at once, a broken clock, or odd input', async (t) => {
  const { sink, recorder, dropped } = rig(t, { retry: { initialDelayMs: 1, maxDelayMs: 1, maxAttempts: 2 } });
  sink.otherwise = 'throw';
  t.doesNotThrow(() => recorder.record(PV, 'Normal', EVENT_REASONS.Locked, 'locked'));
  await recorder.flush();
  t.equal(sink.calls.length, 2, 'a synchronous throw is retried like a network error');
  t.equal(await dropped('retries_exhausted'), 1);

  const { log, text } = logLines();
  const broken = new EventRecorder({
    sink,
    namespace: 'ns',
    component: 'fscrypt-local',
    host: 'node-1',
    log,
    now: () => {
      throw new Error('clock broke');
    },
  });
  t.doesNotThrow(() => broken.record(PV, 'Normal', EVENT_REASONS.Locked, 'locked'));
  t.doesNotThrow(() => recorder.record(undefined as unknown as ObjectRef, 'Normal', 'X' as never, 'y'));
  t.match(text(), /recording an event failed/);
  t.match(text(), /clock broke/);
  const throwing = (): never => {
    throw new Error('logger broke too');
  };
  const quiet = new StubSink();
  quiet.script.push(422);
  const silent = new EventRecorder({
    sink: quiet,
    namespace: 'ns',
    component: 'c',
    host: 'h',
    log: { debug: throwing, info: throwing, warn: throwing, error: throwing } as unknown as ReturnType<typeof createAgentLog>,
  });
  t.doesNotThrow(() => silent.record(PV, 'Warning', EVENT_REASONS.ConfigRejected, 'rejected, and its warning throws'));
  t.doesNotThrow(() => silent.record(undefined as unknown as ObjectRef, 'Normal', 'X' as never, 'y'), 'nor with a logger that throws');
  await silent.flush();
  silent.record(PV, 'Normal', EVENT_REASONS.Locked, 'the worker still runs');
  await silent.flush();
  t.same(quiet.calls.map((c) => c.body.message), ['rejected, and its warning throws', 'the worker still runs']);
  await broken.stop();
  await silent.stop();
});

t.test('stop() drains the queue, then refuses; with the API hanging it gives up after stopTimeoutMs', async (t) => {
  const { sink, recorder, dropped } = rig(t);
  recorder.record(PV, 'Normal', EVENT_REASONS.Locked, 'locked');
  await recorder.stop();
  t.equal(sink.calls.length, 1, 'what was queued went out');
  recorder.record(PV, 'Normal', EVENT_REASONS.Locked, 'again');
  await recorder.flush();
  t.equal(sink.calls.length, 1, 'nothing after stop');
  t.equal(await dropped('shutdown'), 1);

  const hanging = rig(t, { stopTimeoutMs: 20 });
  hanging.sink.otherwise = 'hang';
  hanging.recorder.record(PV, 'Normal', EVENT_REASONS.Locked, 'one');
  hanging.recorder.record(PV, 'Normal', EVENT_REASONS.Locked, 'two');
  const flushed = hanging.recorder.flush();
  await hanging.recorder.stop();
  await flushed;
  t.equal(await hanging.dropped('shutdown'), 2, 'the one on its way and the one queued');
  t.match(hanging.logText(), /events not sent were dropped/);

  const backingOff = rig(t, { stopTimeoutMs: 20, retry: { initialDelayMs: 60_000, maxDelayMs: 60_000, maxAttempts: 5 } });
  backingOff.sink.otherwise = 503;
  backingOff.recorder.record(PV, 'Normal', EVENT_REASONS.Locked, 'one');
  await backingOff.recorder.stop();
  t.equal(backingOff.sink.calls.length, 1, 'no retry after stop: the backoff timer was cleared');
  t.equal(await backingOff.dropped('shutdown'), 1);
});

t.test('apiStatus: the HTTP status of an ApiException, or network', async (t) => {
  t.equal(apiStatus(Object.assign(new Error('x'), { code: 503 })), 503);
  t.equal(apiStatus({ statusCode: 429 }), 429);
  t.equal(apiStatus(Object.assign(new Error('x'), { code: 'ECONNRESET' })), 'network');
  t.equal(apiStatus({ code: 42 }), 'network', 'not an HTTP status');
  t.equal(apiStatus(null), 'network');
  t.equal(apiStatus('boom'), 'network');
});

interface Received {
  method: string;
  url: string;
  contentType: string | undefined;
  body: Record<string, unknown>;
}

async function apiServer(t: Test, answer: (req: Received) => { status: number; body: unknown }): Promise<{ url: string; received: Received[] }> {
  const received: Received[] = [];
  const server = createServer((req: IncomingMessage, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      const got: Received = { method: req.method ?? '', url: req.url ?? '', contentType: req.headers['content-type'], body: text === '' ? {} : (JSON.parse(text) as Record<string, unknown>) };
      received.push(got);
      const { status, body } = answer(got);
      res.writeHead(status, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(body));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, received };
}

function coreApi(url: string): CoreV1Api {
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'fake', server: url, skipTLSVerify: true }],
    users: [{ name: 'agent', token: 'test-token' }],
    contexts: [{ name: 'fake', cluster: 'fake', user: 'agent' }],
    currentContext: 'fake',
  });
  return kc.makeApiClient(CoreV1Api);
}

t.test('clientNodeEventSink: POST to the namespace’s events, PATCH as a JSON merge patch', async (t) => {
  const { url, received } = await apiServer(t, (req) => ({ status: req.method === 'POST' ? 201 : 200, body: req.method === 'POST' ? req.body : { apiVersion: 'v1', kind: 'Event', metadata: { name: 'x' }, involvedObject: {} } }));
  const sink = clientNodeEventSink(coreApi(url));
  const created = await sink.create('fscrypt-local', {
    metadata: { name: 'pv-1.0123456789abcdef', namespace: 'fscrypt-local' },
    involvedObject: { kind: 'PersistentVolume', name: 'pv-1', apiVersion: 'v1' },
    reason: 'Prepared',
    message: 'm',
    type: 'Normal',
    firstTimestamp: new Date('2026-03-01T12:00:00.000Z'),
    count: 1,
  });
  t.equal(created.metadata.name, 'pv-1.0123456789abcdef', 'the created Event comes back');
  await sink.patch('fscrypt-local', 'pv-1.0123456789abcdef', { count: 2, lastTimestamp: '2026-03-01T12:01:00.000Z' });
  t.equal(received.length, 2);
  const [post, patch] = received;
  t.equal(post!.method, 'POST');
  t.equal(post!.url, '/api/v1/namespaces/fscrypt-local/events');
  t.match(post!.contentType, /^application\/json/);
  t.match(post!.body, { metadata: { name: 'pv-1.0123456789abcdef' }, reason: 'Prepared', firstTimestamp: '2026-03-01T12:00:00.000Z', count: 1 });
  t.equal(patch!.method, 'PATCH');
  t.equal(patch!.url, '/api/v1/namespaces/fscrypt-local/events/pv-1.0123456789abcdef');
  t.equal(patch!.contentType, 'application/merge-patch+json');
  t.same(patch!.body, { count: 2, lastTimestamp: '2026-03-01T12:01:00.000Z' });
});

t.test('the recorder over the real client: create, patch, a 500 retried, a 422 dropped, a refused connection retried', async (t) => {
  let failNext: number | undefined;
  const { url, received } = await apiServer(t, (req) => {
    if (failNext !== undefined) {
      const status = failNext;
      failNext = undefined;
      return { status, body: { kind: 'Status', apiVersion: 'v1', status: 'Failure', code: status, reason: status === 422 ? 'Invalid' : 'InternalError' } };
    }
    return { status: req.method === 'POST' ? 201 : 200, body: req.method === 'POST' ? req.body : { apiVersion: 'v1', kind: 'Event', metadata: { name: 'x' }, involvedObject: {} } };
  });
  const metrics = new AgentMetrics();
  const { log } = logLines();
  const recorder = new EventRecorder({ sink: clientNodeEventSink(coreApi(url)), namespace: 'fscrypt-local', component: 'fscrypt-local', host: 'node-1', log, metrics, retry: { initialDelayMs: 1, maxDelayMs: 2, maxAttempts: 5 } });
  t.teardown(() => recorder.stop());
  failNext = 500;
  recorder.record(PV, 'Normal', EVENT_REASONS.Published, 'published to pod default/web-0');
  await recorder.flush();
  recorder.record(PV, 'Normal', EVENT_REASONS.Published, 'published to pod default/web-0');
  await recorder.flush();
  t.same(received.map((r) => r.method), ['POST', 'POST', 'PATCH'], 'a 500, the retry, then the count patch');
  t.equal(received[2]!.contentType, 'application/merge-patch+json');
  t.match(received[2]!.body, { count: 2 });
  t.doesNotThrow(() => new Event(received[1]!.body as ConstructorParameters<typeof Event>[0]).validate(), 'what the server got is a valid Event');
  failNext = 422;
  recorder.record(PV, 'Warning', EVENT_REASONS.ConfigRejected, 'bad config');
  await recorder.flush();
  t.equal(received.length, 4, 'a 422 is not retried');
  t.equal(await sample(metrics, 'fscrypt_local_api_errors_total{verb="create",resource="events",status="500"}'), 1);
  t.equal(await sample(metrics, 'fscrypt_local_api_errors_total{verb="create",resource="events",status="422"}'), 1);
  t.equal(await sample(metrics, 'fscrypt_local_events_dropped_total{reason="rejected"}'), 1);

  // Nothing listens on a port of a server that was closed: client-node's network error.
  const closed = createServer();
  await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
  const deadUrl = `http://127.0.0.1:${(closed.address() as AddressInfo).port}`;
  await new Promise<void>((resolve) => closed.close(() => resolve()));
  const dead = new EventRecorder({ sink: clientNodeEventSink(coreApi(deadUrl)), namespace: 'ns', component: 'fscrypt-local', host: 'node-1', log, metrics, retry: { initialDelayMs: 1, maxDelayMs: 1, maxAttempts: 2 } });
  dead.record(NODE, 'Warning', EVENT_REASONS.SlotRefused, 'x');
  await dead.flush();
  t.equal(await sample(metrics, 'fscrypt_local_api_errors_total{verb="create",resource="events",status="network"}'), 2, 'two tries, both network errors');
  t.equal(await sample(metrics, 'fscrypt_local_events_dropped_total{reason="retries_exhausted"}'), 1);
  await dead.stop();
});
