// How busy the rest of the machine was during one phase of a benchmark whose
// work runs in helper processes (the agent, the fake API server).
// bench/lib/measure/contention.mjs counts a child's CPU as this benchmark's own only
// once the child has exited and been waited for; while it runs, its CPU
// shows as "other". This meter takes the helpers' CPU (from /proc/<pid>/stat)
// (and that of the processes they ran and waited for, such as mount(8)) back
// out of "other" and reports it on its own.
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { startContentionMeter } from './contention.mjs';

const TICKS_PER_SECOND = 100; // USER_HZ on Linux

/** CPU of a live process and of its children it has waited for (mount(8) and the like), in ticks (0 if it is gone). */
function processTicks(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ').map(Number);
    return fields[11] + fields[12] + fields[13] + fields[14];
  } catch {
    return 0;
  }
}

/**
 * Starts measuring; `pids` are the helper processes, alive for the whole
 * phase. The returned function reports contention.mjs's figures with the
 * helpers' share moved from otherCpuPercent to helpersCpuPercent.
 */
export function startPhaseContentionMeter(pids) {
  const stop = startContentionMeter();
  const start = process.hrtime.bigint();
  const before = pids.map(processTicks);
  return () => {
    const measured = stop();
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    const helpers = pids.map(processTicks).reduce((sum, ticks, i) => sum + ticks - before[i], 0);
    const helpersPercent = (helpers / (seconds * TICKS_PER_SECOND * cpus().length)) * 100;
    return {
      ...measured,
      otherCpuPercent: Math.max(0, Math.round((measured.otherCpuPercent - helpersPercent) * 10) / 10),
      helpersCpuPercent: Math.round(helpersPercent * 10) / 10,
    };
  };
}
