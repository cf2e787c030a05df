// How long this process makes work wait, sampled while a benchmark runs: the
// event loop's delay (perf_hooks' histogram: how late a timer fires, i.e. how
// long the loop was busy with something else), and a thread-pool round trip
// (an fs call that touches no disk: its time is the wait for a free pool
// thread, for a CPU to run it on, and for the loop to take its result). A
// server whose calls wait on either shows it here; what waits on its own
// disk does not.
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { stat } from 'node:fs/promises';
import { summarize } from './stats.mjs';

const POOL_SAMPLE_INTERVAL_MS = 10;
const LOOP_RESOLUTION_MS = 2;

const ms = (ns) => Math.round(ns / 1e3) / 1e3;
/** The histogram holds each timer's whole interval: its lateness is what exceeds the resolution. */
const late = (ns) => ms(Math.max(0, ns - LOOP_RESOLUTION_MS * 1e6));

/**
 * Starts sampling. The returned function stops it and reports
 * { eventLoopDelay: { p50, p99, max }, poolRoundTrip: { n, p50, p99, max } } in ms.
 */
export function startWaitProbe() {
  const loop = monitorEventLoopDelay({ resolution: LOOP_RESOLUTION_MS });
  loop.enable();
  const pool = [];
  let running = true;
  const sampling = (async () => {
    while (running) {
      const start = process.hrtime.bigint();
      await stat('/proc/self');
      pool.push(Number(process.hrtime.bigint() - start));
      await new Promise((resolve) => setTimeout(resolve, POOL_SAMPLE_INTERVAL_MS));
    }
  })();
  return async () => {
    running = false;
    await sampling;
    loop.disable();
    const round = summarize(pool);
    return {
      eventLoopDelay: { p50: late(loop.percentile(50)), p99: late(loop.percentile(99)), max: late(loop.max) },
      poolRoundTrip: { n: round.n, p50: ms(round.median * 1000), p99: ms(round.p99 * 1000), max: ms(Math.max(...pool)) },
    };
  };
}
