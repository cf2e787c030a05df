// The soak (issue 11): the agent as a child process serving 8 slots of two
// classes (a KEK file, a KMS v2 plugin) on two loop ext4 filesystems, and
// concurrent publish / unpublish / release cycles on every volume through it,
// for FSCRYPT_LOCAL_SOAK_SECONDS (default 90 s; hours by the variable, with
// tap's per-file timeout off: see docs/testing.md). test/fixtures/campaign/soak.ts
// drives the cycles, soak-checks.ts checks the node after every cycle.
//
// What must hold, checked after every unpublish and every recycle and once
// more at the end: no key in the kernel for a volume that is not published,
// no mount at a target that is not published (nor two stacked at one that
// is), nothing left under kubelet's pods directory, every PV of a slot, and
// a settled slot with exactly one PV (Available or Bound) for its current
// generation and one wrapped key; no plaintext on either raw disk. And the
// agent's resources do not grow with the cycles:
//  - fds: the idle agent after the last cycle (and the trash drained) is
//    within IDLE_FD_SLACK (8) of the idle agent before the first: a leaked
//    fd per cycle (an unclosed state file, a socket per watch) is dozens
//    over the CI run alone, hundreds in a long one. Over the samples, which
//    are taken mid-cycle, the median of the last quarter is within FD_SLACK
//    (40) of the first quarter's: a sample counts the work in flight (8
//    volumes, up to two RPCs each, a few files, a socket to the API server
//    and a mount or umount child apiece), which grows with the machine's
//    load and not with the cycles, and is bounded by the volumes; a leak
//    is not.
//  - RSS and heap: sampled after a full collection in the child, so garbage
//    does not count. RSS_SLACK_MIB (40 MiB) between the medians of the third
//    and the last quarter (after warm-up):
//    a process that leaks nothing still grows its RSS by tens of MiB after
//    start-up, since V8 sizes its old space and semi-spaces to the working
//    set and does not hand pages back at once, glibc gives each thread-pool
//    thread an arena that it keeps, and the informer's cache and the gRPC
//    channels reach their steady size only after the first cycles. A leak
//    that matters on a node (a volume's worth of buffers per cycle) crosses
//    that within the hours of a long run; the heap bound (HEAP_SLACK_MIB,
//    tighter, since the collected heap has none of that slack) catches a
//    retained object per cycle sooner.
// And the agent, run as the DaemonSet runs it (its thread pool and node
// flags, read from deploy/base/daemonset.yaml), fits the memory it is given
// there: its peak RSS over the whole soak (VmHWM) plus one Argon2id run of a
// passphrase key source within the limit, its steady RSS within the request.
// No timing is asserted: the figures are counts and sizes.
import t from 'tap';
import { DEFAULT_ARGON2_COSTS } from '../../lib/keys/index.js';
import { recordFigure, soakMs } from '../fixtures/campaign/campaign.js';
import { median, quartileMedians, runSoak, type Sample } from '../fixtures/campaign/soak.js';
import { deployedAgent } from '../fixtures/campaign/soak-node.js';

const COMMAND = 'npx tap test/agent/soak.test.ts';
const LONG_COMMAND = 'FSCRYPT_LOCAL_SOAK_SECONDS=14400 npx tap -t0 test/agent/soak.test.ts';
const FD_SLACK = 40;
const IDLE_FD_SLACK = 8;
const RSS_SLACK_MIB = 40;
const HEAP_SLACK_MIB = 16;
const MIB = 1024 * 1024;

function table(samples: Sample[], rows = 16): string {
  const step = Math.max(1, Math.ceil(samples.length / rows));
  const picked = samples.filter((_, i) => i % step === 0 || i === samples.length - 1);
  const line = (s: Sample) => `${s.at.toFixed(0).padStart(6)} ${String(s.cycles).padStart(7)} ${String(s.fds).padStart(4)} ${(s.rssBytes / MIB).toFixed(1).padStart(8)} ${(s.heapUsedBytes / MIB).toFixed(1).padStart(9)}`;
  return ['     s  cycles  fds  RSS MiB  heap MiB', ...picked.map(line)].join('\n');
}

