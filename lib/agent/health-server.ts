// The agent's HTTP endpoint (--listen-address, default :8080): /metrics for
// Prometheus, /healthz for the liveness probe, /readyz for the readiness
// probe. The checks themselves are the caller's (the event loop, the
// informers, config, start-up reconcile, the CSI socket): this file only
// answers them.
//
// Handlers never do I/O and never wait on anything but the in-memory metric
// registry: a probe that hung on a slow disk would get the agent restarted
// for the disk's fault, and one slot must not stall the others (invariant 9).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { isIPv4, isIPv6, type AddressInfo } from 'node:net';
import { FscryptError } from '../kernel/errors.js';
import type { CsiLog } from './csi/log.js';
import type { AgentLog } from './log.js';
import type { AgentMetrics } from './metrics.js';

export const DEFAULT_LISTEN_ADDRESS = ':8080';

export interface Check {
  ok: boolean;
  /** Why it is not ok (one line each); with ok, notes shown by `?verbose`. */
  reasons: string[];
}

export interface HealthServerOptions {
  /** HOST:PORT, ':PORT' for every interface, '[v6]:PORT'; port 0 picks a free one. */
  listenAddress: string;
  metrics: AgentMetrics;
  /** Liveness: false gets the agent restarted, so only for what a restart cures. */
  healthy(): Check;
  /** Readiness: false only takes the pod out of rotation. */
  ready(): Check;
  log: AgentLog | CsiLog;
}

/** No probe or scrape needs longer; a slow client is cut off instead of holding a socket. */
const REQUEST_TIMEOUT_MS = 10_000;

const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

function badAddress(text: string, why: string): FscryptError {
  return FscryptError.invalidArgument(`--listen-address ${JSON.stringify(text)}: ${why}; use HOST:PORT, :PORT (every interface) or [IPv6]:PORT, e.g. ${DEFAULT_LISTEN_ADDRESS}, 127.0.0.1:8080, [::1]:8080`);
}

/** HOST:PORT as Go's net.Listen takes it; an empty host (':8080') means every interface. */
export function parseListenAddress(text: string): { host: string | undefined; port: number } {
  const colon = text.lastIndexOf(':');
  if (colon < 0) throw badAddress(text, 'no port');
  const hostPart = text.slice(0, colon);
  const portPart = text.slice(colon + 1);
  if (!/^\d{1,5}$/.test(portPart) || Number(portPart) > 65535) throw badAddress(text, `the port must be a number from 0 to 65535, got ${JSON.stringify(portPart)}`);
  const port = Number(portPart);
  if (hostPart === '') return { host: undefined, port };
  if (hostPart.startsWith('[')) {
    const inner = hostPart.endsWith(']') ? hostPart.slice(1, -1) : '';
    if (!isIPv6(inner)) throw badAddress(text, 'between [ and ] must be an IPv6 address');
    return { host: inner, port };
  }
  if (hostPart.includes(':')) throw badAddress(text, 'an IPv6 address must be in brackets');
  if (!isIPv4(hostPart) && !HOSTNAME.test(hostPart)) throw badAddress(text, `${JSON.stringify(hostPart)} is not an IP address or a host name`);
  return { host: hostPart, port };
}

function checked(check: () => Check): Check {
  try {
    const result = check();
    return { ok: result.ok === true, reasons: Array.isArray(result.reasons) ? result.reasons.map(String) : [] };
  } catch (error) {
    return { ok: false, reasons: [`the check itself failed: ${error instanceof Error ? error.message : String(error)}`] };
  }
}

export class HealthServer {
  readonly #options: HealthServerOptions;
  readonly #host: string | undefined;
  readonly #port: number;
  #server: Server | undefined;

  constructor(options: HealthServerOptions) {
    const { host, port } = parseListenAddress(options.listenAddress);
    this.#options = options;
    this.#host = host;
    this.#port = port;
  }

