// Key hygiene (DESIGN invariant 5, issue 11): the agent's whole story on
// three slots, one per key source (a KEK file, a passphrase, a KMS plugin),
// with publish, a busy lock, unpublish, release and crypto-erase, a refused
// request, a rejected configuration, a restart, and the CLI against the same
// slots; everything the system emitted on the way is captured (every log
// line, every object the API server stored or refused, /metrics, every gRPC
// error, every error thrown, CLI stdout and stderr, process warnings, the
// process's own stdout and stderr, the slots' state and metadata files, the
// whole filesystem image) and searched for every secret used, spelled every
// way (test/fixtures/campaign/key-hygiene.ts). Zero hits; and a planted spelling is
// found, so the search can fail.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { inspect } from 'node:util';
import t, { type Test } from 'tap';
import type { KeySourceSpec } from '../../lib/keys/key-source.js';
import { SlotKeys } from '../../lib/keys/slot-keys.js';
import { slotStatus } from '../../lib/volume/index.js';
import { agentNode, CLASS, type AgentNode } from '../fixtures/agent/agent.js';
import { recordFigure } from '../fixtures/campaign/campaign.js';
import { mountCapability } from '../fixtures/agent/csi.js';
import { failure } from '../fixtures/helpers.js';
import { buildCliInBackground, fileSamples, needles, search, slotSecrets, textSample, type Sample, type Secret } from '../fixtures/campaign/key-hygiene.js';
import { startFakeKms } from '../fixtures/kms-plugin.js';
import { scratchDir, syncFs } from '../fixtures/system/scratch-fs.js';

const COMMAND = 'npx tap test/agent/key-hygiene.test.ts';
const PASS_CLASS = 'pass-disks';
const KMS_CLASS = 'kms-disks';

interface Kind {
  label: string;
  className: string;
  hostDir: string;
  slot: string;
  source: KeySourceSpec;
  sourceText: string;
}

/** A slot under `hostDir` (the shared-disk recipe of test/fixtures/agent/agent.ts: a directory of the disk bound there). */
function slotIn(t: Test, node: AgentNode, hostDir: string, name: string): string {
  const backing = join(node.fs.mountpoint, 'backing', name);
  mkdirSync(backing, { recursive: true });
  const slot = join(hostDir, name);
  mkdirSync(slot);
  run('mount', ['--bind', backing, slot]);
  t.teardown(() => run('umount', [slot]).catch(() => undefined));
  return slot;
}

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** A child process, without blocking this event loop (the agent and the fake KMS plugin serve from here). */
function run(command: string, args: string[]): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString('utf8')));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Everything an error carries to whoever catches it: message, stack, own properties, cause, gRPC details and metadata. */
function errorText(error: unknown): string {
  const e = error as Record<string, unknown> & { metadata?: { getMap?: () => unknown } };
  return [String(e?.message), String(e?.stack), String(e?.details), inspect(error, { depth: 8, showHidden: true }), JSON.stringify(e?.metadata?.getMap?.() ?? null)].join('\n');
}

