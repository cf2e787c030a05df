// The agent's HTTP endpoint (lib/agent/health-server.ts): /metrics, /healthz
// and /readyz on a real socket, the listen-address grammar, and the event
// loop heartbeat that makes a blocked loop visible to the liveness probe.
import { request, Agent } from 'node:http';
import t, { type Test } from 'tap';
import { eventLoopWatch, HealthServer, parseListenAddress, type Check } from '../../lib/agent/health-server.js';
import { AgentMetrics } from '../../lib/agent/metrics.js';
import { jsonLinesLog } from '../../lib/agent/csi/log.js';

interface Answer {
  status: number;
  headers: Headers;
  body: string;
}

async function get(base: string, path: string, init: RequestInit = {}): Promise<Answer> {
  const response = await fetch(`${base}${path}`, init);
  return { status: response.status, headers: response.headers, body: await response.text() };
}

function quietLog(): { log: ReturnType<typeof jsonLinesLog>; lines: string[] } {
  const lines: string[] = [];
  return { log: jsonLinesLog((line) => lines.push(line)), lines };
}

async function started(t: Test, checks: { healthy: () => Check; ready: () => Check }, metrics = new AgentMetrics()): Promise<{ base: string; server: HealthServer; lines: string[] }> {
  const { log, lines } = quietLog();
  const server = new HealthServer({ listenAddress: '127.0.0.1:0', metrics, log, ...checks });
  const address = await server.start();
  t.teardown(() => server.stop());
  return { base: `http://${address.host}:${address.port}`, server, lines };
}

const OK: Check = { ok: true, reasons: [] };

t.test('/metrics, /healthz and /readyz answer; other paths 404, other methods 405', async (t) => {
  const metrics = new AgentMetrics();
  metrics.setOrphanKeys(0);
  let health: Check = OK;
  let readiness: Check = { ok: false, reasons: ['config not loaded', 'start-up reconcile not done'] };
  const { base, lines } = await started(t, { healthy: () => health, ready: () => readiness }, metrics);
  t.match(lines.join(''), /serving \/metrics/, 'the start is logged');

  const scrape = await get(base, '/metrics');
  t.equal(scrape.status, 200);
  t.equal(scrape.headers.get('content-type'), metrics.contentType);
  t.match(scrape.body, /^fscrypt_local_keys_without_target 0$/m);

  const live = await get(base, '/healthz');
  t.equal(live.status, 200);
  t.equal(live.body, 'ok\n');
  t.match(live.headers.get('content-type'), /^text\/plain/);
  t.equal(live.headers.get('cache-control'), 'no-store');

  const notReady = await get(base, '/readyz');
  t.equal(notReady.status, 503);
  t.equal(notReady.body, 'config not loaded\nstart-up reconcile not done\n', 'one reason per line');

  readiness = { ok: true, reasons: ['csi socket serving'] };
  t.equal((await get(base, '/readyz')).body, 'ok\n', 'notes only with ?verbose');
  t.equal((await get(base, '/readyz?verbose')).body, 'ok\ncsi socket serving\n');

  health = { ok: false, reasons: [] };
  const unhealthy = await get(base, '/healthz');
  t.equal(unhealthy.status, 503);
  t.equal(unhealthy.body, 'not ok (no reason given)\n', 'a failure without a reason still says something');

  const head = await get(base, '/readyz', { method: 'HEAD' });
  t.equal(head.status, 200);
  t.equal(head.body, '', 'HEAD has no body');

  const missing = await get(base, '/nope');
  t.equal(missing.status, 404);
  t.match(missing.body, /\/metrics, \/healthz and \/readyz/);

  const post = await get(base, '/healthz', { method: 'POST', body: 'x' });
  t.equal(post.status, 405);
  t.equal(post.headers.get('allow'), 'GET, HEAD');
});

t.test('a check that throws is a 503 with its message; a failing scrape is a 500, logged', async (t) => {
  const metrics = new AgentMetrics();
  const { base, lines } = await started(
    t,
    {
      healthy: () => {
        throw new Error('informer state unreadable');
      },
      ready: () => ({ ok: 'yes', reasons: 'none' }) as unknown as Check,
    },
    metrics,
  );
  const live = await get(base, '/healthz');
  t.equal(live.status, 503);
  t.equal(live.body, 'the check itself failed: informer state unreadable\n');
  const ready = await get(base, '/readyz');
  t.equal(ready.status, 503, 'only ok === true is ready');
  (metrics as { metrics: () => Promise<string> }).metrics = () => Promise.reject(new Error('collector broke'));
  const scrape = await get(base, '/metrics');
  t.equal(scrape.status, 500);
  t.match(lines.join(''), /collecting metrics failed/);
});

