// The fake API server (test/fixtures/fake-apiserver/index.ts), proven with the
// real @kubernetes/client-node 1.4.0 over HTTP: what the agent's tests rely
// on must behave as the real API server does. The client's own behaviour on
// each fault is pinned here too, because the agent has to code around it.
// The informer (ListWatch) of 1.4.0:
//  - a watch that ends cleanly is re-opened at once from the last
//    resourceVersion (no re-list, no backoff);
//  - a 410 (in-stream ERROR or HTTP) clears the resourceVersion: connect,
//    list, watch;
//  - anything else (a reset connection, the server down, a 500 on the list)
//    emits 'error' and stops for good: the agent must start() it again;
//  - it never asks for bookmarks, and its 30 s watch timeout is dead code
//    (the signal is overwritten), so a silently stalled watch is never noticed.
import {
  ApiException,
  CoreV1Api,
  KubernetesObjectApi,
  PatchStrategy,
  StorageV1Api,
  VersionApi,
  Watch,
  makeInformer,
  setHeaderOptions,
  type CoreV1Event,
  type KubernetesObject,
  type V1PersistentVolume,
} from '@kubernetes/client-node';
import t, { type Test } from 'tap';
import { startFakeApiServer, PV_PROTECTION, type FakeApiServer, type K8sObject } from '../fixtures/fake-apiserver/index.js';
import { jsonPatch, mergePatch } from '../fixtures/fake-apiserver/patch.js';
import { rejection } from '../fixtures/helpers.js';

const MERGE = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
const JSON_PATCH = setHeaderOptions('Content-Type', PatchStrategy.JsonPatch);

/** A node-local PV the real API server accepts. */
function localPv(name: string, labels: Record<string, string> = {}): V1PersistentVolume {
  return {
    metadata: { name, labels },
    spec: {
      capacity: { storage: '10Gi' },
      accessModes: ['ReadWriteOnce'],
      persistentVolumeReclaimPolicy: 'Delete',
      storageClassName: 'fscrypt-local',
      local: { path: `/mnt/disks/${name}/vol-1` },
      nodeAffinity: { required: { nodeSelectorTerms: [{ matchExpressions: [{ key: 'kubernetes.io/hostname', operator: 'In', values: ['node-a'] }] }] } },
    },
  };
}

/** The Status body a refused call carried (client-node gives it as a raw string). */
async function statusOf(call: Promise<unknown>): Promise<{ code: number; reason: string; message: string; details?: Record<string, unknown> }> {
  const error = await rejection(call);
  if (!(error instanceof ApiException)) throw error;
  const body = (typeof error.body === 'string' ? JSON.parse(error.body) : error.body) as { kind: string; code: number };
  t.equal(body.kind, 'Status');
  t.equal(body.code, error.code, 'the Status code is the HTTP code');
  return body as never;
}

/** Items pushed over time, and promises for the ones that satisfy a test (no timers: the tap timeout bounds a wait). */
class Collector<T> {
  readonly items: T[] = [];
  private waiters: { from: number; test: (item: T) => boolean; nth: number; resolve: (item: T) => void }[] = [];

  push = (item: T): void => {
    this.items.push(item);
    this.waiters = this.waiters.filter((w) => !this.settle(w));
  };

  /** Where "from now on" starts, for since(). */
  mark(): number {
    return this.items.length;
  }

  /** The nth item (default the first) at or after `from` for which `test` holds. */
  since(from: number, test: (item: T) => boolean, nth = 1): Promise<T> {
    return new Promise((resolve) => {
      const waiter = { from, test, nth, resolve };
      if (!this.settle(waiter)) this.waiters.push(waiter);
    });
  }

  /** The first item ever collected for which `test` holds. */
  find(test: (item: T) => boolean): Promise<T> {
    return this.since(0, test);
  }

  private settle(waiter: { from: number; test: (item: T) => boolean; nth: number; resolve: (item: T) => void }): boolean {
    const matching = this.items.slice(waiter.from).filter(waiter.test);
    if (matching.length < waiter.nth) return false;
    waiter.resolve(matching[waiter.nth - 1]!);
    return true;
  }
}

interface InformerEvent {
  verb: 'add' | 'update' | 'delete' | 'connect' | 'error';
  obj?: V1PersistentVolume;
  error?: unknown;
}

/** A PV informer as the agent builds it, with every callback recorded; stopped at teardown. */
function pvInformer(t: Test, server: FakeApiServer, labelSelector?: string) {
  const kc = server.kubeConfig();
  const core = kc.makeApiClient(CoreV1Api);
  const informer = makeInformer<V1PersistentVolume>(kc, '/api/v1/persistentvolumes', () => core.listPersistentVolume(labelSelector === undefined ? {} : { labelSelector }), labelSelector);
  const events = new Collector<InformerEvent>();
  for (const verb of ['add', 'update', 'delete'] as const) informer.on(verb, (obj) => events.push({ verb, obj }));
  informer.on('connect', () => events.push({ verb: 'connect' }));
  informer.on('error', (error) => events.push({ verb: 'error', error }));
  t.teardown(() => informer.stop());
  return { informer, events, core };
}

function named(verb: InformerEvent['verb'], name: string, test: (pv: V1PersistentVolume) => boolean = () => true) {
  return (e: InformerEvent) => e.verb === verb && e.obj?.metadata?.name === name && test(e.obj);
}

function names(objects: readonly KubernetesObject[]): string[] {
  return objects.map((o) => o.metadata!.name!).sort();
}

interface RawEvent {
  type: string;
  object: K8sObject & { code?: number; reason?: string };
}

/** A raw watch (client-node's Watch); its events and its end are collected. */
async function rawWatch(t: Test, server: FakeApiServer, path: string, query: Record<string, string>) {
  const events = new Collector<RawEvent>();
  const ended = new Collector<unknown>();
  const controller = await new Watch(server.kubeConfig()).watch(path, query, (type, object) => events.push({ type, object }), (error) => ended.push(error ?? 'clean'));
  t.teardown(() => controller.abort());
  return { events, ended };
}