t.test('no secret in anything the system emits, over the whole story on three key sources', async (t) => {
  const samples: Sample[] = [];
  const capture = (name: string, text: string): void => void samples.push(textSample(name, text));
  const caught = (name: string, error: unknown): void => capture(`error: ${name}`, errorText(error));

  // This process's own stdout and stderr (anything printed past the agent's log) and its warnings.
  let ownOutput = '';
  const writes = { out: process.stdout.write, err: process.stderr.write };
  const tee = (original: typeof process.stdout.write) =>
    function (this: NodeJS.WriteStream, chunk: unknown, ...rest: unknown[]): boolean {
      ownOutput += typeof chunk === 'string' ? chunk : Buffer.from(chunk as Uint8Array).toString('latin1');
      return (original as (...args: unknown[]) => boolean).call(this, chunk, ...rest);
    };
  process.stdout.write = tee(writes.out) as typeof process.stdout.write;
  process.stderr.write = tee(writes.err) as typeof process.stderr.write;
  const warnings: string[] = [];
  const onWarning = (w: Error): void => void warnings.push(errorText(w));
  process.on('warning', onWarning);
  t.teardown(() => {
    process.stdout.write = writes.out;
    process.stderr.write = writes.err;
    process.off('warning', onWarning);
  });

  const cliBuilt = buildCliInBackground(t);
  cliBuilt.catch(() => undefined); // awaited before the CLI's part; a failure fails the test there
  const node = await agentNode(t);
  const kms = await startFakeKms(t);
  const secretsDir = scratchDir(t, 'fscrypt-local-keys-');
  // Printable, and nothing JSON or YAML would escape: found as text wherever it went.
  const passphrase = `pass-${randomBytes(18).toString('base64url')}`;
  const passphraseFile = join(secretsDir, 'passphrase');
  writeFileSync(passphraseFile, `${passphrase}\n`, { mode: 0o600 });
  const kek = readFileSync(node.kek);

  for (const name of [PASS_CLASS, KMS_CLASS]) {
    node.api.put('storageclasses', { ...node.api.get('storageclasses', CLASS)!, metadata: { name } });
  }
  const passDir = join(node.fs.mountpoint, 'pass');
  const kmsDir = join(node.fs.mountpoint, 'kms');
  mkdirSync(passDir);
  mkdirSync(kmsDir);
  const kinds: Kind[] = [
    { label: 'file', className: CLASS, hostDir: node.hostDir, slot: '', source: { kind: 'file', path: node.kek }, sourceText: `file:${node.kek}` },
    { label: 'passphrase', className: PASS_CLASS, hostDir: passDir, slot: '', source: { kind: 'passphrase', path: passphraseFile }, sourceText: `passphrase:${passphraseFile}` },
    { label: 'kms', className: KMS_CLASS, hostDir: kmsDir, slot: '', source: { kind: 'kms', socket: kms.socket }, sourceText: `kms:${kms.socket}` },
  ];
  for (const kind of kinds) kind.slot = slotIn(t, node, kind.hostDir, `${kind.label}0`);
  const classMap = (keySourceOf: (kind: Kind) => string): string =>
    kinds.map((k) => `${k.className}:\n  hostDir: ${k.hostDir}\n  mountDir: ${k.hostDir}\n  fscrypt:\n    keySource: ${keySourceOf(k)}\n`).join('');
  const goodConfig = { storageClassMap: classMap((k) => k.sourceText), removeNodeNotReadyTaint: 'true' };
  node.writeConfig(goodConfig);

  const secrets = new Map<string, Secret>();
  secrets.set('KEK file', { name: 'KEK file', bytes: kek });
  secrets.set('passphrase', { name: 'passphrase', bytes: Buffer.from(passphrase, 'utf8') });
  const collectSecrets = async (): Promise<void> => {
    for (const kind of kinds) await slotSecrets(kind.label, kind.slot, kind.source, secrets, Buffer.from(passphrase, 'utf8'));
  };

  let agent = await node.start();
  const logs: (() => string)[] = [agent.logs];
  const { host, port } = agent.running.health;
  // The health server's every page: /metrics, and the health and readiness answers (which name problems).
  const metrics = async (when: string, at = { host, port }): Promise<void> => {
    for (const path of ['/metrics', '/healthz', '/readyz']) capture(`${path} ${when}`, await (await fetch(`http://${at.host}:${at.port}${path}`)).text());
  };
  const pvOf = (kind: Kind) => node.pvs().find((p) => (p.spec as any).storageClassName === kind.className && !(p.metadata as any).deletionTimestamp) as any;
  const generation = async (kind: Kind) => (await slotStatus(kind.slot)).volume?.generation;

  // Discovery: one PV per slot, each on its key source.
  await node.until('a PV per slot', () => kinds.every((k) => pvOf(k) !== undefined));
  await node.until('ready', () => agent.running.agent.readiness().ok);
  await collectSecrets();
  await metrics('after discovery');

  // Bound and published: each pod writes; one refused request per kind of refusal.
  const targets = new Map<string, string>();
  for (const kind of kinds) {
    const pv = pvOf(kind);
    node.api.bind(pv.metadata.name, { namespace: 'default', name: `data-${kind.label}` });
    await node.until(`${kind.label}: the claim recorded`, async () => (await slotStatus(kind.slot)).volume?.claimed);
    const target = await node.kubelet.newTarget(pv.metadata.name);
    await agent.csi.node('NodePublishVolume', { volume_id: pv.spec.csi.volumeHandle, target_path: target, volume_capability: mountCapability() });
    await writeFile(join(target, 'ledger'), `${kind.label} tenant data`);
    targets.set(kind.label, target);
  }
  await metrics('while published');
  const filePv = pvOf(kinds[0]!);
  const outside = join(scratchDir(t), 'not-kubelet');
  caught('NodePublishVolume outside the pods directory', await failure(() => agent.csi.node('NodePublishVolume', { volume_id: filePv.spec.csi.volumeHandle, target_path: outside, volume_capability: mountCapability() })));
  caught('NodePublishVolume of a malformed handle', await failure(() => agent.csi.node('NodePublishVolume', { volume_id: `${filePv.spec.csi.volumeHandle}/../x`, target_path: targets.get('file')!, volume_capability: mountCapability() })));
  caught('NodeStageVolume (not offered)', await failure(() => agent.csi.node('NodeStageVolume', { volume_id: filePv.spec.csi.volumeHandle, staging_target_path: outside, volume_capability: mountCapability() })));

  // A busy lock: a process holds a file of the file slot's volume open across the last unpublish.
  const filePath = (await slotStatus(kinds[0]!.slot)).volume!.path;
  const holder = spawn('sh', ['-c', `exec 3<'${join(filePath, 'ledger')}'; echo open; exec sleep 120`], { stdio: ['ignore', 'pipe', 'ignore'] });
  t.teardown(() => holder.kill('SIGKILL'));
  await new Promise((resolve) => holder.stdout.once('data', resolve));
  for (const kind of kinds) {
    await agent.csi.node('NodeUnpublishVolume', { volume_id: pvOf(kind).spec.csi.volumeHandle, target_path: targets.get(kind.label)! });
  }
  await node.until('a LockBusy event', () => node.api.events().some((e) => (e as any).reason === 'LockBusy'));
  await metrics('while a lock is busy');
  holder.kill('SIGKILL');
  for (const kind of kinds) await node.until(`${kind.label}: locked`, async () => (await slotStatus(kind.slot)).volume?.key === 'absent', 60_000);

  // A rejected configuration: the passphrase pasted where a key source belongs, then a YAML error on that line.
  const rejectedBefore = node.api.events().filter((e) => (e as any).reason === 'ConfigRejected').length;
  node.writeConfig({ ...goodConfig, storageClassMap: classMap((k) => (k.label === 'passphrase' ? passphrase : k.sourceText)) });
  await node.until('ConfigRejected (a secret as the key source)', () => node.api.events().filter((e) => (e as any).reason === 'ConfigRejected').length > rejectedBefore);
  node.writeConfig({ ...goodConfig, storageClassMap: classMap((k) => (k.label === 'passphrase' ? `[${passphrase}` : k.sourceText)) });
  await node.until('ConfigRejected (a YAML error on the secret)', async () => {
    const texts = node.api.events().filter((e) => (e as any).reason === 'ConfigRejected').map((e) => JSON.stringify(e));
    return texts.length > rejectedBefore && texts.some((x) => /YAML/.test(x));
  });
  node.writeConfig(goodConfig);

  // Released with reclaim Delete: every slot crypto-erased and offered afresh, under a new key.
  const firstPvs = new Map(kinds.map((k) => [k.label, pvOf(k).metadata.name as string]));
  for (const kind of kinds) node.api.release(firstPvs.get(kind.label)!);
  for (const kind of kinds) {
    await node.until(`${kind.label}: a PV for generation 2`, async () => pvOf(kind) !== undefined && pvOf(kind).metadata.name !== firstPvs.get(kind.label) && (await generation(kind)) === 2);
  }
  await agent.running.agent.trash.idle();
  await collectSecrets();
  caught('NodePublishVolume of an erased generation', await failure(() => agent.csi.node('NodePublishVolume', { volume_id: filePv.spec.csi.volumeHandle, target_path: targets.get('file')!, volume_capability: mountCapability() })));
  await metrics('after the crypto-erase');

  // A restart: the agent rebuilds its state from the slots, the kernel and the API server.
  await agent.stop();
  agent = await node.start();
  logs.push(agent.logs);
  await node.until('ready again', () => agent.running.agent.readiness().ok);
  await metrics('after the restart', agent.running.health);
  await agent.stop();

  // The CLI against the same slots: status, an admin unlock and lock, reconcile, and refusals.
  const cli = await cliBuilt;
  const wrongKek = join(secretsDir, 'wrong-kek');
  writeFileSync(wrongKek, randomBytes(32), { mode: 0o600 });
  // Operators' mistakes that put a secret where an error could quote it: the
  // KEK written as hex, a passphrase file holding the passphrase and one more
  // character (an error quoting it would quote the real one).
  const hexKek = join(secretsDir, 'kek.hex');
  writeFileSync(hexKek, `${kek.toString('hex')}\n`, { mode: 0o600 });
  const wrongPassphrase = join(secretsDir, 'wrong-passphrase');
  writeFileSync(wrongPassphrase, `${passphrase}x\n`, { mode: 0o600 });
  const hostDirs = kinds.map((k) => k.hostDir);
  const kmsKind = kinds[2]!;
  const cliRuns: [string, string[]][] = [
    ['status --json', ['status', '--json', ...hostDirs]],
    ['status', ['status', ...hostDirs]],
    ['unlock (kms)', ['unlock', kmsKind.slot, '--key-source', kmsKind.sourceText, '--json']],
    ['status --json (kms unlocked)', ['status', '--json', kmsKind.slot]],
    ['lock (kms)', ['lock', kmsKind.slot, '--json']],
    ['unlock (passphrase)', ['unlock', kinds[1]!.slot, '--key-source', kinds[1]!.sourceText]],
    ['lock (passphrase)', ['lock', kinds[1]!.slot]],
    ...kinds.map((k): [string, string[]] => [`reconcile (${k.label})`, ['reconcile', k.slot, '--key-source', k.sourceText, '--no-wait', '--json']]),
  ];
  const cliRefusals: [string, string[]][] = [
    ['unlock with a wrong KEK', ['unlock', kinds[0]!.slot, '--key-source', `file:${wrongKek}`]],
    ['unlock with a wrong KEK --json', ['unlock', kinds[0]!.slot, '--key-source', `file:${wrongKek}`, '--json']],
    ['unlock with the passphrase as the key source', ['unlock', kinds[1]!.slot, '--key-source', passphrase]],
    ['unlock with the KEK file as a passphrase', ['unlock', kinds[0]!.slot, '--key-source', `passphrase:${node.kek}`, '--json']],
    ['unlock with the KEK written as hex', ['unlock', kinds[0]!.slot, '--key-source', `file:${hexKek}`, '--json']],
    ['unlock with a wrong passphrase', ['unlock', kinds[1]!.slot, '--key-source', `passphrase:${wrongPassphrase}`]],
    ['status of a missing path', ['status', '--json', join(node.hostDir, 'missing')]],
  ];
  const codes: Record<string, number | null> = {};
  const runCli = async ([name, args]: [string, string[]]): Promise<void> => {
    const result = await run(process.execPath, [cli, ...args]);
    codes[name] = result.code;
    capture(`cli ${name}: stdout`, result.stdout);
    capture(`cli ${name}: stderr`, result.stderr);
  };
  // In order (each changes what the next sees), then the refusals, which change nothing, side by side.
  for (const entry of cliRuns) await runCli(entry);
  await Promise.all(cliRefusals.map(runCli));
  t.equal(codes['status --json'], 0, 'status --json ran');
  t.equal(codes['unlock (kms)'], 0, 'the admin unlock of the KMS slot ran');
  t.equal(codes['unlock (passphrase)'], 0, 'the admin unlock of the passphrase slot ran');
  for (const k of kinds) t.equal(codes[`reconcile (${k.label})`], 0, `reconcile of the ${k.label} slot ran`);
  for (const [refused] of cliRefusals) {
    t.not(codes[refused], 0, `refused: ${refused}`);
  }

  // The library, in-process: the errors a caller catches.
  caught('openProtector with a wrong KEK', await failure(() => new SlotKeys(kinds[0]!.slot).openProtector({ kind: 'file', path: wrongKek })));
  caught('openProtector with the KEK file as a passphrase', await failure(() => new SlotKeys(kinds[1]!.slot).openProtector({ kind: 'passphrase', path: node.kek })));
  caught('openProtector with the passphrase file as a KEK', await failure(() => new SlotKeys(kinds[0]!.slot).openProtector({ kind: 'file', path: passphraseFile })));
  caught('openProtector with the KEK written as hex', await failure(() => new SlotKeys(kinds[0]!.slot).openProtector({ kind: 'file', path: hexKek })));
  caught('openProtector with a wrong passphrase', await failure(() => new SlotKeys(kinds[1]!.slot).openProtector({ kind: 'passphrase', path: wrongPassphrase })));
  const opened = await new SlotKeys(kmsKind.slot).openProtector(kmsKind.source);
  caught('unwrapPolicyKey of a policy the slot lacks', await failure(() => opened.unwrapPolicyKey('00'.repeat(16))));
  capture('an open protector, inspected and as JSON', `${inspect(opened, { showHidden: true })}\n${JSON.stringify(opened)}\n${String(opened)}`);
  opened.close();
  await collectSecrets();
  // Cross-check of how the test recovers keys: what the plugin was asked to wrap is the KMS slot's protector key.
  const kmsProtector = [...secrets.values()].find((x) => x.name.startsWith('kms protector key'));
  t.same(kms.plaintexts.map((p) => p.toString('hex')), [kmsProtector?.bytes.toString('hex')], 'the KMS plugin wrapped exactly the protector key the test unwrapped');

  // What the API server holds: every write it committed (history), what it refused, every request.
  const store = (node.api as unknown as { store: { history: unknown[] } }).store;
  capture('API server: every committed write', JSON.stringify(store.history));
  capture('API server: refused writes', JSON.stringify(node.api.invalidWrites));
  capture('API server: requests', JSON.stringify(node.api.requests));
  capture('API server: Events', JSON.stringify(node.api.events()));
  capture('API server: PersistentVolumes', JSON.stringify(node.pvs()));
  logs.forEach((text, i) => capture(`agent log ${i + 1}`, text()));
  capture('process warnings', warnings.join('\n'));
  capture("this process's stdout and stderr", ownOutput);
  for (const kind of kinds) samples.push(...(await fileSamples(join(kind.slot, '.fscrypt'))), ...(await fileSamples(join(kind.slot, '.fscrypt-local'), ['trash'])));
  syncFs(node.fs.mountpoint);
  samples.push({ name: 'the filesystem image', bytes: await readFile(node.fs.image!) });

  // The story really happened: the outputs hold what they should.
  const events = node.api.events().map((e) => (e as any).reason as string);
  for (const reason of ['Prepared', 'LockBusy', 'CryptoErased', 'ConfigRejected']) t.ok(events.includes(reason), `a ${reason} event`);
  t.ok(samples.some((s) => s.name.startsWith('error: NodePublishVolume') && /code: 3|INVALID_ARGUMENT|NOT_FOUND|code: 5/.test(s.bytes.toString())), 'gRPC refusals captured');
  t.match(samples.find((s) => s.name === 'cli status --json: stdout')!.bytes.toString(), /"generation": ?2/, 'status --json saw generation 2');
  const policies = [...secrets.keys()].filter((n) => n.includes('policy key'));
  t.ok(policies.length >= 6, `policy keys of both generations of the three slots (${policies.length})`);
  t.ok([...secrets.keys()].some((n) => n.startsWith('passphrase Argon2id KEK')), 'the passphrase-derived KEK');
  t.equal([...secrets.keys()].filter((n) => / protector key /.test(n)).length, 3, 'one protector key per slot');
  t.ok(secrets.size >= 12, `${secrets.size} secrets`);

  const all = [...secrets.values()].flatMap(needles);
  const hits = search(samples, all);
  t.same(hits, [], 'no spelling of any secret in any output');

  // The search can fail: one spelling of one secret, planted in the middle of a captured log line, is found.
  const planted = all.find((n) => n.secret.startsWith('file policy key') && n.encoding === 'base64+1')!;
  const sample = samples.find((s) => s.name === 'agent log 1')!;
  const control = search([{ name: 'planted', bytes: Buffer.concat([sample.bytes.subarray(0, 100), Buffer.from('x'), planted.bytes, sample.bytes.subarray(100)]) }], all);
  t.ok(control.some((h) => h.secret === planted.secret), 'a planted base64 spelling is found');
  const plantedBlob = Buffer.from(Buffer.concat([Buffer.from('ab'), secrets.get('KEK file')!.bytes, Buffer.from('cdefg')]).toString('base64'));
  t.ok(search([{ name: 'blob', bytes: plantedBlob }], all).some((h) => h.secret === 'KEK file'), 'the KEK inside a longer base64 blob is found');
  t.ok(search([{ name: 'text', bytes: Buffer.from(`"msg":"${passphrase}"`) }], all).some((h) => h.secret === 'passphrase'), 'the passphrase as text is found');

  const bytes = samples.reduce((n, s) => n + s.bytes.length, 0);
  t.comment(`${samples.length} outputs, ${bytes} bytes, ${secrets.size} secrets x ${all.length / secrets.size} encodings`);
  recordFigure({ area: 'key hygiene', name: 'outputs captured', value: samples.length, command: COMMAND });
  recordFigure({ area: 'key hygiene', name: 'bytes searched', value: bytes, command: COMMAND });
  recordFigure({ area: 'key hygiene', name: 'secrets x encodings checked', value: `${secrets.size} x ${all.length / secrets.size} = ${all.length}`, command: COMMAND });
  node.api.assertNoInvalidWrites(t);
});
