// docs/install.md's claim, "every command below is run by a test, except
// those marked # cluster-only", made true here: every command of its ```sh
// blocks that is not marked is run, in order, with the node's paths moved
// into a scratch directory (/dev/nvme1n1 is a disk image, loop-mounted by
// the doc's own `mount`), and a cluster-only mark is accepted only on what
// needs a cluster or a real node (kubectl apply/get/..., docker, apt-get,
// /etc, fscrypt setup). Each runs as typed at a root shell (bash -e: a
// pipeline's status is its last command's). Between the doc's node blocks, this test plays the
// agent and the pod where the doc has a cluster do it (the lib/volume hooks
// the agent runs: prepare, publish, write, unpublish; then the reclaim's
// crypto-erase), so the node commands meet the state the doc describes:
// ciphertext while the pod is stopped, the stock fscrypt tool's break-glass
// unlock with the KEK, and the slot after the claim is deleted.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { parseKeySource, writeFscryptConf, type OpenProtector } from '../../lib/keys/index.js';
import { defaultTrash, initSlot, lock, openSlotProtector, prepare, recycle, unlock, type Volume } from '../../lib/volume/index.js';
import { DEPLOY, kustomizations, KUBECTL, REPO } from '../fixtures/deploy.js';
import { FSCRYPT, needs } from '../fixtures/system/optional.js';

const DOC = join(REPO, 'docs', 'install.md');
const MARKER = 'hello from fscrypt-local';

interface DocCommand {
  text: string;
  clusterOnly: boolean;
  /** The `<!-- install-test: NAME -->` right before the block, if any. */
  block: string | undefined;
  line: number;
}