t.test('PVs: create (Pending, with the pv-protection finalizer), the PV controller makes them Available, get, list, delete', async (t) => {
  const server = await startFakeApiServer(t);
  const core = server.kubeConfig().makeApiClient(CoreV1Api);
  const created = await core.createPersistentVolume({ body: localPv('pv-a') });
  t.equal(created.status?.phase, 'Pending', 'the create answer is Pending, as the create strategy sets it');
  t.same(created.metadata?.finalizers, [PV_PROTECTION], 'admission added the finalizer');
  t.match(created.metadata, { uid: /^[0-9a-f-]{36}$/, resourceVersion: /^\d+$/ });
  t.ok(created.metadata?.creationTimestamp instanceof Date, 'client-node deserializes the timestamp');
  t.equal(created.spec?.volumeMode, 'Filesystem', 'defaulted');

  const got = await core.readPersistentVolume({ name: 'pv-a' });
  t.equal(got.status?.phase, 'Available');
  t.ok(Number(got.metadata!.resourceVersion) > Number(created.metadata!.resourceVersion), 'the phase change is a write of its own');
  t.ok(got.status?.lastPhaseTransitionTime !== undefined, 'lastPhaseTransitionTime set on the phase change');

  const generated = await core.createPersistentVolume({ body: { ...localPv(''), metadata: { generateName: 'local-pv-' } } });
  t.match(generated.metadata?.name, /^local-pv-[bcdfghjklmnpqrstvwxz2456789]{5}$/);

  const duplicate = await statusOf(core.createPersistentVolume({ body: localPv('pv-a') }));
  t.match(duplicate, { code: 409, reason: 'AlreadyExists', message: 'persistentvolumes "pv-a" already exists', details: { name: 'pv-a', kind: 'persistentvolumes' } });
  const withRv = await statusOf(core.createPersistentVolume({ body: { ...localPv('pv-rv'), metadata: { name: 'pv-rv', resourceVersion: '1' } } }));
  t.match(withRv, { code: 400, message: /resourceVersion should not be set/ });

  const list = await core.listPersistentVolume();
  t.same(names(list.items), [generated.metadata!.name!, 'pv-a']);
  t.equal(list.metadata?.resourceVersion, server.resourceVersion);

  const deleted = await core.deletePersistentVolume({ name: 'pv-a' });
  t.ok(deleted.metadata?.deletionTimestamp !== undefined, 'the answer has the deletionTimestamp (the finalizer held it)');
  t.same(deleted.metadata?.finalizers, [PV_PROTECTION]);
  t.match(await statusOf(core.readPersistentVolume({ name: 'pv-a' })), { code: 404, reason: 'NotFound', message: 'persistentvolumes "pv-a" not found', details: { name: 'pv-a', kind: 'persistentvolumes' } });
  t.equal(server.get('persistentvolumes', 'pv-a'), undefined, 'pv-protection let an Available PV go');
  t.match(await statusOf(core.deletePersistentVolume({ name: 'pv-a' })), { code: 404 });

  t.same(
    server.requests.map((r) => [r.verb, r.resource, r.name ?? '', r.status]),
    [
      ['create', 'persistentvolumes', '', 201],
      ['get', 'persistentvolumes', 'pv-a', 200],
      ['create', 'persistentvolumes', '', 201],
      ['create', 'persistentvolumes', '', 409],
      ['create', 'persistentvolumes', '', 400],
      ['list', 'persistentvolumes', '', 200],
      ['delete', 'persistentvolumes', 'pv-a', 200],
      ['get', 'persistentvolumes', 'pv-a', 404],
      ['delete', 'persistentvolumes', 'pv-a', 404],
    ],
  );
  server.assertNoInvalidWrites(t);
});

t.test('a PV the real API server would reject is refused 422 Invalid, with causes, and recorded', async (t) => {
  const server = await startFakeApiServer(t);
  const core = server.kubeConfig().makeApiClient(CoreV1Api);
  const noPath = localPv('pv-bad');
  delete (noPath.spec!.local as { path?: string }).path;
  const schema = await statusOf(core.createPersistentVolume({ body: noPath }));
  t.match(schema, {
    code: 422,
    reason: 'Invalid',
    message: 'PersistentVolume "pv-bad" is invalid: spec.local.path: Required value',
    details: { name: 'pv-bad', kind: 'PersistentVolume', causes: [{ reason: 'FieldValueRequired', field: 'spec.local.path', message: 'Required value' }] },
  });

  const noAffinity = localPv('pv-free');
  delete noAffinity.spec!.nodeAffinity;
  delete noAffinity.spec!.capacity;
  const rules = await statusOf(core.createPersistentVolume({ body: noAffinity }));
  t.match(rules, { code: 422, message: 'PersistentVolume "pv-free" is invalid: [spec.capacity: Required value, spec.nodeAffinity: Required value: Local volume requires node affinity]' });

  const badLabel = await statusOf(core.createPersistentVolume({ body: localPv('pv-label', { 'fscrypt-local/slot': '/mnt/disks/ssd0' }) }));
  t.match(badLabel.details, { causes: [{ field: 'metadata.labels', reason: 'FieldValueInvalid' }] }, 'a path is no label value');
  const badQuantity = localPv('pv-size');
  badQuantity.spec!.capacity = { storage: 'ten gigs' };
  t.match(await statusOf(core.createPersistentVolume({ body: badQuantity })), { code: 422, details: { causes: [{ field: 'spec.capacity.storage' }] } });

  t.same(server.list('persistentvolumes'), [], 'nothing was stored');
  t.same(
    server.invalidWrites.map((w) => [w.resource, w.name, w.verb]),
    [
      ['persistentvolumes', 'pv-bad', 'create'],
      ['persistentvolumes', 'pv-free', 'create'],
      ['persistentvolumes', 'pv-label', 'create'],
      ['persistentvolumes', 'pv-size', 'create'],
    ],
  );

  // An update is validated too, against what may not change.
  await core.createPersistentVolume({ body: localPv('pv-ok') });
  const moved = await statusOf(core.patchPersistentVolume({ name: 'pv-ok', body: { spec: { local: { path: '/elsewhere' } } } }, MERGE));
  t.match(moved, { code: 422, details: { causes: [{ field: 'spec.persistentvolumesource', reason: 'FieldValueForbidden' }] } });
  t.equal(server.invalidWrites.at(-1)?.verb, 'patch');

  // What a test of correct code asserts: here it must fail.
  const recorded: unknown[] = [];
  server.assertNoInvalidWrites({
    teardown: () => {},
    fail: () => false,
    same: (found) => {
      recorded.push(found);
      return false;
    },
  });
  t.equal((recorded[0] as unknown[]).length, 5, 'assertNoInvalidWrites reports every invalid write');
});

