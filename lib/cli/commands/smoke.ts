// smoke: the node-level smoke test an admin runs on a node (or the Job in
// deploy/smoke-job.yaml runs): kernel support, the encrypt feature, keyring
// quota, then a full volume lifecycle on a scratch loop-backed ext4 image
// (default) or in a temporary slot inside --pool, with a checklist that
// says what to do about each failure.
import { lstat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import type { Command } from 'commander';
import { findMount } from '../../kernel/index.js';
import { absolutePath, action, withCommonOptions, withHelp, type CommonOptions, type RunState } from '../command-kit.js';
import { EXIT, UsageError } from '../exit-codes.js';
import { CheckFailure, Checklist, renderReport, type SmokeCheck, type SmokeReport } from '../smoke/checklist.js';
import { CleanupStack } from '../smoke/cleanup.js';
import { checkEncryptFeature, checkKernel, checkKeyQuota, checkRoot, checkTools } from '../smoke/environment.js';
import { LIFECYCLE_CHECKS, runLifecycle, type LifecycleSite } from '../smoke/lifecycle.js';
import { makeScratchFilesystem } from '../smoke/scratch-filesystem.js';

interface SmokeOptions extends CommonOptions {
  pool?: string;
  sizeMib: string;
  workdir?: string;
}

const SCRATCH_TOOLS = ['mkfs.ext4', 'mount', 'umount', 'losetup', 'sync'];
const POOL_TOOLS = ['sync'];
const RAW_DEVICE_TOOLS = ['filefrag', 'dd'];

export function registerSmoke(program: Command, state: RunState): void {
  const command = program
    .command('smoke')
    .summary('prove fscrypt works on this node: checks plus a full volume lifecycle')
    .description(
      'Check this node: running as root, kernel support, tools, the filesystem encrypt feature, keyring quota headroom; then run a full ' +
        'volume lifecycle (init-slot, prepare, unlock, write/read, lock, ciphertext on the raw device, erase, unrecoverability, background deletion) ' +
        'on a scratch loop-backed ext4 image made for the test (default), or in a temporary slot inside --pool. ' +
        'Everything made is removed afterwards, also on failure and on Ctrl-C. Prints a checklist; a failed check says how to fix it.',
    )
    .option('--pool <PATH>', 'run the lifecycle in a temporary slot inside PATH (a directory on an existing filesystem) instead of a scratch image')
    .option('--size-mib <N>', 'size of the scratch image in MiB', '64')
    .option('--workdir <DIR>', 'where the scratch image and the temporary KEK file go (default: the system temp directory)');
  withCommonOptions(command);
  withHelp(command, {
    details:
      'JSON result: { ok, mode, target, checks: [{ name, ok, detail, remedy?, skipped? }], notRun: [name] }.\n' +
      `Checks, in order: root, kernel-support, tools, scratch-filesystem | pool, encrypt-feature, keyring-quota, ${LIFECYCLE_CHECKS.join(', ')}.`,
    examples: [
      'sudo fscrypt-local smoke',
      'fscrypt-local smoke --json',
      'fscrypt-local smoke --pool /mnt/disks/ssd0',
      "kubectl debug node/<node> -it --profile=sysadmin --image=ghcr.io/fscrypt-local/fscrypt-local:0.1.0 -- sh -c 'mount --rbind /host/dev /dev && fscrypt-local smoke'",
      'kubectl apply -f deploy/smoke-job.yaml   # after setting the node name in it; see docs/cli.md',
    ],
  });
  command.action(
    action(state, 'smoke', async ({ output, progress }, options: SmokeOptions) => {
      const sizeMiB = Number(options.sizeMib);
      if (!Number.isInteger(sizeMiB) || sizeMiB < 16 || sizeMiB > 4096) throw new UsageError('--size-mib takes a whole number of MiB from 16 to 4096');
      const pool = options.pool === undefined ? undefined : absolutePath(options.pool);
      const workdir = options.workdir === undefined ? tmpdir() : absolutePath(options.workdir);
      const checklist = new Checklist((check: SmokeCheck) => progress.update(`${check.ok ? '✓' : '✗'} ${check.name}`));
      const cleanup = new CleanupStack();
      const report: SmokeReport = { ok: false, mode: pool === undefined ? 'scratch' : 'pool', target: pool ?? null, checks: checklist.checks, notRun: [] };
      const notRun = (...names: string[]): void => void report.notRun.push(...names);
      try {
        const root = await checklist.run('root', checkRoot);
        const kernel = await checklist.run('kernel-support', checkKernel);
        const tools = await checklist.run('tools', () => checkTools(pool === undefined ? SCRATCH_TOOLS : POOL_TOOLS, pool === undefined ? [] : RAW_DEVICE_TOOLS));

        let site: LifecycleSite | undefined;
        if (pool === undefined) {
          if (root && kernel && tools) {
            await checklist.run(
              'scratch-filesystem',
              async () => {
                const fs = await makeScratchFilesystem(workdir, sizeMiB, cleanup);
                site = { mode: 'scratch', base: fs.mountpoint, image: fs.image, workdir };
                report.target = fs.mountpoint;
                return `${sizeMiB} MiB ext4 image (mkfs.ext4 -O encrypt) on ${fs.device}, mounted at ${fs.mountpoint}`;
              },
              'loop devices are needed: `modprobe loop`; in a container run privileged with the host /dev mounted (deploy/smoke-job.yaml does), or use --pool DIR',
            );
          } else {
            notRun('scratch-filesystem');
          }
        } else {
          await checklist.run('pool', async () => {
            const stat = await lstat(pool).catch(() => undefined);
            if (!stat?.isDirectory()) {
              throw new CheckFailure(`${pool} is ${stat ? 'not a directory' : 'missing'}`, 'pass a directory on the filesystem the volumes will use, e.g. a slot mount point under the hostDir');
            }
            site = { mode: 'pool', base: pool, workdir };
            const mount = await findMount(pool);
            return `${pool}: ${mount ? `${mount.fsType} on ${mount.source}, mounted at ${mount.mountPoint}` : 'filesystem unknown'}`;
          });
        }

        const feature = site !== undefined && (await checklist.run('encrypt-feature', () => checkEncryptFeature(site!.base)));
        if (site === undefined) notRun('encrypt-feature');
        const quota = await checklist.run('keyring-quota', checkKeyQuota);

        if (site !== undefined && feature && quota && root && kernel && tools) {
          notRun(...(await runLifecycle(site, checklist, progress, cleanup)));
        } else {
          notRun(...LIFECYCLE_CHECKS);
        }
      } finally {
        const failures = await cleanup.run();
        if (failures.length > 0) {
          checklist.add({
            name: 'cleanup',
            ok: false,
            detail: `could not remove everything the test made: ${failures.join('; ')}`,
            remedy: 'remove those by hand (`findmnt | grep fscrypt-local-smoke`, `umount`, `rm -r`)',
          });
        }
      }
      report.ok = checklist.ok && report.notRun.length === 0;
      progress.clear();
      output.result(report, renderReport(report), report.ok);
      return report.ok ? EXIT.OK : EXIT.SMOKE_FAILED;
    }),
  );
}
