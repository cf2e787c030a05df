// `fscrypt-local smoke`, run as an admin runs it: it passes on this machine
// (scratch image and an encrypt-capable pool), fails readably with a remedy
// on tmpfs, on ext4 without the encrypt feature and when not root, cleans
// up after itself (also on SIGINT), and its on-disk checks can fail: the
// scanners find plaintext when it is there.
import { spawn } from 'node:child_process';
import { chmodSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { blockDeviceOf, fileExtents, readExtents, scanFile } from '../../lib/cli/smoke/raw-device.js';
import { findTool, runTool } from '../../lib/cli/smoke/tools.js';
import { buildCli, runCli, type CliResult } from '../fixtures/cli.js';
import { ext4, syncFs, tmpfs } from '../fixtures/system/scratch-fs.js';

const CLI = buildCli(t);

function cli(args: string[], uid?: number): CliResult {
  return runCli(CLI, args, { timeoutMs: 280_000, ...(uid === undefined ? {} : { uid }) });
}

interface Check {
  name: string;
  ok: boolean;
  detail: string;
  remedy?: string;
  skipped?: boolean;
}
interface Report {
  ok: boolean;
  mode: string;
  checks: Check[];
  notRun: string[];
}

function report(result: CliResult): Report {
  try {
    return JSON.parse(result.stdout) as Report;
  } catch {
    throw new Error(`not JSON (exit ${result.code}): ${result.stdout}\n${result.stderr}`);
  }
}

const LIFECYCLE = ['init-slot', 'prepare', 'unlock', 'write-read', 'lock', 'locked-access', 'ciphertext-on-disk', 'unlock-again', 'erase', 'unrecoverable', 'background-deletion'];

/** Mounts whose source or mount point mention smoke's scratch directories. */
function smokeMounts(): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((line) => line.includes('fscrypt-local-smoke-'));
}

t.test('smoke --json passes on this machine: every check ok, in order, and nothing is left behind', async (t) => {
  const workdir = t.testdir();
  const result = cli(['smoke', '--json', '--workdir', workdir]);
  const body = report(result);
  t.equal(result.code, 0, result.stdout);
  t.equal(body.ok, true);
  t.equal(body.mode, 'scratch');
  t.same(
    body.checks.map((c) => c.name),
    ['root', 'kernel-support', 'tools', 'scratch-filesystem', 'encrypt-feature', 'keyring-quota', ...LIFECYCLE],
  );
  for (const check of body.checks) t.ok(check.ok && check.skipped !== true, `${check.name}: ${check.detail}`);
  t.same(body.notRun, []);
  t.same(readdirSync(workdir), [], 'the image, its mount point and the KEK file are gone');
  t.same(smokeMounts(), [], 'nothing mounted');
});

t.test('smoke prints a readable checklist without --json', async (t) => {
  const result = cli(['smoke', '--workdir', t.testdir()]);
  t.equal(result.code, 0, result.stdout);
  t.match(result.stdout, /^ {2}✓ root +running as root/m);
  t.match(result.stdout, /^ {2}✓ ciphertext-on-disk +.*neither the plaintext nor the file name/m);
  t.match(result.stdout, /^PASSED: all 17 checks passed$/m);
});

t.test('smoke --pool on an encrypt-capable ext4 runs the lifecycle in a temporary slot, reading the raw device', async (t) => {
  const pool = ext4(t);
  const result = cli(['smoke', '--json', '--pool', pool.mountpoint, '--workdir', t.testdir()]);
  const body = report(result);
  t.equal(result.code, 0, result.stdout);
  t.equal(body.mode, 'pool');
  const onDisk = body.checks.find((c) => c.name === 'ciphertext-on-disk');
  t.match(onDisk, { ok: true, detail: /read from \/dev\/loop\d+ with O_DIRECT hold no plaintext/ });
  t.notOk(onDisk?.skipped, 'verified, not skipped');
  t.same(
    readdirSync(pool.mountpoint).filter((n) => n !== 'lost+found'),
    [],
    'the temporary slot is removed',
  );
});