t.test('label and field selectors on list, with the real grammar; a bad selector is 400', async (t) => {
  const server = await startFakeApiServer(t);
  const core = server.kubeConfig().makeApiClient(CoreV1Api);
  await core.createPersistentVolume({ body: localPv('pv-1', { class: 'fast', node: 'a' }) });
  await core.createPersistentVolume({ body: localPv('pv-2', { class: 'slow', node: 'a' }) });
  await core.createPersistentVolume({ body: localPv('pv-3', { class: 'fast' }) });
  const selected = async (labelSelector?: string, fieldSelector?: string) =>
    names((await core.listPersistentVolume({ ...(labelSelector === undefined ? {} : { labelSelector }), ...(fieldSelector === undefined ? {} : { fieldSelector }) })).items);
  t.same(await selected('class=fast'), ['pv-1', 'pv-3']);
  t.same(await selected('class==fast,node=a'), ['pv-1']);
  t.same(await selected('class!=fast'), ['pv-2']);
  t.same(await selected('node!=a'), ['pv-3'], '!= also selects objects without the label');
  t.same(await selected('class in (slow, medium)'), ['pv-2']);
  t.same(await selected('node notin (a)'), ['pv-3']);
  t.same(await selected('node'), ['pv-1', 'pv-2']);
  t.same(await selected('!node'), ['pv-3']);
  t.same(await selected(undefined, 'metadata.name=pv-2'), ['pv-2']);
  t.same(await selected('class=fast', 'metadata.name!=pv-1'), ['pv-3']);
  t.match(await statusOf(core.listPersistentVolume({ labelSelector: 'class=fast,' })), { code: 400, reason: 'BadRequest', message: /unable to parse requirement/ });
  t.match(await statusOf(core.listPersistentVolume({ labelSelector: 'bad key=x' })), { code: 400 });
  t.match(await statusOf(core.listPersistentVolume({ labelSelector: 'a=b c' })), { code: 400 });
  t.match(await statusOf(core.listPersistentVolume({ fieldSelector: 'spec.nodeName=a' })), { code: 400, message: 'field label not supported: spec.nodeName' });
  t.match(await statusOf(core.listPersistentVolume({ fieldSelector: 'metadata.name' })), { code: 400, message: /invalid selector/ });
});

t.test('the informer sees add, update and delete, and only what its label selector selects', async (t) => {
  const server = await startFakeApiServer(t);
  server.put('persistentvolumes', localPv('pv-before', { owner: 'agent' }));
  const { informer, events, core } = pvInformer(t, server, 'owner=agent');
  await informer.start();
  t.same(names(informer.list()), ['pv-before'], 'the initial list');

  await core.createPersistentVolume({ body: localPv('pv-new', { owner: 'agent' }) });
  await core.createPersistentVolume({ body: localPv('pv-other', { owner: 'someone-else' }) });
  const added = await events.find(named('add', 'pv-new'));
  t.equal(added.obj?.status?.phase, 'Pending', 'ADDED as created');
  const available = await events.find(named('update', 'pv-new', (pv) => pv.status?.phase === 'Available'));
  t.equal(typeof available.obj?.metadata?.creationTimestamp, 'string', 'watch objects are raw JSON: string timestamps (list ones are Dates)');

  await core.patchPersistentVolume({ name: 'pv-other', body: { metadata: { labels: { owner: 'agent' } } } }, MERGE);
  await events.find(named('add', 'pv-other'));
  t.pass('a label change into the selector arrives as ADDED');
  await core.patchPersistentVolume({ name: 'pv-before', body: { metadata: { labels: { owner: null } } } }, MERGE);
  await events.find(named('delete', 'pv-before'));
  t.pass('a label change out of it arrives as DELETED');
  await core.deletePersistentVolume({ name: 'pv-new' });
  await events.find(named('delete', 'pv-new'));
  t.same(names(informer.list()), ['pv-other']);
  t.equal(informer.get('pv-other')?.metadata?.resourceVersion, server.get('persistentvolumes', 'pv-other')?.metadata.resourceVersion, 'the cache is current');
  t.equal(server.requests.filter((r) => r.verb === 'list').length, 1, 'one list, then one watch throughout');
  t.equal(server.requests.filter((r) => r.verb === 'watch').length, 1);
  server.assertNoInvalidWrites(t);
});

t.test('a watch from a resourceVersion replays what came after it; without one it starts with the current objects', async (t) => {
  const server = await startFakeApiServer(t);
  const core = server.kubeConfig().makeApiClient(CoreV1Api);
  await core.createPersistentVolume({ body: localPv('pv-1') });
  const after = server.resourceVersion;
  await core.createPersistentVolume({ body: localPv('pv-2') });
  await core.patchPersistentVolume({ name: 'pv-1', body: { metadata: { labels: { touched: 'yes' } } } }, MERGE);

  const fromRv = await rawWatch(t, server, '/api/v1/persistentvolumes', { resourceVersion: after });
  await fromRv.events.find((e) => e.object.metadata.labels?.touched === 'yes');
  t.same(
    fromRv.events.items.map((e) => [e.type, e.object.metadata.name, e.object.status && (e.object.status as { phase: string }).phase]),
    [
      ['ADDED', 'pv-2', 'Pending'],
      ['MODIFIED', 'pv-2', 'Available'],
      ['MODIFIED', 'pv-1', 'Available'],
    ],
  );
  t.ok(fromRv.events.items.every((e) => e.object.kind === 'PersistentVolume' && e.object.apiVersion === 'v1'), 'watch objects carry kind and apiVersion');
  const revisions = fromRv.events.items.map((e) => Number(e.object.metadata.resourceVersion));
  t.same(revisions, [...revisions].sort((a, b) => a - b), 'in resourceVersion order');

  const fromNow = await rawWatch(t, server, '/api/v1/persistentvolumes', { fieldSelector: 'metadata.name=pv-2' });
  await fromNow.events.find((e) => e.type === 'ADDED');
  t.same(fromNow.events.items.map((e) => [e.type, e.object.metadata.name]), [['ADDED', 'pv-2']], 'synthetic ADDED for the current objects, through the selector');

  const selected = await rawWatch(t, server, '/api/v1/persistentvolumes', { resourceVersion: server.resourceVersion, labelSelector: 'touched=yes' });
  await core.patchPersistentVolume({ name: 'pv-2', body: { metadata: { labels: { touched: 'yes' } } } }, MERGE);
  await core.patchPersistentVolume({ name: 'pv-1', body: { metadata: { labels: { touched: 'no' } } } }, MERGE);
  await core.patchPersistentVolume({ name: 'pv-2', body: { metadata: { labels: { other: 'x' } } } }, MERGE);
  await selected.events.find((e) => e.object.metadata.labels?.other === 'x');
  t.same(
    selected.events.items.map((e) => [e.type, e.object.metadata.name]),
    [
      ['ADDED', 'pv-2'],
      ['DELETED', 'pv-1'],
      ['MODIFIED', 'pv-2'],
    ],
    'through a selector, changes into it are ADDED and out of it DELETED, as the watch cache sends them',
  );

  const timed = await rawWatch(t, server, '/api/v1/persistentvolumes', { resourceVersion: server.resourceVersion, timeoutSeconds: '1' });
  t.equal(await timed.ended.find(() => true), 'clean', 'timeoutSeconds ends the stream cleanly');
  t.match(await statusOf(core.listPersistentVolume({ watch: true, resourceVersion: 'abc' })), { code: 400 });
});

