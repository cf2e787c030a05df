// bench/keys: what the key layer (lib/keys) costs, next to the stock
// `fscrypt` tool doing the same job on the same slot.
//
//   - unlocking one more volume once its slot's protector is open:
//     unwrapPolicyKey() alone (HKDF + AES-CTR + HMAC + identifier check, one
//     small file read) and with the ADD_KEY ioctl; no KDF per volume.
//     Target: median under 1 ms.
//   - opening a protector: file KEK; KMS v2 plugin (a local fake plugin on a
//     unix socket, so this is the transport and Status+Decrypt round trips);
//     passphrase with the default Argon2id costs, plus the growth of peak RSS.
//   - the stock tool on the same slot: `fscrypt unlock --key=FILE` and
//     `fscrypt unlock` with the passphrase on stdin (same protector, same
//     Argon2id costs), each a whole process.
//
//   node bench/keys.mjs [--json] [--iterations=N] [--opens=N] [--kdf-runs=N] [--cli-runs=N]
//
// Runs the built package (dist/, made by `npm run build`; bench/run.mjs
// builds first). Needs root (loop mount, keyring) and the fscrypt CLI for
// the comparison rows. Makes its own scratch ext4 and a private fscrypt.conf
// (FSCRYPT_CONF) in a temp directory; /etc/fscrypt.conf is not touched.
import { spawn } from 'node:child_process';
import { randomBytes, randomFillSync } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus, release } from 'node:os';
import { join } from 'node:path';
import { ensurePackageBuilt } from './lib/build.mjs';
import { startContentionMeter } from './lib/measure/contention.mjs';
import { hasCommand, PreconditionError, requireExt4Encryption, requireRoot } from './lib/preflight.mjs';
import { makeScratchExt4 } from './lib/scratch-fs.mjs';
import { summarize } from './lib/measure/stats.mjs';
import { formatTable } from './lib/measure/table.mjs';

const TARGET_UNLOCK_ONE_MORE_MS = 1;
const DEFAULTS = { iterations: 2000, opens: 200, kdfRuns: 10, cliRuns: 10 };
const VOLUMES = 100;

function parseArgs(argv) {
  const options = { json: false, ...DEFAULTS };
  const numeric = { '--iterations': 'iterations', '--opens': 'opens', '--kdf-runs': 'kdfRuns', '--cli-runs': 'cliRuns' };
  for (const arg of argv) {
    const [name, value] = arg.split('=', 2);
    if (arg === '--json') options.json = true;
    else if (name in numeric && /^\d+$/.test(value ?? '') && Number(value) > 0) options[numeric[name]] = Number(value);
    else throw new PreconditionError(`unknown or bad argument ${arg}\nusage: node bench/keys.mjs [--json] [--iterations=N] [--opens=N] [--kdf-runs=N] [--cli-runs=N]`);
  }
  return options;
}

const log = (message) => process.stderr.write(`bench/keys: ${message}\n`);

async function time(fn) {
  const start = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - start);
}

/** Summary in ms with 3 decimals (the shared helper gives µs). */
function inMs(samplesNs) {
  const s = summarize(samplesNs);
  const ms = (us) => Number((us / 1000).toFixed(4));
  return { n: s.n, medianMs: ms(s.median), p99Ms: ms(s.p99), meanMs: ms(s.mean) };
}

function runCli(conf, args, input) {
  return new Promise((resolve, reject) => {
    const child = spawn('fscrypt', args, { env: { ...process.env, FSCRYPT_CONF: conf }, stdio: [input === undefined ? 'ignore' : 'pipe', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`fscrypt ${args[0]} failed (${code}): ${stderr.trim()}`))));
    // A child that fails before reading stdin closes the pipe under our write;
    // its exit code and stderr report that, not an uncaught EPIPE.
    child.stdin?.on('error', (err) => err.code === 'EPIPE' || reject(err));
    child.stdin?.end(input);
  });
}

/**
 * A minimal KMS v2 plugin on a unix socket (XOR "encryption": this measures
 * the gRPC transport and our client, not a cloud KMS).
 */
