// How busy the rest of the machine was while a benchmark ran. These VMs
// have 2 vCPUs shared with whatever else runs (builds, test suites), and a
// busy neighbour delays every thread wake-up, so async latencies are only
// comparable when this is low.
//
// From /proc/stat (all CPUs), split three ways:
//   other   user processes other than this one and its waited-for children:
//           the neighbours that make a run unfair;
//   kernel  kernel threads (jbd2, loop workers, writeback, kworkers), which
//           mostly do this benchmark's own I/O: reported, not held against
//           the run (a kworker that exits mid-run takes its ticks with it,
//           which counts them as "other");
//   steal   time the hypervisor gave the vCPUs to someone else.
import { readdirSync, readFileSync } from 'node:fs';
import { cpus } from 'node:os';

const TICKS_PER_SECOND = 100; // USER_HZ on Linux
const PF_KTHREAD = 0x00200000;

function machineTicks() {
  // cpu  user nice system idle iowait irq softirq steal ...
  const fields = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0].trim().split(/\s+/).slice(1).map(Number);
  const steal = fields[7] ?? 0;
  return { busy: fields.reduce((sum, x) => sum + x, 0) - fields[3] - fields[4] - steal, steal };
}

/** Fields of /proc/<pid>/stat from the 3rd (state) on; the command name may contain spaces. */
function statFields(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ').map(Number);
}

function ownTicks() {
  const [utime, stime, cutime, cstime] = statFields('self').slice(11, 15);
  return utime + stime + cutime + cstime;
}

/** CPU ticks of every kernel thread alive now. */
function kernelThreadTicks() {
  let ticks = 0;
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const fields = statFields(name);
      if (fields[6] & PF_KTHREAD) ticks += fields[11] + fields[12];
    } catch {
      // exited while we looked
    }
  }
  return ticks;
}

function sample() {
  return { ...machineTicks(), own: ownTicks(), kernel: kernelThreadTicks(), at: process.hrtime.bigint() };
}

/**
 * Starts measuring; the returned function reports, since the start, the
 * percentages of all CPUs used by other processes, by kernel threads, and
 * lost to steal: { otherCpuPercent, kernelCpuPercent, stealPercent, cpus }.
 */
export function startContentionMeter() {
  const start = sample();
  return () => {
    const end = sample();
    const capacity = (Number(end.at - start.at) / 1e9) * TICKS_PER_SECOND * cpus().length;
    const percent = (ticks) => Math.max(0, Math.round((ticks / capacity) * 1000) / 10);
    const kernel = end.kernel - start.kernel;
    return {
      otherCpuPercent: percent(end.busy - start.busy - (end.own - start.own) - kernel),
      kernelCpuPercent: percent(kernel),
      stealPercent: percent(end.steal - start.steal),
      cpus: cpus().length,
    };
  };
}