t.test('bookmarks arrive when asked for, carrying only the resourceVersion', async (t) => {
  const server = await startFakeApiServer(t, { bookmarkIntervalMs: 20 });
  const core = server.kubeConfig().makeApiClient(CoreV1Api);
  await core.createPersistentVolume({ body: localPv('pv-1') });
  const asked = await rawWatch(t, server, '/api/v1/persistentvolumes', { resourceVersion: server.resourceVersion, allowWatchBookmarks: 'true' });
  const bookmark = await asked.events.find((e) => e.type === 'BOOKMARK');
  t.same(bookmark.object, { kind: 'PersistentVolume', apiVersion: 'v1', metadata: { resourceVersion: server.resourceVersion } });

  const notAsked = await rawWatch(t, server, '/api/v1/persistentvolumes', { resourceVersion: server.resourceVersion });
  await core.createPersistentVolume({ body: localPv('pv-2') });
  await asked.events.find((e) => e.type === 'BOOKMARK' && Number(e.object.metadata.resourceVersion) > Number(bookmark.object.metadata.resourceVersion));
  await notAsked.events.find((e) => e.type === 'MODIFIED');
  t.notOk(notAsked.events.items.some((e) => e.type === 'BOOKMARK'), 'none without allowWatchBookmarks (client-node 1.4.0 never sends it)');
});

t.test('410 Expired: an expired watch makes the informer re-list, and its cache ends up right', async (t) => {
  const server = await startFakeApiServer(t);
  const before = server.put('persistentvolumes', localPv('pv-keep')).metadata.resourceVersion!;
  server.put('persistentvolumes', localPv('pv-gone'));
  const { informer, events } = pvInformer(t, server);
  await informer.start();

  const rewatched = server.nextRequest((r) => r.verb === 'watch');
  t.equal(server.expireWatches(), 1, 'the informer had one watch open');
  // Changed while the informer is not watching, and compacted away: only a re-list shows them.
  server.put('persistentvolumes', localPv('pv-new'));
  server.delete('persistentvolumes', 'pv-gone');
  await events.find(named('delete', 'pv-gone'));
  await events.find(named('add', 'pv-new'));
  await rewatched;
  t.same(names(informer.list()), ['pv-keep', 'pv-new']);
  t.same(
    server.requests.map((r) => r.verb),
    ['list', 'watch', 'list', 'watch'],
    'the in-stream 410 cleared its resourceVersion: connect, list, watch',
  );

  // A watch from a compacted resourceVersion gets the 410 in-stream, as the real server sends it.
  const stale = await rawWatch(t, server, '/api/v1/persistentvolumes', { resourceVersion: before });
  const error = await stale.events.find((e) => e.type === 'ERROR');
  t.match(error.object, { kind: 'Status', code: 410, reason: 'Expired', message: new RegExp(`^too old resource version: ${before} \\(\\d+\\)$`) });
  t.equal(await stale.ended.find(() => true), 'clean', 'then the stream ends');

  // An HTTP 410 on the watch request does the same.
  server.failNext({ status: 410, verb: 'watch' });
  const watchedAgain = server.nextRequest((r) => r.verb === 'watch' && r.status === 200);
  server.dropWatches();
  await watchedAgain;
  t.same(server.requests.slice(-3).map((r) => [r.verb, r.status]), [['watch', 410], ['list', 200], ['watch', 200]]);
  server.assertNoInvalidWrites(t);
});

t.test('dropped watches: a clean end makes the informer re-watch from where it was; a reset connection stops it', async (t) => {
  const server = await startFakeApiServer(t);
  server.put('persistentvolumes', localPv('pv-1'));
  const { informer, events, core } = pvInformer(t, server);
  await informer.start();

  const reconnected = server.nextRequest((r) => r.verb === 'watch');
  t.equal(server.dropWatches(), 1);
  await reconnected;
  await core.createPersistentVolume({ body: localPv('pv-2') });
  await events.find(named('add', 'pv-2'));
  const watches = server.requests.filter((r) => r.verb === 'watch');
  t.equal(watches.length, 2, 'watched again');
  t.equal(server.requests.filter((r) => r.verb === 'list').length, 1, 'without a re-list: it resumed from its resourceVersion');

  // client-node 1.4.0: a connection reset mid-watch is an error like any
  // other: the informer emits it and stops for good (start() again).
  const stopped = events.since(events.mark(), (e) => e.verb === 'error');
  t.equal(server.dropWatches({ reset: true }), 1);
  const error = await stopped;
  t.match(error.error, { code: 'ERR_STREAM_PREMATURE_CLOSE', message: 'Premature close' }, 'the informer reports the reset (node-fetch\'s words)');
  t.equal(server.openWatches, 0, 'and does not watch again');
  await informer.start();
  t.equal(server.openWatches, 1, 'start() brings it back');
});

t.test('an injected 500 on the list makes the informer emit the error and stop (client-node 1.4.0)', async (t) => {
  const server = await startFakeApiServer(t);
  server.put('persistentvolumes', localPv('pv-1'));
  server.failNext({ status: 500, verb: 'list', path: '/api/v1/persistentvolumes' });
  const { informer, events } = pvInformer(t, server);
  await informer.start();
  const error = await events.find((e) => e.verb === 'error');
  t.ok(error.error instanceof ApiException && error.error.code === 500, 'the ApiException with code 500');
  t.match(JSON.parse((error.error as ApiException<string>).body), { kind: 'Status', reason: 'InternalError', code: 500, message: 'injected fault: 500' });
  t.equal(server.openWatches, 0, 'no watch was started');
  t.same(names(informer.list()), [], 'the cache is empty');
  t.same(server.requests.map((r) => [r.verb, r.status]), [['list', 500]], 'and nothing was retried');

  await informer.start();
  t.same(names(informer.list()), ['pv-1'], 'start() again, after the fault, syncs');
});

