// A deadline on every request the agent makes to the API server. client-node
// has none: a call whose connection hangs (an API server that accepts and
// never answers, a half-open connection after a load balancer fails over)
// waits forever, and a slot's work item waits with it, so a reclaim would
// never finish even after the API server is healthy again. With a deadline
// the call fails, the work queue retries, and a retry on a fresh connection
// succeeds. Watches are not covered: they are long by design, and the
// informer's staleness watchdog restarts a silent one.
import { Observable, type ConfigurationOptions, type RequestContext } from '@kubernetes/client-node';

/** No single call of the agent (a PV create, one node's PV list) needs longer from a healthy API server. */
export const DEFAULT_API_TIMEOUT_MS = 30_000;

/** Request options for client-node whose request is aborted when `signal` fires; `options` (e.g. a header) are kept. */
export function abortableOptions(signal: AbortSignal, options: ConfigurationOptions = {}): ConfigurationOptions {
  const abortable = {
    pre(context: RequestContext): Observable<RequestContext> {
      context.setSignal(signal);
      return new Observable(Promise.resolve(context));
    },
    post: <T>(context: T): Observable<T> => new Observable(Promise.resolve(context)),
  };
  return { ...options, middleware: [...(options.middleware ?? []), abortable], middlewareMergeStrategy: 'append' };
}

/** Runs `call` with options that abort it after `timeoutMs`; its failure says so when the deadline was the cause. */
export async function withDeadline<T>(timeoutMs: number, what: string, call: (options: ConfigurationOptions) => Promise<T>): Promise<T> {
  const signal = AbortSignal.timeout(timeoutMs);
  try {
    return await call(abortableOptions(signal));
  } catch (error) {
    if (signal.aborted) throw new RequestTimeout(`${what}: no answer from the API server within ${timeoutMs / 1000} s (is it overloaded, or the connection to it broken?); retrying`, { cause: error });
    throw error;
  }
}

export class RequestTimeout extends Error {
  override readonly name = 'RequestTimeout';
}
