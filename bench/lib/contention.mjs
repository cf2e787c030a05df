// How busy the rest of the machine was while a benchmark ran. These VMs
// have 2 vCPUs shared with whatever else runs (builds, test suites), and a
// busy neighbour delays every thread wake-up, so async latencies are only
// comparable when this is low. Measured from /proc/stat (all CPUs) minus
// this process and its waited-for children (/proc/self/stat); kernel work
// done on our behalf in other threads (jbd2, loop workers) counts as "other".
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';

const TICKS_PER_SECOND = 100; // USER_HZ on Linux

function busyTicks() {
  // cpu  user nice system idle iowait irq softirq steal ...
  const fields = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0].trim().split(/\s+/).slice(1).map(Number);
  const total = fields.reduce((sum, x) => sum + x, 0);
  return total - fields[3] - fields[4];
}

function ownTicks() {
  // The command name may contain spaces; fields after ')' start at state (3rd).
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ').map(Number);
  const [utime, stime, cutime, cstime] = fields.slice(11, 15);
  return utime + stime + cutime + cstime;
}

/** Starts measuring; the returned function reports { otherCpuPercent, cpus } since the start. */
export function startContentionMeter() {
  const start = { busy: busyTicks(), own: ownTicks(), at: process.hrtime.bigint() };
  return () => {
    const seconds = Number(process.hrtime.bigint() - start.at) / 1e9;
    const otherTicks = busyTicks() - start.busy - (ownTicks() - start.own);
    const capacity = seconds * TICKS_PER_SECOND * cpus().length;
    return { otherCpuPercent: Math.max(0, Math.round((otherTicks / capacity) * 1000) / 10), cpus: cpus().length };
  };
}