t.test('merge patch: optimistic concurrency on metadata.resourceVersion (409 if stale); JSON patch, with test', async (t) => {
  const server = await startFakeApiServer(t);
  const core = server.kubeConfig().makeApiClient(CoreV1Api);
  await core.createPersistentVolume({ body: localPv('pv-1') });
  const current = await core.readPersistentVolume({ name: 'pv-1' });

  const patched = await core.patchPersistentVolume({ name: 'pv-1', body: { metadata: { resourceVersion: current.metadata!.resourceVersion, labels: { a: '1' } } } }, MERGE);
  t.same(patched.metadata?.labels, { a: '1' });
  const stale = await statusOf(core.patchPersistentVolume({ name: 'pv-1', body: { metadata: { resourceVersion: current.metadata!.resourceVersion, labels: { a: '2' } } } }, MERGE));
  t.match(stale, {
    code: 409,
    reason: 'Conflict',
    message: 'Operation cannot be fulfilled on persistentvolumes "pv-1": the object has been modified; please apply your changes to the latest version and try again',
  });
  const staleUpdate = await statusOf(core.replacePersistentVolume({ name: 'pv-1', body: current }));
  t.match(staleUpdate, { code: 409, reason: 'Conflict' }, 'PUT of a stale object too');

  const same = await core.patchPersistentVolume({ name: 'pv-1', body: { metadata: { labels: { a: '1' } } } }, MERGE);
  t.equal(same.metadata?.resourceVersion, patched.metadata?.resourceVersion, 'a patch that changes nothing writes nothing');

  const json = await core.patchPersistentVolume(
    {
      name: 'pv-1',
      body: [
        { op: 'test', path: '/metadata/labels/a', value: '1' },
        { op: 'add', path: '/metadata/labels/b~1c', value: 'x' },
        { op: 'replace', path: '/spec/capacity/storage', value: '20Gi' },
        { op: 'remove', path: '/metadata/labels/a' },
      ],
    },
    JSON_PATCH,
  );
  t.same(json.metadata?.labels, { 'b/c': 'x' });
  t.equal(json.spec?.capacity?.storage, '20Gi');
  const failedTest = await statusOf(core.patchPersistentVolume({ name: 'pv-1', body: [{ op: 'test', path: '/metadata/labels/b~1c', value: 'y' }, { op: 'remove', path: '/metadata/labels' }] }, JSON_PATCH));
  t.match(failedTest, { code: 422, reason: 'Invalid', message: /testing value \/metadata\/labels\/b~1c failed/ });
  t.same(server.get('persistentvolumes', 'pv-1')?.metadata.labels, { 'b/c': 'x' }, 'a failed patch changes nothing');
  t.match(await statusOf(core.patchPersistentVolume({ name: 'pv-1', body: [{ op: 'remove', path: '/spec/nothing' }] }, JSON_PATCH)), { code: 422, message: /missing path/ });

  t.match(await statusOf(core.patchPersistentVolume({ name: 'pv-1', body: { metadata: { labels: { c: '1' } } } })), { code: 400 }, 'a merge body sent as client-node\'s default json-patch is refused');
  t.match(
    await statusOf(core.patchPersistentVolume({ name: 'pv-1', body: { metadata: { labels: { c: '1' } } } }, setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch))),
    { code: 415, reason: 'UnsupportedMediaType', message: /does not implement application\/strategic-merge-patch\+json/ },
  );
  t.match(await statusOf(core.patchPersistentVolume({ name: 'pv-1', body: {} }, setHeaderOptions('Content-Type', 'text/plain'))), { code: 415 });
  t.match(await statusOf(core.patchPersistentVolume({ name: 'nope', body: {} }, MERGE)), { code: 404 });
  t.match(await statusOf(core.patchPersistentVolume({ name: 'pv-1', body: { metadata: { name: 'other' } } }, MERGE)), { code: 400, message: /does not match the name on the URL/ });
  server.assertNoInvalidWrites(t);
});

t.test('status is a subresource: a main-resource write keeps the stored status; a /status write changes only status', async (t) => {
  const server = await startFakeApiServer(t);
  const core = server.kubeConfig().makeApiClient(CoreV1Api);
  await core.createPersistentVolume({ body: { ...localPv('pv-1'), status: { phase: 'Bound' } } });
  t.equal(server.get('persistentvolumes', 'pv-1')?.status && (server.get('persistentvolumes', 'pv-1')!.status as { phase: string }).phase, 'Available', 'status in a create is ignored too');

  const pv = await core.readPersistentVolume({ name: 'pv-1' });
  const replaced = await core.replacePersistentVolume({ name: 'pv-1', body: { ...pv, metadata: { ...pv.metadata, labels: { put: 'yes' } }, status: { phase: 'Failed', message: 'nope' } } });
  t.equal(replaced.status?.phase, 'Available', 'PUT: status ignored');
  t.same(replaced.metadata?.labels, { put: 'yes' }, 'the rest applied');
  const merged = await core.patchPersistentVolume({ name: 'pv-1', body: { metadata: { labels: { patch: 'yes' } }, status: { phase: 'Released' } } }, MERGE);
  t.equal(merged.status?.phase, 'Available', 'PATCH: status ignored');
  t.same(merged.metadata?.labels, { put: 'yes', patch: 'yes' });

  const status = await core.patchPersistentVolumeStatus({ name: 'pv-1', body: { metadata: { labels: { status: 'yes' } }, spec: { capacity: { storage: '1Gi' } }, status: { phase: 'Failed', message: 'disk gone' } } }, MERGE);
  t.match(status.status, { phase: 'Failed', message: 'disk gone' });
  t.same(status.metadata?.labels, { put: 'yes', patch: 'yes' }, '/status: metadata ignored');
  t.equal(status.spec?.capacity?.storage, '10Gi', '/status: spec ignored');
  const again = await core.readPersistentVolumeStatus({ name: 'pv-1' });
  const put = await core.replacePersistentVolumeStatus({ name: 'pv-1', body: { ...again, spec: { ...again.spec, storageClassName: 'other' }, status: { phase: 'Available' } } });
  t.equal(put.status?.phase, 'Available');
  t.equal(put.spec?.storageClassName, 'fscrypt-local');
  t.match(await statusOf(core.patchPersistentVolumeStatus({ name: 'pv-1', body: { status: { phase: 'Lost' } } }, MERGE)), { code: 422, details: { causes: [{ field: 'status.phase', reason: 'FieldValueNotSupported' }] } });
  t.equal(server.invalidWrites.length, 1);
});

t.test('pv-protection: deleting a Bound PV leaves it with a deletionTimestamp; it goes once released', async (t) => {
  const server = await startFakeApiServer(t);
  const { informer, events, core } = pvInformer(t, server);
  await informer.start();
  await core.createPersistentVolume({ body: localPv('pv-1') });
  const bound = server.bind('pv-1', { namespace: 'tenant', name: 'data' });
  t.match(bound, { spec: { claimRef: { kind: 'PersistentVolumeClaim', namespace: 'tenant', name: 'data', uid: /^[0-9a-f-]{36}$/ } }, status: { phase: 'Bound' } });

  const deleting = await core.deletePersistentVolume({ name: 'pv-1' });
  t.ok(deleting.metadata?.deletionTimestamp !== undefined);
  await events.find(named('update', 'pv-1', (pv) => pv.metadata?.deletionTimestamp !== undefined));
  const held = await core.readPersistentVolume({ name: 'pv-1' });
  t.same(held.metadata?.finalizers, [PV_PROTECTION], 'held by pv-protection while Bound');
  t.same(await core.deletePersistentVolume({ name: 'pv-1' }), held, 'a second delete changes nothing');
  const added = await statusOf(core.patchPersistentVolume({ name: 'pv-1', body: { metadata: { finalizers: [PV_PROTECTION, 'example.com/mine'] } } }, MERGE));
  t.match(added, { code: 422, message: /no new finalizers can be added if the object is being deleted/ });
  server.invalidWrites.length = 0;

  server.release('pv-1');
  const gone = await events.find(named('delete', 'pv-1'));
  t.equal(gone.obj?.status?.phase, 'Released', 'released, then deleted');
  t.equal(server.get('persistentvolumes', 'pv-1'), undefined);
  server.assertNoInvalidWrites(t);
});