async function startLocalKmsPlugin(grpc, wire, socket) {
  const { BinaryReader, BinaryWriter, WireType } = wire;
  const pad = randomBytes(64);
  const field1 = (buf) => {
    const r = new BinaryReader(buf);
    let value = new Uint8Array(0);
    while (r.pos < r.len) {
      const [no, wt] = r.tag();
      if (no === 1 && wt === WireType.LengthDelimited) value = r.bytes();
      else r.skip(wt, no);
    }
    return Buffer.from(value);
  };
  const xor = (b) => Buffer.from(b.map((x, i) => x ^ pad[i % pad.length]));
  const raw = (b) => b;
  const method = (path) => ({ path, requestStream: false, responseStream: false, requestSerialize: raw, requestDeserialize: raw, responseSerialize: raw, responseDeserialize: raw });
  const server = new grpc.Server();
  server.addService(
    { Status: method('/v2.KeyManagementService/Status'), Encrypt: method('/v2.KeyManagementService/Encrypt'), Decrypt: method('/v2.KeyManagementService/Decrypt') },
    {
      Status: (_call, cb) => cb(null, Buffer.from(new BinaryWriter().tag(1, 2).string('v2').tag(2, 2).string('ok').tag(3, 2).string('bench-key').finish())),
      Encrypt: (call, cb) => cb(null, Buffer.from(new BinaryWriter().tag(1, 2).bytes(xor(field1(call.request))).tag(2, 2).string('bench-key').finish())),
      Decrypt: (call, cb) => cb(null, Buffer.from(new BinaryWriter().tag(1, 2).bytes(xor(field1(call.request))).finish())),
    },
  );
  await new Promise((resolve, reject) => server.bindAsync(`unix://${socket}`, grpc.ServerCredentials.createInsecure(), (e) => (e ? reject(e) : resolve())));
  return () => server.forceShutdown();
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  requireRoot('bench/keys');
  requireExt4Encryption();
  ensurePackageBuilt();
  // Internal layers (not the package's public API): the benchmark measures them directly.
  const lib = { ...(await import('../dist/kernel/index.js')), ...(await import('../dist/keys/index.js')) };
  if (typeof lib.SlotKeys !== 'function') throw new Error('dist/keys/index.js does not export SlotKeys: is lib/keys built? (npm run build)');
  const grpc = await import('@grpc/grpc-js');
  const wire = await import('@bufbuild/protobuf/wire');
  const haveCli = hasCommand('fscrypt');
  if (!haveCli) log('the fscrypt CLI is not installed (apt-get install fscrypt): its rows are skipped');

  const fs = makeScratchExt4({ sizeMiB: 128 });
  const mnt = fs.mountpoint;
  const secrets = join(fs.dir, 'secrets');
  mkdirSync(secrets, { mode: 0o700 });
  const conf = join(secrets, 'fscrypt.conf');
  await lib.writeFscryptConf(conf);
  const kekPath = join(secrets, 'kek');
  writeFileSync(kekPath, randomFillSync(Buffer.alloc(32)), { mode: 0o600 });
  const passphrase = 'bench passphrase';
  const passPath = join(secrets, 'passphrase');
  writeFileSync(passPath, `${passphrase}\n`, { mode: 0o600 });
  const fileSource = { kind: 'file', path: kekPath };
  const passSource = { kind: 'passphrase', path: passPath }; // default costs
  const kmsSocket = join(secrets, 'kms.sock');
  const stopKms = await startLocalKmsPlugin(grpc, wire, kmsSocket);
  const kmsSource = { kind: 'kms', socket: kmsSocket };

  const meter = startContentionMeter();
  const results = {};

  // One slot (the mount root, as the stock tool needs), three protectors;
  // every volume's key is wrapped under each of them.
  log(`preparing a slot with ${VOLUMES} volumes`);
  const slot = new lib.SlotKeys(mnt);
  const byFile = await slot.createAndOpenProtector(fileSource, { name: 'bench-file' });
  const byPass = await slot.createAndOpenProtector(passSource, { name: 'bench-passphrase' });
  const byKms = await slot.createAndOpenProtector(kmsSource, { name: 'bench-kms' });
  const volumes = [];
  for (let i = 0; i < VOLUMES; i++) {
    const key = lib.newPolicyKey();
    const { identifier } = await byFile.addPolicy(key);
    await byPass.addPolicy(key);
    await byKms.addPolicy(key);
    lib.wipe(key);
    volumes.push(identifier);
  }
  byPass.close();
  byKms.close();

  // 1. One more volume, protector already open.
  log(`unwrapPolicyKey x ${options.iterations}`);
  const unwrapSamples = [];
  const unlockSamples = [];
  for (let i = 0; i < options.iterations + 100; i++) {
    const id = volumes[i % VOLUMES];
    let key;
    const ns = await time(async () => {
      key = await byFile.unwrapPolicyKey(id);
    });
    lib.wipe(key);
    if (i >= 100) unwrapSamples.push(ns);
  }
  log(`unwrapPolicyKey + addKey x ${options.iterations}`);
  for (let i = 0; i < options.iterations + 100; i++) {
    const id = volumes[i % VOLUMES];
    const ns = await time(async () => {
      const key = await byFile.unwrapPolicyKey(id);
      try {
        await lib.addKey(mnt, key);
      } finally {
        lib.wipe(key);
      }
    });
    await lib.removeKey(mnt, id); // untimed: the next sample adds it afresh
    if (i >= 100) unlockSamples.push(ns);
  }
  byFile.close();
  results.unwrapPolicyKey = inMs(unwrapSamples);
  results.unlockOneMoreVolume = inMs(unlockSamples);

  // 2. Opening a protector.
  const openSamples = async (source, runs) => {
    const samples = [];
    for (let i = 0; i < runs; i++) {
      let open;
      samples.push(await time(async () => (open = await slot.openProtector(source))));
      open.close();
    }
    return samples;
  };
  log(`open file protector x ${options.opens}`);
  results.openFileProtector = inMs(await openSamples(fileSource, options.opens));
  log(`open kms protector x ${options.opens}`);
  results.openKmsProtector = inMs(await openSamples(kmsSource, options.opens));
  log(`open passphrase protector (default costs) x ${options.kdfRuns}`);
  // RSS sampled while Argon2 runs (on the libuv pool), against RSS just before.
  const rssBefore = process.memoryUsage.rss();
  let rssPeak = rssBefore;
  const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, process.memoryUsage.rss())), 2);
  results.openPassphraseProtector = inMs(await openSamples(passSource, options.kdfRuns));
  clearInterval(sampler);
  const maxRssGrowthMiB = Math.round((rssPeak - rssBefore) / 1048576);

  // 3. The stock tool on the same slot: a volume directory under one policy.
  const cli = {};
  if (haveCli) {
    const id = volumes[0];
    const dir = join(mnt, 'vol-1');
    await mkdir(dir);
    const open = await slot.openProtector(fileSource);
    const key = await open.unwrapPolicyKey(id);
    await lib.addKey(mnt, key);
    lib.wipe(key);
    open.close();
    await lib.setPolicy(dir, lib.defaultPolicy(id));
    await writeFile(join(dir, 'f'), 'x');
    await lib.removeKey(mnt, id, { allUsers: true });
    const cliSamples = async (args, input, runs) => {
      const samples = [];
      for (let i = 0; i < runs; i++) {
        samples.push(await time(() => runCli(conf, args, input)));
        await runCli(conf, ['lock', dir, '--quiet']);
      }
      return samples;
    };
    const desc = (name) => slot.listProtectors().then((all) => all.find((p) => p.name === name).descriptor);
    log(`fscrypt unlock --key x ${options.cliRuns}`);
    cli.fscryptUnlockRawKey = inMs(await cliSamples(['unlock', dir, `--key=${kekPath}`, `--unlock-with=${mnt}:${await desc('bench-file')}`, '--quiet'], '', options.cliRuns));
    log(`fscrypt unlock (passphrase) x ${Math.min(options.cliRuns, options.kdfRuns)}`);
    cli.fscryptUnlockPassphrase = inMs(await cliSamples(['unlock', dir, `--unlock-with=${mnt}:${await desc('bench-passphrase')}`, '--quiet'], `${passphrase}\n`, Math.min(options.cliRuns, options.kdfRuns)));
  }
  stopKms();
  const contention = meter();
  fs.cleanup();

  const costs = lib.DEFAULT_ARGON2_COSTS;
  const report = {
    benchmark: 'keys',
    machine: { kernel: release(), node: process.version, cpus: cpus().length, cpuModel: cpus()[0]?.model, ...contention },
    parameters: { ...options, volumes: VOLUMES, json: undefined },
    argon2DefaultCosts: { ...costs },
    results: { ...results, ...cli },
    passphraseOpenRssRiseMiB: maxRssGrowthMiB,
    target: {
      unlockOneMoreVolumeMedianMs: TARGET_UNLOCK_ONE_MORE_MS,
      met: results.unlockOneMoreVolume.medianMs < TARGET_UNLOCK_ONE_MORE_MS,
    },
  };
  if (options.json) {
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    return;
  }
  const row = (name, what, r) => [name, what, r?.n, r?.medianMs, r?.p99Ms];
  const rows = [
    row('unwrapPolicyKey', 'protector open: read + HKDF + AES-CTR + HMAC', results.unwrapPolicyKey),
    row('unlock one more volume', 'unwrapPolicyKey + ADD_KEY ioctl', results.unlockOneMoreVolume),
    row('open file protector', 'read KEK + unwrap P', results.openFileProtector),
    row('open kms protector', 'Status + Decrypt, local fake plugin', results.openKmsProtector),
    row('open passphrase protector', `Argon2id t=${costs.time} m=${costs.memory / 1024}MiB p=${costs.parallelism}`, results.openPassphraseProtector),
  ];
  if (haveCli) {
    rows.push(row('fscrypt unlock --key', 'stock tool, same slot, whole process', cli.fscryptUnlockRawKey));
    rows.push(row('fscrypt unlock (passphrase)', 'stock tool, same protector and costs', cli.fscryptUnlockPassphrase));
  }
  process.stdout.write(`${formatTable(['operation', 'what', 'n', 'median ms', 'p99 ms'], rows)}\n\n`);
  process.stdout.write(
    `unlock one more volume: median ${results.unlockOneMoreVolume.medianMs.toFixed(3)} ms, target < ${TARGET_UNLOCK_ONE_MORE_MS} ms: ${report.target.met ? 'met' : 'NOT met'}\n` +
      `passphrase open: RSS rose by up to ${maxRssGrowthMiB} MiB while Argon2 ran (Argon2id memory ${costs.memory / 1024} MiB)\n` +
      `machine: ${report.machine.cpus} CPUs, other processes used ${contention.otherCpuPercent ?? '?'}% of them during the run, the hypervisor ${contention.stealPercent ?? '?'}% (steal)\n`,
  );
}

main().catch((error) => {
  if (error instanceof PreconditionError) {
    process.stderr.write(`bench/keys: ${error.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`bench/keys: ${error.stack ?? error}\n`);
  process.exit(1);
});