t.test('start twice is refused, a taken port rejects, stop is idempotent and does not wait for idle keep-alive clients', async (t) => {
  const { log } = quietLog();
  const metrics = new AgentMetrics();
  const server = new HealthServer({ listenAddress: '127.0.0.1:0', metrics, log, healthy: () => OK, ready: () => OK });
  const { port } = await server.start();
  await t.rejects(server.start(), /already called/);
  const second = new HealthServer({ listenAddress: `127.0.0.1:${port}`, metrics, log, healthy: () => OK, ready: () => OK });
  await t.rejects(second.start(), { code: 'EADDRINUSE' });
  await second.stop();

  const agent = new Agent({ keepAlive: true });
  t.teardown(() => agent.destroy());
  const status = await new Promise<number>((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/healthz', agent }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
  t.equal(status, 200);
  await server.stop();
  await server.stop();
  await t.rejects(fetch(`http://127.0.0.1:${port}/healthz`), 'nothing listens after stop');
});

t.test('the constructor refuses a bad listen address', async (t) => {
  const { log } = quietLog();
  t.throws(() => new HealthServer({ listenAddress: '8080', metrics: new AgentMetrics(), log, healthy: () => OK, ready: () => OK }), { code: 'ERR_INVALID_ARG' });
});

t.test('parseListenAddress takes HOST:PORT, :PORT and [IPv6]:PORT', async (t) => {
  t.same(parseListenAddress(':8080'), { host: undefined, port: 8080 });
  t.same(parseListenAddress('0.0.0.0:8080'), { host: '0.0.0.0', port: 8080 });
  t.same(parseListenAddress('127.0.0.1:0'), { host: '127.0.0.1', port: 0 });
  t.same(parseListenAddress('[::1]:9090'), { host: '::1', port: 9090 });
  t.same(parseListenAddress('[::]:65535'), { host: '::', port: 65535 });
  t.same(parseListenAddress('localhost:8080'), { host: 'localhost', port: 8080 });
  t.same(parseListenAddress('node-1.example.com:1'), { host: 'node-1.example.com', port: 1 });
  for (const [text, why] of [
    ['', /no port/],
    ['8080', /no port/],
    ['localhost', /no port/],
    [':', /port must be a number/],
    [':http', /port must be a number/],
    [':65536', /port must be a number/],
    [':-1', /port must be a number/],
    [':123456', /port must be a number/],
    ['::1:8080', /IPv6 address must be in brackets/],
    ['[::1:8080', /IPv6 address/],
    ['[1.2.3.4]:80', /between \[ and \] must be an IPv6 address/],
    ['[]:80', /IPv6 address/],
    ['bad_host:80', /not an IP address or a host name/],
    ['-x:80', /not an IP address or a host name/],
    ['a b:80', /not an IP address or a host name/],
  ] as const) {
    t.throws(() => parseListenAddress(text), { code: 'ERR_INVALID_ARG', message: why }, JSON.stringify(text));
  }
  t.throws(() => parseListenAddress('x'), { message: /use HOST:PORT, :PORT \(every interface\) or \[IPv6\]:PORT/ }, 'the error says what to write');
});

t.test('a blocked event loop makes /healthz 503, and it recovers', async (t) => {
  const watch = eventLoopWatch({ intervalMs: 50, maxDelayMs: 500, holdMs: 300 });
  t.teardown(() => watch.stop());
  const { base } = await started(t, { healthy: () => watch.check(), ready: () => OK });
  t.equal((await get(base, '/healthz')).status, 200, 'healthy before');
  const until = Date.now() + 1500;
  while (Date.now() < until) {
    // A busy loop: nothing else runs on the event loop meanwhile.
  }
  const blocked = await get(base, '/healthz');
  t.equal(blocked.status, 503, 'unhealthy right after the block');
  t.match(blocked.body, /^the event loop was blocked for \d+ ms \(limit 500 ms\), \d+ ms ago\n$/);
  let answer = blocked;
  for (let i = 0; i < 200 && answer.status !== 200; i++) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    answer = await get(base, '/healthz');
  }
  t.equal(answer.status, 200, 'healthy again once the block is past the hold time');
});

t.test('eventLoopWatch on a given clock: a late tick is reported for holdMs; a block during the report extends it', async (t) => {
  let clock = 0;
  let beat: (() => void) | undefined;
  let stopped = false;
  const watch = eventLoopWatch({
    intervalMs: 1000,
    maxDelayMs: 500,
    holdMs: 10_000,
    now: () => clock,
    timer: (tick, intervalMs) => {
      t.equal(intervalMs, 1000);
      beat = tick;
      return () => (stopped = true);
    },
  });
  const tick = (at: number): void => {
    clock = at;
    beat!();
  };
  const run = (from: number, to: number): void => {
    for (let at = from; at <= to; at += 1000) tick(at);
  };
  t.same(watch.check(), { ok: true, reasons: [] });
  tick(1400);
  t.ok(watch.check().ok, 'a tick 400 ms late is within the limit');
  run(2400, 4400);
  clock = 8400;
  const late = watch.check();
  t.notOk(late.ok, 'the next tick, due at 5400, has not run by 8400: the request itself sees the block');
  t.same(late.reasons, ['the event loop was blocked for 3000 ms (limit 500 ms), 0 ms ago']);
  tick(8400);
  run(9400, 18_400);
  t.match(watch.check().reasons[0], /blocked for 3000 ms .*, 10000 ms ago/, 'reported for holdMs after it ended, ticks on time meanwhile');
  clock = 18_401;
  t.same(watch.check(), { ok: true, reasons: [] }, 'then healthy');

  tick(27_400); // 8000 ms late
  run(28_400, 32_400);
  tick(35_400); // 2000 ms late, while the first is still reported
  run(36_400, 44_400);
  t.same(watch.check().reasons, ['the event loop was blocked for 8000 ms (limit 500 ms), 9000 ms ago'], 'the longer block, timed from the later one');
  tick(45_400);
  t.notOk(watch.check().ok, 'exactly holdMs after the later block: still reported');
  clock = 45_401;
  t.ok(watch.check().ok, 'past holdMs after the later block');
  watch.stop();
  t.ok(stopped, 'stop() stops the heartbeat');

  const defaults = eventLoopWatch();
  t.ok(defaults.check().ok, 'the defaults start healthy');
  defaults.stop();
});