t.test('the PV controller on release: Released with claimRef kept; a Delete PV no external deleter owns goes Failed, with an event', async (t) => {
  const server = await startFakeApiServer(t);
  const core = server.kubeConfig().makeApiClient(CoreV1Api);
  const owned = localPv('pv-owned');
  owned.metadata!.annotations = { 'pv.kubernetes.io/provisioned-by': 'fscrypt-local.github.io' };
  await core.createPersistentVolume({ body: owned });
  server.bind('pv-owned', { namespace: 'tenant', name: 'a', uid: 'c0ffee00-0000-4000-8000-000000000001' });
  const released = server.release('pv-owned');
  t.match(released, { status: { phase: 'Released' }, spec: { claimRef: { uid: 'c0ffee00-0000-4000-8000-000000000001' } } });

  await core.createPersistentVolume({ body: localPv('pv-orphan') });
  server.bind('pv-orphan', { namespace: 'tenant', name: 'b' });
  const failed = server.release('pv-orphan');
  t.match(failed.status, { phase: 'Failed', message: /no deletable volume plugin matched/ });
  t.match(server.events('default'), [{ reason: 'VolumeFailedDelete', type: 'Warning', involvedObject: { kind: 'PersistentVolume', name: 'pv-orphan' } }]);

  await core.patchPersistentVolume({ name: 'pv-owned', body: { spec: { claimRef: null } } }, MERGE);
  t.equal((server.get('persistentvolumes', 'pv-owned')?.status as { phase: string }).phase, 'Available', 'a cleared claimRef makes it Available again');
  server.assertNoInvalidWrites(t);
});

t.test('core/v1 Events: create and patch in a namespace; the namespace rules of the real server', async (t) => {
  const server = await startFakeApiServer(t);
  const core = server.kubeConfig().makeApiClient(CoreV1Api);
  await core.createPersistentVolume({ body: localPv('pv-1') });
  const pv = await core.readPersistentVolume({ name: 'pv-1' });
  const event = (namespace: string): CoreV1Event => ({
    metadata: { name: 'pv-1.17f0c0ffee', namespace },
    involvedObject: { kind: 'PersistentVolume', apiVersion: 'v1', name: 'pv-1', uid: pv.metadata!.uid! },
    reason: 'Unlocked',
    message: 'volume unlocked for a pod',
    type: 'Normal',
    source: { component: 'fscrypt-local', host: 'node-a' },
    firstTimestamp: new Date(),
    lastTimestamp: new Date(),
    count: 1,
  });
  const created = await core.createNamespacedEvent({ namespace: 'default', body: event('default') });
  t.equal(created.count, 1);
  const patched = await core.patchNamespacedEvent({ namespace: 'default', name: 'pv-1.17f0c0ffee', body: { count: 2, lastTimestamp: new Date() } }, MERGE);
  t.equal(patched.count, 2);
  t.match(server.events('default'), [{ reason: 'Unlocked', count: 2 }]);
  t.same(names((await core.listNamespacedEvent({ namespace: 'default' })).items), ['pv-1.17f0c0ffee']);
  t.same(names((await core.listEventForAllNamespaces()).items), ['pv-1.17f0c0ffee']);
  t.equal((await core.readNamespacedEvent({ namespace: 'default', name: 'pv-1.17f0c0ffee' })).reason, 'Unlocked');

  const elsewhere = await statusOf(core.createNamespacedEvent({ namespace: 'kube-system', body: event('kube-system') }));
  t.match(elsewhere, { code: 422, details: { causes: [{ field: 'involvedObject.namespace', message: /does not match event.namespace/ }] } }, 'a PV\'s event belongs in default');
  t.match(await statusOf(core.createNamespacedEvent({ namespace: 'fscrypt-local', body: event('fscrypt-local') })), { code: 404, message: 'namespaces "fscrypt-local" not found' });
  t.match(await statusOf(core.createNamespacedEvent({ namespace: 'default', body: event('kube-system') })), { code: 400, message: /namespace of the provided object does not match/ });
  const newStyle = { ...event('default'), metadata: { name: 'pv-1.new', namespace: 'default' }, eventTime: new Date() as never };
  t.match(await statusOf(core.createNamespacedEvent({ namespace: 'default', body: newStyle })), { code: 422, message: /eventTime.*6 fractional digits.*reportingComponent: Required value/ });
  server.put('namespaces', { metadata: { name: 'fscrypt-local' } });
  server.invalidWrites.length = 0;
  const pod = { ...event('fscrypt-local'), involvedObject: { kind: 'Pod', name: 'agent-x', namespace: 'fscrypt-local' } };
  await core.createNamespacedEvent({ namespace: 'fscrypt-local', body: pod });
  t.same(server.events().map((e) => e.metadata.namespace), ['default', 'fscrypt-local'], 'events() lists all namespaces');
  server.assertNoInvalidWrites(t);
});

t.test('Nodes (taints by patch, status apart) and StorageClasses, seeded with put()', async (t) => {
  const server = await startFakeApiServer(t);
  const kc = server.kubeConfig();
  const core = kc.makeApiClient(CoreV1Api);
  const storage = kc.makeApiClient(StorageV1Api);
  server.put('nodes', { metadata: { name: 'node-a', labels: { 'kubernetes.io/hostname': 'node-a' } }, spec: { taints: [{ key: 'fscrypt-local/agent-not-ready', effect: 'NoSchedule' }] }, status: { conditions: [{ type: 'Ready', status: 'True' }] } });
  server.put('storageclasses', { metadata: { name: 'fscrypt-local' }, provisioner: 'kubernetes.io/no-provisioner', volumeBindingMode: 'WaitForFirstConsumer' });

  const node = await core.readNode({ name: 'node-a' });
  t.match(node.status?.conditions, [{ type: 'Ready', status: 'True' }], 'put() keeps the seeded status');
  const untainted = await core.patchNode({ name: 'node-a', body: [{ op: 'test', path: '/spec/taints/0/key', value: 'fscrypt-local/agent-not-ready' }, { op: 'remove', path: '/spec/taints/0' }] }, JSON_PATCH);
  t.same(untainted.spec?.taints, []);
  const doubled = await statusOf(core.patchNode({ name: 'node-a', body: { spec: { taints: [{ key: 'a', effect: 'NoSchedule' }, { key: 'a', effect: 'NoSchedule' }] } } }, MERGE));
  t.match(doubled, { code: 422, details: { causes: [{ reason: 'FieldValueDuplicate', field: 'spec.taints[1]' }] } });
  const status = await core.patchNodeStatus({ name: 'node-a', body: { status: { conditions: [{ type: 'Ready', status: 'False' }] }, spec: { unschedulable: true } } }, MERGE);
  t.match(status, { status: { conditions: [{ status: 'False' }] } });
  t.notOk(status.spec?.unschedulable, '/status does not touch spec');
  t.equal((await core.listNode()).items.length, 1);
  await core.replaceNode({ name: 'node-a', body: { ...(await core.readNode({ name: 'node-a' })), spec: { taints: [] } } });

  const sc = await storage.readStorageClass({ name: 'fscrypt-local' });
  t.match(sc, { provisioner: 'kubernetes.io/no-provisioner', reclaimPolicy: 'Delete', volumeBindingMode: 'WaitForFirstConsumer' }, 'reclaimPolicy defaulted');
  t.same(names((await storage.listStorageClass()).items), ['fscrypt-local']);
  t.match(await statusOf(storage.readStorageClass({ name: 'missing' })), { code: 404, message: 'storageclasses.storage.k8s.io "missing" not found', details: { group: 'storage.k8s.io', kind: 'storageclasses' } });
  t.throws(() => server.put('storageclasses', { metadata: { name: 'fscrypt-local' }, provisioner: 'other' }), /StorageClass.storage.k8s.io "fscrypt-local" is invalid: provisioner: Forbidden/);
  t.throws(() => server.put('leases', {}), /no resource leases/);
  t.same(server.invalidWrites.map((w) => [w.resource, w.verb]), [['nodes', 'patch'], ['storageclasses', 'seed']]);

  t.same(
    server.requests.filter((r) => r.resource !== '').map((r) => ({ ...r, path: undefined, status: undefined, method: undefined })),
    [
      { verb: 'get', group: '', resource: 'nodes', name: 'node-a' },
      { verb: 'patch', group: '', resource: 'nodes', name: 'node-a' },
      { verb: 'patch', group: '', resource: 'nodes', name: 'node-a' },
      { verb: 'patch', group: '', resource: 'nodes', subresource: 'status', name: 'node-a' },
      { verb: 'list', group: '', resource: 'nodes' },
      { verb: 'get', group: '', resource: 'nodes', name: 'node-a' },
      { verb: 'update', group: '', resource: 'nodes', name: 'node-a' },
      { verb: 'get', group: 'storage.k8s.io', resource: 'storageclasses', name: 'fscrypt-local' },
      { verb: 'list', group: 'storage.k8s.io', resource: 'storageclasses' },
      { verb: 'get', group: 'storage.k8s.io', resource: 'storageclasses', name: 'missing' },
    ].map((r) => ({ ...r, path: undefined, status: undefined, method: undefined })),
    'requests recorded as RBAC sees them',
  );
});