  /** Listens; resolves with the address bound (the port is the real one when 0 was asked). */
  async start(): Promise<{ host: string; port: number }> {
    if (this.#server !== undefined) throw new Error('HealthServer.start() was already called');
    const server = createServer((req, res) => this.#handle(req, res));
    server.requestTimeout = REQUEST_TIMEOUT_MS;
    server.headersTimeout = REQUEST_TIMEOUT_MS;
    this.#server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: this.#host, port: this.#port }, () => {
        server.off('error', reject);
        resolve();
      });
    }).catch((error: unknown) => {
      this.#server = undefined;
      throw error;
    });
    server.on('error', (error) => this.#options.log.error({ err: error }, 'health server error'));
    const address = server.address() as AddressInfo;
    this.#options.log.info({ address: address.address, port: address.port }, 'serving /metrics, /healthz and /readyz');
    return { host: address.address, port: address.port };
  }

  async stop(): Promise<void> {
    const server = this.#server;
    if (server === undefined) return;
    this.#server = undefined;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    // Prometheus and kubelet keep connections alive; close() alone would wait for them.
    server.closeAllConnections();
    await closed;
  }

  #handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://health');
    const head = req.method === 'HEAD';
    if (req.method !== 'GET' && !head) {
      reply(res, head, 405, 'only GET and HEAD\n', { Allow: 'GET, HEAD' });
      return;
    }
    switch (url.pathname) {
      case '/metrics':
        this.#options.metrics.metrics().then(
          (text) => reply(res, head, 200, text, { 'Content-Type': this.#options.metrics.contentType }),
          (error: unknown) => {
            this.#options.log.error({ err: error }, 'collecting metrics failed');
            reply(res, head, 500, 'collecting metrics failed\n');
          },
        );
        return;
      case '/healthz':
        answerCheck(res, head, checked(() => this.#options.healthy()), url.searchParams.has('verbose'));
        return;
      case '/readyz':
        answerCheck(res, head, checked(() => this.#options.ready()), url.searchParams.has('verbose'));
        return;
      default:
        reply(res, head, 404, 'not found: the paths are /metrics, /healthz and /readyz\n');
    }
  }
}

function answerCheck(res: ServerResponse, head: boolean, check: Check, verbose: boolean): void {
  if (check.ok) {
    const notes = verbose ? check.reasons.map((line) => `${line}\n`).join('') : '';
    reply(res, head, 200, `ok\n${notes}`);
    return;
  }
  const reasons = check.reasons.length > 0 ? check.reasons : ['not ok (no reason given)'];
  reply(res, head, 503, reasons.map((line) => `${line}\n`).join(''));
}

function reply(res: ServerResponse, head: boolean, status: number, body: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, {
    'Content-Type': 'text/plain; charset=utf-8',
    'Cache-Control': 'no-store',
    'Content-Length': Buffer.byteLength(body),
    ...headers,
  });
  res.end(head ? undefined : body);
}

export interface EventLoopWatchOptions {
  /** How often the heartbeat ticks (default 1000 ms). */
  intervalMs?: number;
  /** A tick later than this means the loop was blocked (default 5000 ms). */
  maxDelayMs?: number;
  /**
   * How long a block is reported after it ended (default 10 s, kubelet's
   * probe period): one stall fails about one probe, and only stalls that
   * recur reach the probe's failureThreshold and restart the agent.
   */
  holdMs?: number;
  /** The clock, in ms (default performance.now). */
  now?: () => number;
  /** Starts the heartbeat and returns its stop (default: an unref'd setInterval); tests tick by hand. */
  timer?: (tick: () => void, intervalMs: number) => () => void;
}

function unrefInterval(tick: () => void, intervalMs: number): () => void {
  const timer = setInterval(tick, intervalMs);
  // The heartbeat alone must not keep a process alive that is done.
  timer.unref();
  return () => clearInterval(timer);
}

/**
 * A heartbeat on the event loop: a timer that notes how late each tick
 * fires. While the loop is blocked nothing answers, and the probe times out
 * by itself; this makes the block visible afterwards too, for `holdMs`, so a
 * loop that stalls again and again between two probes still fails them.
 * check() also measures the time since the last tick, because the request
 * it answers may run before the late tick does.
 */
export function eventLoopWatch(options: EventLoopWatchOptions = {}): { check(): Check; stop(): void } {
  const intervalMs = options.intervalMs ?? 1000;
  const maxDelayMs = options.maxDelayMs ?? 5000;
  const holdMs = options.holdMs ?? 10_000;
  const now = options.now ?? (() => performance.now());
  let lastTick = now();
  let worst: { delayMs: number; endedAt: number } | undefined;

  const observe = (at: number): void => {
    const delayMs = at - lastTick - intervalMs;
    if (delayMs <= maxDelayMs) return;
    // A block while an earlier one is still reported extends the report and keeps the longer of the two.
    const held = worst !== undefined && at - worst.endedAt <= holdMs ? worst.delayMs : 0;
    worst = { delayMs: Math.max(held, delayMs), endedAt: at };
  };
  const stopTimer = (options.timer ?? unrefInterval)(() => {
    const at = now();
    observe(at);
    lastTick = at;
  }, intervalMs);

  return {
    check(): Check {
      const at = now();
      observe(at);
      if (worst !== undefined && at - worst.endedAt <= holdMs) {
        const ago = Math.round(at - worst.endedAt);
        return { ok: false, reasons: [`the event loop was blocked for ${Math.round(worst.delayMs)} ms (limit ${maxDelayMs} ms), ${ago} ms ago`] };
      }
      return { ok: true, reasons: [] };
    },
    stop(): void {
      stopTimer();
    },
  };
}
