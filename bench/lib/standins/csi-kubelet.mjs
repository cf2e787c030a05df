// A kubelet stand-in for bench/csi.mjs: a worker thread (its own event loop
// and CPU, as kubelet is a process of its own) that makes CSI calls with a
// real grpc-js client over the servers' unix sockets, dialled as kubelet
// dials them (authority localhost), and times each call from just before it
// is made until its answer arrives. Timestamps are process.hrtime (the
// monotonic clock), so the main thread can place them against what its
// servers observed.
//
// Messages from the main thread: { id, batches }, where batches run one
// after another and the calls of one batch all at once:
//   batches = [[{ server, method, request }, ...], ...]
// Answer: { id, results: [[{ start, end }, ...], ...] } in the same shape, or
// { id, error } naming the first call that failed (a benchmark only measures
// calls that succeed).
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';

const CALL_DEADLINE_MS = 120_000; // kubelet's timeout for a CSI call

/** Starts the worker: `sockets` maps a server's name to its socket path. Returns { run(batches), close() }. */
export function startKubelet(sockets) {
  const worker = new Worker(new URL(import.meta.url), { workerData: { sockets } });
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

async function serve() {
  const grpc = await import('@grpc/grpc-js');
  const { csiPackage } = await import('../../../dist/agent/csi/proto.js');
  const { Node } = csiPackage();
  const clients = Object.fromEntries(
    Object.entries(workerData.sockets).map(([name, socket]) => [name, new Node(`unix://${socket}`, grpc.credentials.createInsecure(), { 'grpc.default_authority': 'localhost' })]),
  );
  const call = ({ server, method, request }) =>
    new Promise((resolve, reject) => {
      const start = process.hrtime.bigint();
      clients[server][method](request, { deadline: Date.now() + CALL_DEADLINE_MS }, (error) => {
        const end = process.hrtime.bigint();
        if (error) reject(new Error(`${method} ${request.volume_id} on the ${server} server failed: ${grpc.status[error.code] ?? error.code}: ${error.details}`));
        else resolve({ start: Number(start), end: Number(end) });
      });
    });
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

if (!isMainThread && workerData?.sockets) await serve();
