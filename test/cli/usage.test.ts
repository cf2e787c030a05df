// The fscrypt-local command line itself, run as a child process the way an
// admin runs it: help with an example on every command, the exit-code
// contract for usage errors, and JSON errors with --json. The CLI runs from
// its current source, compiled for this file (test/fixtures/cli.ts).
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { UsageError } from '../../lib/cli/exit-codes.js';
import { Output, safeJson } from '../../lib/cli/output.js';
import { buildCli, parseCliJson, runCli, type CliResult } from '../fixtures/cli.js';
import { scratchDir } from '../fixtures/system/scratch-fs.js';

const CLI = buildCli(t);

function cli(args: string[]): CliResult {
  return runCli(CLI, args, { timeoutMs: 120_000 });
}

type Body = Record<string, unknown> & { ok: boolean; error?: { code: string; message: string } };
const json = (result: CliResult): Body => parseCliJson<Body>(result);

const COMMANDS = ['smoke', 'status', 'init-slot', 'prepare', 'unlock', 'lock', 'erase', 'rotate', 'reconcile', 'run'];

t.test('--help of every command shows its usage, an example of it, --json and the exit codes', async (t) => {
  for (const command of COMMANDS) {
    const result = cli([command, '--help']);
    t.equal(result.code, 0, `${command} --help exits 0`);
    t.match(result.stdout, new RegExp(`^Usage: fscrypt-local ${command}`), `${command}: usage line`);
    const examples = result.stdout.split('Examples:\n')[1] ?? '';
    t.match(examples, new RegExp(`^  (sudo )?fscrypt-local ${command}\\b`, 'm'), `${command}: an example running it`);
    t.match(result.stdout, /--json/, `${command}: --json`);
    t.match(result.stdout, /Exit codes:\n/, `${command}: exit codes`);
  }
});

t.test('the top-level help lists every command and the whole exit-code table', async (t) => {
  const result = cli(['--help']);
  t.equal(result.code, 0);
  for (const command of COMMANDS) t.match(result.stdout, new RegExp(`^  ${command}\\b`, 'm'), `lists ${command}`);
  for (const code of [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 130]) t.match(result.stdout, new RegExp(`^  ${code} +\\S`, 'm'), `documents exit code ${code}`);
});

t.test('--version prints the package version', async (t) => {
  const { version } = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  const result = cli(['--version']);
  t.equal(result.code, 0);
  t.equal(result.stdout.trim(), version);
});

t.test('usage errors exit 2 and say what is wrong', async (t) => {
  const none = cli([]);
  t.equal(none.code, 2, 'no command');
  t.match(none.stdout, /Usage: fscrypt-local/, 'no command prints the help');

  const unknown = cli(['frobnicate']);
  t.equal(unknown.code, 2, 'unknown command');
  t.match(unknown.stderr, /unknown command 'frobnicate'/);

  const missing = cli(['init-slot']);
  t.equal(missing.code, 2, 'missing argument');
  t.match(missing.stderr, /missing required argument 'SLOT'/);

  const noSource = cli(['prepare', '/mnt/disks/ssd0']);
  t.equal(noSource.code, 2, 'missing --key-source');
  t.match(noSource.stderr, /--key-source SOURCE is required/);

  const eraseNoSource = cli(['erase', '/mnt/disks/ssd0']);
  t.equal(eraseNoSource.code, 2, 'erase without --key-source and without --no-prepare');
  t.match(eraseNoSource.stderr, /--no-prepare/);

  const badSize = cli(['smoke', '--size-mib', '3']);
  t.equal(badSize.code, 2, 'smoke --size-mib out of range');

  const badTimeout = cli(['lock', '/mnt/disks/ssd0', '--busy-timeout', 'soon']);
  t.equal(badTimeout.code, 2, 'lock --busy-timeout not a number');

  const readonlyAlone = cli(['unlock', '/mnt/disks/ssd0', '--key-source', 'file:/k', '--readonly']);
  t.equal(readonlyAlone.code, 2, 'unlock --readonly without --target');
});

t.test('an unknown option with --json is a JSON usage error on stdout, exit 2', async (t) => {
  const result = cli(['status', '/tmp', '--json', '--colour']);
  t.equal(result.code, 2);
  const body = json(result);
  t.equal(body.ok, false);
  t.equal(body.error?.code, 'ERR_USAGE');
  t.match(body.error?.message, /unknown option '--colour'/);
});

t.test('a malformed --key-source is a usage error that never echoes the value', async (t) => {
  const secretish = 'correct-horse-battery-staple';
  for (const args of [['--key-source', secretish], ['--key-source', `vault:${secretish}`]]) {
    const result = cli(['init-slot', '/mnt/disks/ssd0', ...args, '--json']);
    t.equal(result.code, 2, `${args[1]!.split(':')[0]}...: exit 2`);
    const body = json(result);
    t.equal(body.error?.code, 'ERR_USAGE');
    t.match(body.error?.message, /file:PATH/, 'says what a key source looks like');
    t.notMatch(result.stdout + result.stderr, secretish, 'the value is not echoed');
  }
  const human = cli(['unlock', '/mnt/disks/ssd0', '--key-source', secretish]);
  t.equal(human.code, 2);
  t.match(human.stderr, /fscrypt-local unlock: error: --key-source: /, 'human form on stderr');
  t.equal(human.stdout, '', 'nothing on stdout');
  t.notMatch(human.stderr, secretish);
});