for (const [what, make, remedy] of [
  ['tmpfs', (t: Parameters<typeof tmpfs>[0]) => tmpfs(t), /^put the pool on ext4 .*`tune2fs -O encrypt <device>`.*tmpfs cannot be encrypted/],
  ['ext4 without the encrypt feature', (t: Parameters<typeof tmpfs>[0]) => ext4(t, { encrypt: false }), /^run `tune2fs -O encrypt \/dev\/loop\d+`/],
] as const) {
  t.test(`smoke --pool on ${what} fails at encrypt-feature with a remedy naming tune2fs -O encrypt`, async (t) => {
    const pool = make(t);
    const result = cli(['smoke', '--json', '--pool', pool.mountpoint]);
    t.equal(result.code, 3, 'exit 3: a smoke check failed');
    const body = report(result);
    t.equal(body.ok, false);
    const failed = body.checks.filter((c) => !c.ok);
    t.same(
      failed.map((c) => c.name),
      ['encrypt-feature'],
      'exactly the encrypt-feature check fails',
    );
    t.match(failed[0]?.detail, new RegExp(`${pool.mountpoint}`), 'the detail names the pool');
    t.match(failed[0]?.remedy, remedy);
    t.same(body.notRun, LIFECYCLE, 'the lifecycle is not run');

    const human = cli(['smoke', '--pool', pool.mountpoint]);
    t.equal(human.code, 3);
    t.match(human.stdout, /^ {2}✗ encrypt-feature +.+$/m, 'a ✗ line for the check');
    t.match(human.stdout, /^ +to fix: .*tune2fs -O encrypt/m, 'the remedy under it');
    t.match(human.stdout, /not run \(an earlier check failed\): init-slot, prepare/);
    t.match(human.stdout, /^FAILED: 1 of 6 checks failed, 11 not run$/m);
  });
}

t.test('smoke as an unprivileged user fails at root with a remedy, and makes nothing', async (t) => {
  const workdir = t.testdir();
  chmodSync(workdir, 0o777);
  const result = cli(['smoke', '--json', '--workdir', workdir], 65534);
  t.equal(result.code, 3, result.stderr);
  const body = report(result);
  t.match(body.checks[0], { name: 'root', ok: false, remedy: /run it as root/ });
  t.ok(body.notRun.includes('scratch-filesystem'), 'no scratch filesystem attempted');
  t.same(readdirSync(workdir), []);
});

t.test('smoke interrupted with SIGINT exits 130 and removes what it made', async (t) => {
  const workdir = t.testdir();
  const child = spawn(process.execPath, [CLI, 'smoke', '--progress', '--workdir', workdir], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  const code = await new Promise<number | null>((resolve) => {
    let sent = false;
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
      // Interrupt once the scratch filesystem is mounted and the lifecycle is under way.
      if (!sent && /✓ init-slot/.test(stderr)) {
        sent = true;
        child.kill('SIGINT');
      }
    });
    child.on('exit', (status) => resolve(status));
  });
  t.equal(code, 130, stderr);
  t.match(stderr, /SIGINT: cleaning up/);
  t.same(readdirSync(workdir), [], 'image and KEK file removed');
  t.same(smokeMounts(), [], 'nothing left mounted');
});

t.test("the on-disk scanners find plaintext when it is there (so the smoke check can fail)", async (t) => {
  const dir = t.testdir();
  const file = join(dir, 'haystack');
  const needle = Buffer.from('NEEDLE-ACROSS-A-CHUNK-BOUNDARY');
  // Place the needle across the scanner's 4 MiB chunk boundary.
  const haystack = Buffer.alloc(8 * 1024 * 1024, 0x41);
  needle.copy(haystack, 4 * 1024 * 1024 - 10);
  writeFileSync(file, haystack);
  t.same(await scanFile(file, [needle, Buffer.from('NOT-THERE')]), [true, false]);

  const fs = ext4(t, { encrypt: false });
  const plain = join(fs.mountpoint, 'plain');
  writeFileSync(plain, Buffer.alloc(256 * 1024, 'PLAINTEXT-ON-A-RAW-DEVICE|'));
  syncFs(fs.mountpoint);
  const { blockSize, extents } = await fileExtents(plain);
  t.equal(blockSize, 4096);
  t.ok(extents.length > 0, 'FIEMAP gives extents');
  const device = await blockDeviceOf(fs.mountpoint);
  t.match(device, /^\/dev\/loop\d+$/);
  const bytes = await readExtents(device!, blockSize, extents);
  t.ok(bytes.includes(Buffer.from('PLAINTEXT-ON-A-RAW-DEVICE|')), 'the plaintext is read back from the device');
  t.ok(await scanFile(fs.image!, [Buffer.from('PLAINTEXT-ON-A-RAW-DEVICE|')]).then(([found]) => found), 'and found in the image');
});

t.test('a missing or failing tool is an error that carries what the tool said', async (t) => {
  t.equal(findTool('fscrypt-local-no-such-tool'), undefined);
  await t.rejects(runTool('fscrypt-local-no-such-tool', []), /fscrypt-local-no-such-tool not found/);
  await t.rejects(runTool('filefrag', ['-e', '-v', '/nonexistent/file']), /filefrag -e -v \/nonexistent\/file failed: .*No such file/);
});