t.test('fault injection: failNext matches method, verb and path, and counts; setLatency delays what it matches', async (t) => {
  const server = await startFakeApiServer(t);
  const core = server.kubeConfig().makeApiClient(CoreV1Api);
  await core.createPersistentVolume({ body: localPv('pv-1') });
  server.failNext({ status: 503, method: 'get', path: /^\/api\/v1\/persistentvolumes\/pv-1$/, count: 2 });
  server.failNext({ status: 429, verb: 'list', message: 'slow down' });
  t.match(await statusOf(core.readPersistentVolume({ name: 'pv-1' })), { code: 503, reason: 'ServiceUnavailable' });
  t.match(await statusOf(core.listPersistentVolume()), { code: 429, reason: 'TooManyRequests', message: 'slow down', details: { retryAfterSeconds: 1 } });
  t.match(await statusOf(core.readPersistentVolume({ name: 'pv-1' })), { code: 503 });
  t.equal((await core.readPersistentVolume({ name: 'pv-1' })).metadata?.name, 'pv-1', 'count spent');
  t.equal((await core.listPersistentVolume()).items.length, 1);
  server.failNext({ status: 500, method: 'DELETE' });
  server.failNext({ status: 418, path: '/api/v1/persistentvolumes/other' });
  t.match(await statusOf(core.readPersistentVolume({ name: 'other' })), { code: 418, reason: 'Unknown' });
  t.match(await statusOf(core.deletePersistentVolume({ name: 'pv-1' })), { code: 500, reason: 'InternalError' });
  t.ok(server.get('persistentvolumes', 'pv-1') !== undefined, 'a failed request changes nothing');

  // Latency, without timing: a delayed get is still pending when a list sent after it is answered; down() cuts it.
  server.setLatency(600_000, { verb: 'get' });
  let settled = false;
  const slow = rejection(core.readPersistentVolume({ name: 'pv-1' }).finally(() => (settled = true)));
  t.equal((await core.listPersistentVolume()).items.length, 1, 'a request the latency does not match is answered');
  t.notOk(settled, 'the delayed get is not');
  await server.down();
  t.match(await slow, { code: 'ECONNRESET', message: /socket hang up/ }, 'down() cuts it');
  server.setLatency(0);
  await server.up();
  t.equal((await core.readPersistentVolume({ name: 'pv-1' })).metadata?.name, 'pv-1');
});

t.test('an outage of any length: count Infinity fails every matching request until clearFaults()', async (t) => {
  const server = await startFakeApiServer(t);
  const core = server.kubeConfig().makeApiClient(CoreV1Api);
  server.failNext({ status: 500, count: Infinity });
  for (let i = 0; i < 5; i++) t.match(await statusOf(core.listPersistentVolume()), { code: 500 });
  t.equal(server.clearFaults(), 5, 'clearFaults() ends it and says how many requests it failed');
  t.equal((await core.listPersistentVolume()).items.length, 0, 'answered again');
});

t.test('down() refuses connections (and cuts watches) until up(), on the same port', async (t) => {
  const server = await startFakeApiServer(t);
  const { informer, events, core } = pvInformer(t, server);
  await informer.start();
  const port = server.port;
  const stopped = events.since(events.mark(), (e) => e.verb === 'error');
  await server.down();
  await stopped;
  t.pass('the informer saw its watch cut, and stopped');
  t.match(await rejection(core.listPersistentVolume()), { code: 'ECONNREFUSED' }, 'refused');
  await server.down();
  await server.up();
  await server.up();
  t.equal(server.port, port);
  t.same((await core.listPersistentVolume()).items, []);
  await informer.start();
  t.equal(server.openWatches, 1);
});