/** The commands of the doc's ```sh blocks (a trailing `\` joins lines; comment-only lines are not commands). */
function docCommands(text: string): DocCommand[] {
  const out: DocCommand[] = [];
  const lines = text.split('\n');
  let inBlock = false;
  let block: string | undefined;
  let pendingMarker: string | undefined;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (!inBlock) {
      const marker = /^<!-- install-test: ([\w-]+) -->$/.exec(line.trim());
      if (marker) pendingMarker = marker[1];
      else if (/^```sh\s*$/.test(line.trim())) {
        inBlock = true;
        block = pendingMarker;
        pendingMarker = undefined;
      } else if (/^```/.test(line.trim())) throw new Error(`docs/install.md line ${i + 1}: a fenced block that is not \`sh\` (commands go in sh blocks, output in none)`);
      else if (line.trim() !== '') pendingMarker = undefined;
      continue;
    }
    if (/^```\s*$/.test(line.trim())) {
      inBlock = false;
      continue;
    }
    if (/^\s*(#|$)/.test(line)) continue;
    let command = line;
    const start = i;
    while (/\\$/.test(command) && i + 1 < lines.length) command = `${command.slice(0, -1)} ${lines[++i]!.trim()}`;
    out.push({ text: command.trim(), clusterOnly: /#\s*cluster-only\s*$/.test(command), block, line: start + 1 });
  }
  if (inBlock) throw new Error('docs/install.md: an unclosed ```sh block');
  return out;
}

/** What may be marked cluster-only: it needs a cluster, a registry or a real node, or it would change this host. */
const CLUSTER = /\bkubectl\b(?! kustomize)|\bdocker\b|\bapt-get\b|\/etc\/|\bfscrypt setup\b/;

t.test('every command of docs/install.md is run here or needs a cluster', async (t) => {
  if (!needs(t, KUBECTL, FSCRYPT)) return;
  const commands = docCommands(readFileSync(DOC, 'utf8'));
  t.ok(commands.length > 20, `the doc has its commands (${commands.length})`);
  for (const c of commands.filter((x) => x.clusterOnly)) t.match(c.text, CLUSTER, `line ${c.line}: cluster-only, and it does need a cluster or a node: ${c.text}`);
  const runnable = commands.filter((c) => !c.clusterOnly);
  for (const dir of kustomizations().filter((d) => d !== 'deploy/base')) t.ok(runnable.some((c) => c.text === `kubectl kustomize ${dir}`), `the doc renders ${dir}`);
  t.ok(commands.some((c) => c.text.startsWith('kubectl apply -k deploy/examples/basic')), 'the install is `kubectl apply -k deploy/examples/basic`');
  t.match(readFileSync(join(DEPLOY, 'examples/basic/demo.yaml'), 'utf8'), new RegExp(`echo "${MARKER}" > /data/hello.txt`), 'the demo pod writes what the doc looks for');

  // The node, in a scratch directory: its paths, its disk (an image file), its KEK, the stock tool's config.
  const scratch = mkdtempSync(join(tmpdir(), 'fscrypt-local-install-doc-'));
  const slot = join(scratch, 'mnt/fscrypt-local/fast-disks/ssd0');
  const disk = join(scratch, 'nvme1n1.img');
  const kek = join(scratch, 'fscrypt-local-kek');
  const conf = join(scratch, 'fscrypt.conf');
  let protector: OpenProtector | undefined;
  t.teardown(() => {
    protector?.close();
    // Unmounting drops the filesystem's keyring too (a key left by a failure dies with it); only then the files.
    if (spawnSync('mountpoint', ['-q', slot]).status === 0 && spawnSync('umount', [slot]).status !== 0) spawnSync('umount', ['-l', slot]);
    rmSync(scratch, { recursive: true, force: true });
  });
  spawnSync('truncate', ['-s', '64M', disk]);
  await writeFscryptConf(conf);
  const substitute = (text: string): string =>
    text.replaceAll('/dev/nvme1n1', disk).replaceAll('/root/fscrypt-local-kek', kek).replaceAll('/mnt/fscrypt-local', join(scratch, 'mnt/fscrypt-local'));
  const hostPaths = runnable.flatMap((c) => [...substitute(c.text).matchAll(/(?:^|[\s=>])(\/[^\s'"*]*)/g)].map((m) => m[1]!)).filter((p) => !p.startsWith(scratch) && p !== '/dev/urandom');
  t.same(hostPaths, [], 'no command that is run names a host path left unmoved');

  // The agent and the pod, at the points where the doc has them act.
  let volume: Volume | undefined;
  let firstIdentifier = '';
  let nextIdentifier = '';
  const before: Record<string, () => Promise<void>> = {
    locked: async () => {
      // The agent: the slot's protector under the KEK of the Secret, a verified volume; kubelet publishes; the pod writes; the pod stops.
      const source = parseKeySource(`file:${kek}`);
      await initSlot(slot, source);
      protector = await openSlotProtector(slot, source);
      volume = await prepare(slot, protector);
      firstIdentifier = volume.identifier;
      const target = join(scratch, 'pods/pod-1/volumes/mount');
      mkdirSync(join(target, '..'), { recursive: true });
      await unlock(volume, protector, { path: target });
      await writeFile(join(target, 'hello.txt'), `${MARKER}\n`);
      await lock(volume, target);
    },
    erased: async () => {
      // The PVC deleted (reclaim Delete): the agent crypto-erases the volume and prepares the next generation.
      const { next } = await recycle(volume!, protector!);
      nextIdentifier = next.identifier;
      await defaultTrash().idle();
    },
  };

  const outputs: { command: DocCommand; stdout: string }[] = [];
  let previousBlock: string | undefined;
  for (const command of runnable) {
    if (command.block !== previousBlock && command.block !== undefined) {
      const hook = before[command.block];
      if (command.block !== 'node-disk') t.ok(hook, `install-test: ${command.block} is known to this test`);
      await hook?.();
    }
    previousBlock = command.block;
    const run = spawnSync('bash', ['-ec', substitute(command.text)], { cwd: REPO, encoding: 'utf8', env: { ...process.env, FSCRYPT_CONF: conf }, maxBuffer: 16 * 1024 * 1024 });
    t.equal(run.status, 0, `line ${command.line}: ${command.text}`, run.status === 0 ? {} : { stdout: run.stdout, stderr: run.stderr });
    outputs.push({ command, stdout: run.stdout });
  }
  t.ok(volume !== undefined && nextIdentifier !== '', 'the doc reached the locked volume and the deleted claim');

  const output = (pattern: RegExp, block?: string): string => {
    const found = outputs.filter((o) => pattern.test(o.command.text) && (block === undefined || o.command.block === block));
    if (found.length !== 1) throw new Error(`expected one command matching ${pattern}, found ${found.length}`);
    return found[0]!.stdout;
  };
  const lockedNames = output(/^ls \/mnt\/fscrypt-local\/fast-disks\/ssd0\/vol-1$/).split('\n').filter((l) => l !== '');
  t.equal(lockedNames.length, 1, 'the locked volume lists one entry');
  t.notOk(lockedNames.includes('hello.txt'), 'whose name is ciphertext');
  t.match(output(/^sync -f/), /no plaintext on the disk/, 'the disk image holds no plaintext');
  t.equal(output(/^cat .*hello\.txt$/), `${MARKER}\n`, 'the stock fscrypt tool unlocked the data with the KEK');
  const afterErase = output(/^ls \/mnt\/fscrypt-local\/fast-disks\/ssd0$/, 'erased').split('\n');
  t.ok(afterErase.includes('vol-2') && !afterErase.includes('vol-1'), 'after the claim is deleted: vol-2, and no vol-1');
  const status = output(/^fscrypt status \/mnt\/fscrypt-local\/fast-disks\/ssd0$/, 'erased');
  t.ok(status.includes(nextIdentifier), "the stock tool lists the new volume's policy");
  t.notOk(status.includes(firstIdentifier), 'and not the erased one');
});