t.test('status with no PATH explains what to pass, exit 2', async (t) => {
  const result = cli(['status']);
  t.equal(result.code, 2);
  t.match(result.stderr, /a slot root/);
  t.match(result.stderr, /a directory holding slots/);
  t.match(result.stderr, /fscrypt-local status \/mnt\/disks/);
  const asJson = json(cli(['status', '--json']));
  t.equal(asJson.error?.code, 'ERR_USAGE');
});

t.test('run without a node name says where it comes from, exit 2', async (t) => {
  const result = cli(['run', '--config', '/nonexistent']);
  t.equal(result.code, 2);
  t.match(result.stderr, /--node-name NAME, or MY_NODE_NAME/);
  const asJson = cli(['run', '--json']);
  t.equal(asJson.code, 2);
  t.equal(json(asJson).error?.code, 'ERR_USAGE');
});

t.test('run --help documents every flag and its environment variable', async (t) => {
  const result = cli(['run', '--help']);
  t.equal(result.code, 0);
  for (const flag of ['--config', '--node-name', '--namespace', '--csi-endpoint', '--kubeconfig', '--listen-address', '--kubelet-dir', '--discovery-period']) t.match(result.stdout, flag);
  for (const variable of ['FSCRYPT_LOCAL_CONFIG', 'MY_NODE_NAME', 'MY_NAMESPACE', 'CSI_ENDPOINT', 'KUBECONFIG', 'UV_THREADPOOL_SIZE']) t.match(result.stdout, variable);
});

t.test('run with an invalid config exits 2 naming the file', async (t) => {
  const dir = scratchDir(t);
  writeFileSync(join(dir, 'storageClassMap'), 'fast:\n  hostDir: relative/path\n');
  const result = cli(['run', '--config', dir, '--node-name', 'n1', '--kubeconfig', '/nonexistent-kubeconfig']);
  t.equal(result.code, 2, result.stderr);
  t.match(result.stderr, /storageClassMap/);
});

t.test('output: results and errors in both forms, and bytes are never serialized', async (t) => {
  const sink = (): { text: string; write(s: string): void } => ({ text: '', write(s: string) { this.text += s; } });
  const [out, err] = [sink(), sink()];
  const human = new Output(false, out, err);
  human.result({ path: '/x' }, 'done');
  human.warn('careful');
  const code = human.failure(Object.assign(new Error('the key source does not open it'), { code: 'ERR_WRONG_KEY' }), 'unlock');
  t.equal(out.text, 'done\n');
  t.equal(code, 5);
  t.equal(err.text, 'fscrypt-local: warning: careful\nfscrypt-local unlock: error: the key source does not open it\n  (ERR_WRONG_KEY, exit 5)\n');

  // Names from a slot may hold control characters: every line of human output is escaped, line breaks kept.
  const [eout, eerr] = [sink(), sink()];
  const escaping = new Output(false, eout, eerr);
  escaping.result({}, 'reconciled /slot:\n  left vol-\x1b[2J9 alone');
  escaping.warn('target \x07bell');
  escaping.failure(Object.assign(new Error("cannot remove '/slot/\x1b]0;owned\x07'"), { code: 'ERR_FOREIGN_ENTRY' }), 'erase');
  t.equal(eout.text, 'reconciled /slot:\n  left vol-\\x1b[2J9 alone\n');
  t.notOk(/[\x00-\x08\x0b-\x1f\x7f]/.test(eout.text + eerr.text), 'no control character reaches the terminal');
  t.match(eerr.text, /target \\x07bell/);

  const [jout, jerr] = [sink(), sink()];
  const machine = new Output(true, jout, jerr);
  machine.result({ path: '/x' }, 'done');
  t.equal(machine.failure(new Error('plain')), 1, 'an error without a code: operation failed');
  t.equal(new Output(true, sink(), sink()).failure(new UsageError('bad flag')), 2, 'a usage error: exit 2');
  const [ok, failed] = jout.text.trim().split('\n}\n').map((part, i) => JSON.parse(i === 0 ? `${part}\n}` : part) as unknown);
  t.same(ok, { ok: true, path: '/x' });
  t.same(failed, { ok: false, error: { code: 'ERR_FAILED', message: 'plain' } });
  t.equal(jerr.text, '', 'nothing on stderr with --json');

  const secret = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
  const text = safeJson({ key: secret, view: new Uint8Array(secret), raw: secret.buffer, nested: [{ secret }], error: new Error('e') });
  for (const form of [secret.toString('hex'), secret.toString('base64'), '"data":[0,17']) t.notOk(text.includes(form), `no bytes as ${form}`);
  t.same(JSON.parse(text), { key: '[bytes withheld]', view: '[bytes withheld]', raw: '[bytes withheld]', nested: [{ secret: '[bytes withheld]' }], error: { code: 'ERR_FAILED', message: 'e' } });
});