t.test('routing: unknown paths and verbs get the real Status bodies; discovery and /version work', async (t) => {
  const server = await startFakeApiServer(t);
  const kc = server.kubeConfig();
  const version = await kc.makeApiClient(VersionApi).getCode();
  t.equal(version.major, '1');
  const objects = KubernetesObjectApi.makeApiClient(kc);
  await objects.create({ apiVersion: 'v1', kind: 'PersistentVolume', ...localPv('pv-1') } as KubernetesObject);
  const read = await objects.read({ apiVersion: 'v1', kind: 'PersistentVolume', metadata: { name: 'pv-1' } });
  t.equal(read.metadata?.name, 'pv-1', 'KubernetesObjectApi resolves kinds through discovery');
  await objects.read({ apiVersion: 'storage.k8s.io/v1', kind: 'StorageClass', metadata: { name: 'x' } }).catch(() => undefined);

  const raw = async (method: string, path: string, body?: string, contentType = 'application/json') => {
    const res = await fetch(`${server.url}${path}`, { method, ...(body === undefined ? {} : { body, headers: { 'Content-Type': contentType } }) });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };
  t.match(await raw('GET', '/api'), { status: 200, body: { kind: 'APIVersions', versions: ['v1'] } });
  t.match(await raw('GET', '/apis'), { status: 200, body: { kind: 'APIGroupList', groups: [{ name: 'storage.k8s.io' }] } });
  t.match(await raw('GET', '/api/v1'), { status: 200, body: { kind: 'APIResourceList', groupVersion: 'v1', resources: [{ name: 'persistentvolumes' }, { name: 'persistentvolumes/status' }] } });
  t.match(await raw('GET', '/apis/storage.k8s.io/v1'), { status: 200, body: { groupVersion: 'storage.k8s.io/v1' } });
  const missing = { status: 404, body: { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', reason: 'NotFound', message: 'the server could not find the requested resource', details: {}, code: 404 } };
  t.same(await raw('GET', '/api/v1/pods'), missing);
  t.same(await raw('GET', '/apis/apps/v1'), missing);
  t.same(await raw('GET', '/healthz'), missing);
  t.same(await raw('GET', '/api/v1/persistentvolumes/pv-1/scale'), missing);
  t.same(await raw('GET', '/apis/storage.k8s.io/v1/storageclasses/x/status'), missing);
  t.match(await raw('DELETE', '/api/v1/persistentvolumes'), { status: 405, body: { reason: 'MethodNotAllowed' } });
  t.match(await raw('POST', '/api/v1/persistentvolumes/pv-1', '{}'), { status: 405 });
  t.match(await raw('PUT', '/api/v1/persistentvolumes', '{}'), { status: 405 });
  t.match(await raw('PATCH', '/api/v1/persistentvolumes', '{}', 'application/merge-patch+json'), { status: 405 });
  t.match(await raw('DELETE', '/api/v1/persistentvolumes/pv-1/status'), { status: 405 });
  t.match(await raw('POST', '/api/v1/events', '{}'), { status: 405 }, 'namespaced resources are only listed across namespaces');
  t.match(await raw('OPTIONS', '/api/v1/persistentvolumes'), { status: 405 });
  t.match(await raw('POST', '/api/v1/persistentvolumes', '{not json'), { status: 400, body: { message: /json parse error/ } });
  t.match(await raw('POST', '/api/v1/persistentvolumes', 'kind: PersistentVolume', 'application/yaml'), { status: 415 });
  t.match(await raw('POST', '/api/v1/persistentvolumes', '[]'), { status: 400 });
  t.match(await raw('POST', '/api/v1/persistentvolumes', JSON.stringify({ kind: 'Node', apiVersion: 'v1', metadata: { name: 'x' } })), { status: 400, body: { message: 'Node in version "v1" cannot be handled as a PersistentVolume' } });
  t.match(await raw('POST', '/api/v1/persistentvolumes', JSON.stringify({ metadata: { namespace: 'default' }, spec: {} })), { status: 422, body: { message: /metadata.name: Required value: name or generateName is required/ } });
  const deleted = await raw('DELETE', '/api/v1/persistentvolumes/pv-1', JSON.stringify({ preconditions: { uid: 'wrong' } }));
  t.match(deleted, { status: 409, body: { message: /Precondition failed: UID in precondition: wrong/ } });
  t.match(await raw('DELETE', '/api/v1/persistentvolumes/pv-1', JSON.stringify({ preconditions: { resourceVersion: '1' } })), { status: 409, body: { message: /ResourceVersion in precondition: 1/ } });
  server.invalidWrites.length = 0;
});

t.test('patch formats, as RFC 7386 and RFC 6902 define them', async (t) => {
  t.same(mergePatch({ a: 'b', c: { d: 'e', f: 'g' } }, { a: 'z', c: { f: null } }), { a: 'z', c: { d: 'e' } });
  t.same(mergePatch({ a: [1, 2] }, { a: [3] }), { a: [3] }, 'arrays are replaced');
  t.same(mergePatch('text', { a: { b: 1 } }), { a: { b: 1 } });
  t.same(mergePatch({ a: 1 }, ['x']), ['x']);
  const doc = { list: [1, 2, 3], obj: { a: 1 } };
  t.same(jsonPatch(doc, [{ op: 'add', path: '/list/1', value: 9 }, { op: 'add', path: '/list/-', value: 7 }]), { list: [1, 9, 2, 3, 7], obj: { a: 1 } });
  t.same(jsonPatch(doc, [{ op: 'move', from: '/obj/a', path: '/b' }, { op: 'copy', from: '/list', path: '/obj/l' }]), { list: [1, 2, 3], obj: { l: [1, 2, 3] }, b: 1 });
  t.same(jsonPatch(doc, [{ op: 'remove', path: '/list/0' }, { op: 'replace', path: '/list/1', value: 0 }]), { list: [2, 0], obj: { a: 1 } });
  t.same(jsonPatch(doc, [{ op: 'test', path: '/obj', value: { a: 1 } }, { op: 'test', path: '/list', value: [1, 2, 3] }]), doc);
  t.same(jsonPatch(doc, [{ op: 'add', path: '', value: { x: 1 } }]), { x: 1 });
  t.same(doc, { list: [1, 2, 3], obj: { a: 1 } }, 'the input is untouched');
  const refused = (patch: unknown) => {
    try {
      jsonPatch(doc, patch);
      return 'applied';
    } catch (error) {
      return (error as { code: number }).code;
    }
  };
  t.equal(refused({ op: 'add' }), 400, 'not an array');
  t.equal(refused([{ op: 'frobnicate', path: '/a' }]), 400);
  t.equal(refused([{ op: 'add', path: '/a' }]), 400, 'add without value');
  t.equal(refused([{ op: 'move', path: '/a' }]), 400, 'move without from');
  t.equal(refused([{ op: 'add', path: 'a', value: 1 }]), 400, 'not a JSON pointer');
  t.equal(refused([{ op: 'test', path: '/obj', value: { a: 2 } }]), 422);
  t.equal(refused([{ op: 'test', path: '/list', value: [1, 2] }]), 422);
  t.equal(refused([{ op: 'test', path: '/obj/a', value: [1] }]), 422);
  t.equal(refused([{ op: 'test', path: '/list', value: { a: 1 } }]), 422);
  t.equal(refused([{ op: 'add', path: '/list/9', value: 1 }]), 422, 'index out of bounds');
  t.equal(refused([{ op: 'remove', path: '/list/3' }]), 422);
  t.equal(refused([{ op: 'add', path: '/list/x', value: 1 }]), 422, 'not an index');
  t.equal(refused([{ op: 'add', path: '/no/such', value: 1 }]), 422, 'no parent');
  t.equal(refused([{ op: 'remove', path: '/list/x' }]), 422);
  t.equal(refused([{ op: 'remove', path: '' }]), 422, 'the whole document');
  t.equal(refused([{ op: 'move', from: '/obj', path: '/obj/inner' }]), 422, 'into its own child');
  t.equal(refused([{ op: 'copy', from: '/none', path: '/x' }]), 422);
});
