// A kubelet stand-in that retries, for bench/agent.mjs: a worker thread (its
// own event loop, as kubelet is a process of its own) that makes CSI Node
// calls with a real grpc-js client on the agent's unix socket (authority
// localhost, as kubelet dials it) and, like kubelet, retries a call that
// fails: after 500 ms, then twice as long each time (kubelet's volume
// operation backoff starts at 500 ms and doubles), up to MAX_ATTEMPTS.
//
// bench/lib/standins/csi-kubelet.mjs stops at the first failure, which suits a
// benchmark of the CSI server alone; the whole agent also does background
// work (reconciles, its census of every slot) that can make a call fail
// once, and what a pod then waits for is the call and its retries. So each
// call reports { start, end, attempts, errors }: from the first attempt's
// start to the successful attempt's answer (process.hrtime ns), how many
// attempts it took and why the failed ones failed.
//
// Messages: { id, batches } → { id, results } in the same shape, or
// { id, error } if a call still failed after MAX_ATTEMPTS. Batches run one
// after another, the calls of a batch all at once.
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';

const CALL_DEADLINE_MS = 120_000; // kubelet's timeout for a CSI call
const FIRST_RETRY_MS = 500;
const MAX_ATTEMPTS = 6;

/** Starts the worker on `socket`. Returns { run(batches), close() }. */
export function startRetryingKubelet(socket) {
  const worker = new Worker(new URL(import.meta.url), { workerData: { retryingKubeletSocket: socket } });
  let next = 0;
  const pending = new Map();
  worker.on('message', ({ id, results, error }) => {
    const { resolve, reject } = pending.get(id);
    pending.delete(id);
    if (error) reject(new Error(error));
    else resolve(results);
  });
  const failAll = (error) => {
    for (const { reject } of pending.values()) reject(error);
    pending.clear();
  };
  worker.on('error', failAll);
  worker.on('exit', (code) => failAll(new Error(`the kubelet worker exited (${code})`)));
  return {
    run(batches) {
      const id = next++;
      return new Promise((resolve, reject) => {
        pending.set(id, { resolve, reject });
        worker.postMessage({ id, batches });
      });
    },
    close: () => worker.terminate(),
  };
}

async function serve(socket) {
  const grpc = await import('@grpc/grpc-js');
  const { csiPackage } = await import('../../../dist/agent/csi/proto.js');
  const { Node } = csiPackage();
  const client = new Node(`unix://${socket}`, grpc.credentials.createInsecure(), { 'grpc.default_authority': 'localhost' });
  const attempt = (method, request) =>
    new Promise((resolve) => {
      client[method](request, { deadline: Date.now() + CALL_DEADLINE_MS }, (error) =>
        resolve(error ? `${grpc.status[error.code] ?? error.code}: ${String(error.details).split('\n')[0].slice(0, 300)}` : undefined),
      );
    });
  const call = async ({ method, request }) => {
    const start = process.hrtime.bigint();
    const errors = [];
    for (let attempts = 1; ; attempts++) {
      const error = await attempt(method, request);
      if (error === undefined) return { start: Number(start), end: Number(process.hrtime.bigint()), attempts, errors };
      errors.push(error);
      if (attempts === MAX_ATTEMPTS) throw new Error(`${method} ${request.volume_id} failed ${attempts} times; last: ${error}`);
      await new Promise((resolve) => setTimeout(resolve, FIRST_RETRY_MS * 2 ** (attempts - 1)));
    }
  };
  parentPort.on('message', async ({ id, batches }) => {
    try {
      const results = [];
      for (const batch of batches) results.push(await Promise.all(batch.map(call)));
      parentPort.postMessage({ id, results });
    } catch (error) {
      parentPort.postMessage({ id, error: error.message });
    }
  });
}

if (!isMainThread && workerData?.retryingKubeletSocket) await serve(workerData.retryingKubeletSocket);