t.test('concurrent publish, unpublish and release cycles through the agent leak no key, mount, PV, fd or memory', async (t) => {
  const durationMs = soakMs(90);
  const report = await runSoak(t, { durationMs, slotsPerClass: 4, sampleEveryMs: Math.max(2000, Math.round(durationMs / 400)) });
  const command = durationMs === 90_000 ? COMMAND : `FSCRYPT_LOCAL_SOAK_SECONDS=${durationMs / 1000} npx tap -t0 test/agent/soak.test.ts`;

  t.same(report.violations, [], 'no check failed during or after the soak');
  t.equal(report.keysLeaked, 0, 'no key in the kernel for a volume that was not published');
  t.equal(report.mountsLeaked, 0, 'no mount at a target that was not published');
  t.same(report.plaintextOnDisk, [], "no pod's plaintext on either raw disk");
  t.ok(report.cleanStop, 'SIGTERM stopped the agent with exit 0 and it removed its socket');
  t.equal(report.logCounts.error ?? 0, 0, 'the agent logged no error');
  t.equal(report.logCounts.fatal ?? 0, 0, 'nor a fatal one');
  t.equal(report.logCounts.unparsed ?? 0, 0, 'nor anything but log lines on stderr');
  for (const [volume, cycles] of Object.entries(report.cyclesPerVolume)) t.ok(cycles >= 2, `volume ${volume} went round at least twice (${cycles})`);
  t.equal(report.publishes, report.unpublishes, 'every publish was unpublished');
  t.equal(report.recycles, report.cycles, 'every cycle ended in a recycle');
  t.ok(report.samples.length >= 8, `enough samples for quartiles (${report.samples.length})`);

  const fds = quartileMedians(report.samples.map((s) => s.fds));
  const rss = quartileMedians(report.samples.map((s) => s.rssBytes / MIB));
  const heap = quartileMedians(report.samples.map((s) => s.heapUsedBytes / MIB));
  const kinds = (m: Map<string, number>) => [...m].sort((a, b) => b[1] - a[1]).map(([k, n]) => `${n}×${k}`).join(', ');
  const fdDiagnosis = `fd kinds before: ${kinds(report.fdKinds.before)}\nafter: ${kinds(report.fdKinds.after)}`;
  t.ok(fds.last <= fds.first + FD_SLACK, `fds: last-quarter median ${fds.last} within ${FD_SLACK} of the first quarter's ${fds.first}`, { diagnostic: fds.last > fds.first + FD_SLACK, fdDiagnosis });
  t.ok(report.idleFds.after <= report.idleFds.before + IDLE_FD_SLACK, `fds of the idle agent: ${report.idleFds.after} after the last cycle, ${report.idleFds.before} before the first (within ${IDLE_FD_SLACK})`, { fdDiagnosis });
  // RSS after warm-up: the third quarter against the last. RSS climbs by
  // tens of MiB over the first half of a run with the collected heap flat:
  // native pages the allocator and V8 keep, not objects. A leak keeps
  // climbing through the second half; warm-up does not.
  const rssValues = report.samples.map((s) => s.rssBytes / MIB);
  const quarter = Math.max(1, Math.floor(rssValues.length / 4));
  const rssThird = median(rssValues.slice(rssValues.length - 2 * quarter, rssValues.length - quarter));
  t.ok(rss.last <= rssThird + RSS_SLACK_MIB, `RSS after warm-up: last-quarter median ${rss.last.toFixed(1)} MiB within ${RSS_SLACK_MIB} MiB of the third quarter's ${rssThird.toFixed(1)} MiB (first quarter ${rss.first.toFixed(1)} MiB)`);
  t.ok(heap.last <= heap.first + HEAP_SLACK_MIB, `heap after a collection: last-quarter median ${heap.last.toFixed(1)} MiB within ${HEAP_SLACK_MIB} MiB of the first quarter's ${heap.first.toFixed(1)} MiB`);

  const deployed = deployedAgent();
  const peak = Math.max(...report.samples.map((s) => s.peakRssBytes));
  const argon2 = DEFAULT_ARGON2_COSTS.memory * 1024;
  const mib = (bytes: number) => `${(bytes / MIB).toFixed(1)} MiB`;
  t.ok(
    peak + argon2 <= deployed.memoryLimitBytes,
    `the DaemonSet's memory limit (${mib(deployed.memoryLimitBytes)}) holds the agent's peak RSS (${mib(peak)}) and one Argon2id run (${mib(argon2)}); if not, raise it in deploy/base/daemonset.yaml or find what grew`,
  );
  t.ok(
    rss.last * MIB <= deployed.memoryRequestBytes,
    `the DaemonSet's memory request (${mib(deployed.memoryRequestBytes)}) holds the agent's steady RSS (last-quarter median ${mib(rss.last * MIB)})`,
  );

  const perVolume = Object.values(report.cyclesPerVolume);
  t.comment(
    `soak: ${report.durationS.toFixed(0)} s, ${report.volumes} volumes, ${report.cycles} cycles (per volume ${Math.min(...perVolume)}-${Math.max(...perVolume)}), ` +
      `${report.publishes} publishes, ${report.unpublishes} unpublishes (${report.backgroundKeyRemovals} finished their key removal in the background), ${report.recycles} recycles; ${report.nodeChecks} node checks, ${report.keysChecked} key statuses read, ${report.skipped} slot checks deferred`,
  );
  t.comment(`agent log lines by level: ${JSON.stringify(report.logCounts)}`);
  if (report.warnings.length > 0) t.comment(`its warnings (last ${Math.min(5, report.warnings.length)}):\n${report.warnings.slice(-5).join('\n')}`);
  t.comment(`fd, RSS and heap of the agent (after a full collection):\n${table(report.samples)}`);
  t.comment(`fd: first/last quartile median ${fds.first}/${fds.last}; idle ${report.idleFds.before} before, ${report.idleFds.after} after`);
  t.comment(`RSS MiB: first/last quartile median ${rss.first.toFixed(1)}/${rss.last.toFixed(1)}; heap MiB ${heap.first.toFixed(1)}/${heap.last.toFixed(1)}`);

  const figure = (name: string, value: number | string) => recordFigure({ area: 'soak', name, value, command });
  figure('duration s', Math.round(report.durationS));
  figure('volumes (2 classes: KEK file, KMS plugin)', report.volumes);
  figure('cycles', report.cycles);
  figure('cycles per volume (min-max)', `${Math.min(...perVolume)}-${Math.max(...perVolume)}`);
  figure('publishes', report.publishes);
  figure('unpublishes', report.unpublishes);
  figure('recycles', report.recycles);
  figure('key removals finished in the background (files busy at the last unpublish)', report.backgroundKeyRemovals);
  figure('node checks', report.nodeChecks);
  figure('key statuses checked', report.keysChecked);
  figure('fd: first/last quartile median', `${fds.first}/${fds.last}`);
  figure('fd of the idle agent: before the first cycle/after the last', `${report.idleFds.before}/${report.idleFds.after}`);
  figure('RSS MiB: first/third/last quartile median', `${rss.first.toFixed(1)}/${rssThird.toFixed(1)}/${rss.last.toFixed(1)}`);
  figure('peak RSS MiB (VmHWM), against the DaemonSet\'s memory limit', `${(peak / MIB).toFixed(1)} of ${(deployed.memoryLimitBytes / MIB).toFixed(0)}`);
  figure('heap MiB after GC: first/last quartile median', `${heap.first.toFixed(1)}/${heap.last.toFixed(1)}`);
  figure('keys leaked', report.keysLeaked);
  figure('mounts leaked', report.mountsLeaked);
  t.comment(`longer: ${LONG_COMMAND}`);
});
