// What every RPC handler gets around it: the call's deadline and cancellation
// as one AbortSignal for the hooks, the error → gRPC status mapping
// (errors.ts) with a message naming the volume and the node, one log line per
// call (method, volume id, target, code, duration; never the request's
// secrets), and a record of the calls in flight so that stop() can wait for
// them.
//
// A grpc-js handler keeps running after the client's deadline; the signal
// fires a little before it, so a call waiting for its slot gives up while the
// client can still read why.
import * as grpc from '@grpc/grpc-js';
import { CsiError, grpcCodeFor, statusOf, type GrpcCodeName } from './errors.js';
import type { CsiLog } from './log.js';
import { shownId } from './volumes.js';

export interface CallContext {
  /** Fires at the call's deadline (a little before), when the client cancels, or when the server stops. */
  signal: AbortSignal;
  /** The longest a hook may wait for its slot: until the signal, at the latest. */
  lockTimeoutMs: number;
}

export interface RpcOptions {
  log: CsiLog;
  nodeId: string;
  /** The longest any call may take, whatever its deadline (default 120 s: kubelet's own timeout). */
  maxCallMs: number;
  /** Aborted by stop(). */
  stopping: AbortSignal;
  inFlight: Set<Promise<unknown>>;
}

/** What a call's log line says about its request (chosen fields: never secrets). */
export interface CallFields {
  volume_id?: string;
  target?: string;
}

type Handler<Req, Res> = (request: Req, context: CallContext) => Promise<Res>;

/** How long before the deadline the call's signal fires, so that its answer still reaches the client. */
function margin(remainingMs: number): number {
  return Math.min(500, Math.max(0, remainingMs / 10));
}

function budgetOf(call: grpc.ServerUnaryCall<unknown, unknown>, maxCallMs: number): number {
  const deadline = call.getDeadline();
  const at = deadline instanceof Date ? deadline.getTime() : deadline;
  if (!Number.isFinite(at)) return maxCallMs;
  const remaining = at - Date.now();
  return Math.floor(Math.max(0, Math.min(maxCallMs, remaining - margin(remaining))));
}

function levelOf(code: GrpcCodeName): 'info' | 'warn' | 'error' {
  if (code === 'OK') return 'info';
  return code === 'INTERNAL' || code === 'UNKNOWN' || code === 'DATA_LOSS' ? 'error' : 'warn';
}

/** A grpc-js unary handler around `handler`. */
export function unary<Req, Res>(method: string, options: RpcOptions, fields: (request: Req) => CallFields, handler: Handler<Req, Res>): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    const started = performance.now();
    const request = call.request;
    let about: CallFields = {};
    let timedOut = false;
    const done = (code: GrpcCodeName, message?: string, error?: unknown): void => {
      const line = {
        method,
        ...(about.volume_id === undefined ? {} : { volume_id: about.volume_id.slice(0, 256) }),
        ...(about.target === undefined ? {} : { target: about.target.slice(0, 4096) }),
        code,
        duration_ms: Math.round((performance.now() - started) * 1000) / 1000,
        ...(message === undefined ? {} : { error: message }),
        // A bug (no error code): its stack, for the agent's log only.
        ...(code === 'INTERNAL' && (error as { code?: unknown } | null)?.code === undefined && error instanceof Error ? { stack: error.stack } : {}),
      };
      options.log[levelOf(code)](line, code === 'OK' ? `${method} ok` : `${method} failed: ${code}`);
    };

    // The answer cannot fail the call twice; a call already gone cannot hear it anyway.
    const answer = (send: () => void): void => {
      try {
        send();
      } catch (error) {
        options.log.error({ method, error: error instanceof Error ? error.message : String(error) }, `${method}: the answer could not be sent`);
      }
    };
    const run = (async () => {
      // One controller per call, fired by the deadline, the client's cancel
      // or the server's stop; every listener and timer is gone when the call
      // ends (no AbortSignal.any on the long-lived stop signal).
      const controller = new AbortController();
      const onStop = (): void => controller.abort(options.stopping.reason);
      let timer: NodeJS.Timeout | undefined;
      try {
        about = fields(request);
        const budget = budgetOf(call as grpc.ServerUnaryCall<unknown, unknown>, options.maxCallMs);
        timer = setTimeout(() => {
          timedOut = true;
          controller.abort(new DOMException('the call reached its deadline', 'TimeoutError'));
        }, budget);
        call.once('cancelled', () => controller.abort(new DOMException('the client cancelled the call', 'AbortError')));
        if (options.stopping.aborted) onStop();
        else options.stopping.addEventListener('abort', onStop, { once: true });
        const response = await handler(request, { signal: controller.signal, lockTimeoutMs: budget });
        done('OK');
        answer(() => callback(null, response));
      } catch (error) {
        const code = grpcCodeFor(error, { deadlinePassed: timedOut });
        const message = messageOf(error, about, options.nodeId, code);
        done(code, message, error);
        answer(() => callback(statusOf(code, message)));
      } finally {
        clearTimeout(timer);
        options.stopping.removeEventListener('abort', onStop);
      }
    })();
    options.inFlight.add(run);
    void run.finally(() => options.inFlight.delete(run));
  };
}

/** What failed, on which volume and node, and what to do: for `kubectl describe pod`. */
function messageOf(error: unknown, about: CallFields, nodeId: string, code: GrpcCodeName): string {
  const where = about.volume_id ? `volume ${shownId(about.volume_id)} on node ${nodeId}` : `node ${nodeId}`;
  if (error instanceof CsiError) return `${where}: ${error.message}`;
  const text = error instanceof Error ? error.message : String(error);
  if ((error as { code?: unknown } | null)?.code === undefined && code === 'INTERNAL') {
    return `${where}: internal error in fscrypt-local (${text}); the agent's log has the details`;
  }
  return `${where}: ${text}`;
}
