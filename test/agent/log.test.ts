// The agent's logger (lib/agent/log.ts): pino JSON lines with the CSI
// logger's shape, and never a secret: censored fields, buffers reduced to
// their size, errors through an allowlist.
import { spawnSync } from 'node:child_process';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import type { CsiLog } from '../../lib/agent/csi/log.js';
import { CENSORED, createAgentLog, errorFields, withoutBinary, type AgentLog } from '../../lib/agent/log.js';
import { FscryptError } from '../../lib/kernel/errors.js';
import { randomKey } from '../fixtures/helpers.js';

function capture(level?: string): { log: AgentLog; lines: () => Record<string, unknown>[]; text: () => string } {
  const chunks: string[] = [];
  const destination = new Writable({
    write(chunk, _encoding, done) {
      chunks.push(String(chunk));
      done();
    },
  });
  const log = createAgentLog(level === undefined ? { destination } : { level, destination });
  const text = (): string => chunks.join('');
  return { log, text, lines: () => text().split('\n').filter((line) => line !== '').map((line) => JSON.parse(line) as Record<string, unknown>) };
}

t.test('a line is one JSON object with the level as a label, an ISO time, the component and msg', async (t) => {
  const { log, lines, text } = capture();
  log.info({ slot: '/mnt/disks/a' }, 'prepared');
  log.warn({}, 'careful');
  t.match(text(), /^\{.*\}\n\{.*\}\n$/, 'two lines of JSON');
  const [info, warn] = lines();
  t.equal(info!.level, 'info');
  t.equal(warn!.level, 'warn');
  t.equal(info!.component, 'fscrypt-local');
  t.equal(info!.slot, '/mnt/disks/a');
  t.equal(info!.msg, 'prepared');
  t.match(info!.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  t.notOk('pid' in info! || 'hostname' in info!, 'no pid/hostname base fields');
});

t.test('the logger is a CsiLog, and honours its level', async (t) => {
  const { log, lines } = capture('warn');
  const csi: CsiLog = log;
  csi.info({ a: 1 }, 'hidden');
  csi.warn({ a: 2 }, 'shown');
  csi.error({ a: 3 }, 'shown too');
  log.debug({ a: 4 }, 'hidden');
  t.same(lines().map((line) => line.a), [2, 3]);
  const debug = capture('debug');
  debug.log.debug({}, 'now shown');
  t.equal(debug.lines()[0]!.level, 'debug');
});

t.test('fields named like secrets are censored, at the top level and one level down', async (t) => {
  const { log, lines, text } = capture();
  log.info(
    {
      secrets: { csiProvisionerSecret: 'hunter2-top' },
      req: { volumeId: 'v1', secrets: { passphrase: 'hunter2-req' } },
      passphrase: 'hunter2-pass',
      key: 'hunter2-key',
      source: { kek: 'hunter2-kek', token: 'hunter2-token', kind: 'file' },
    },
    'publish',
  );
  const [line] = lines();
  t.equal(line!.secrets, CENSORED);
  t.same(line!.req, { volumeId: 'v1', secrets: CENSORED });
  t.equal(line!.passphrase, CENSORED);
  t.equal(line!.key, CENSORED);
  t.same(line!.source, { kek: CENSORED, token: CENSORED, kind: 'file' });
  t.notMatch(text(), /hunter2/, 'no secret value in the output');
  const child = log.child({ node: 'n1', passphrase: 'hunter2-child' });
  child.info({}, 'child');
  t.notMatch(text(), /hunter2/, "a child's bindings are censored too");
  t.equal(lines()[1]!.node, 'n1');
});

t.test('binary values are logged as their size, never their bytes, and the caller objects are untouched', async (t) => {
  const key = randomKey();
  const { log, text, lines } = capture();
  const fields = { wrapped: key, deep: { list: [1, new Uint8Array(key.subarray(0, 16))], raw: key.buffer.slice(0, 8) }, at: new Date(0) };
  log.info(fields, 'oops');
  const [line] = lines();
  t.equal(line!.wrapped, '[64 bytes]');
  t.same(line!.deep, { list: [1, '[16 bytes]'], raw: '[8 bytes]' });
  t.equal(line!.at, '1970-01-01T00:00:00.000Z', 'dates stay dates');
  for (const form of [key.toString('hex'), key.toString('base64'), key.subarray(0, 16).join(',')]) t.notOk(text().includes(form), 'no form of the key bytes is in the output');
  t.equal(fields.wrapped, key, 'the caller object still holds its buffer');
  t.ok(fields.deep.list[1] instanceof Uint8Array);
  const plain = { a: 1, b: [2, 3] };
  t.equal(withoutBinary(plain), plain, 'an object without binary values is not copied');
  let deep: Record<string, unknown> = { bytes: Buffer.alloc(1) };
  for (let i = 0; i < 10; i++) deep = { deep };
  t.notMatch(JSON.stringify(withoutBinary(deep)), /"type":"Buffer"/, 'objects beyond the depth limit are cut, not printed');
});

t.test('errors keep name, code, message and syscall details; a stack only when it is not a FscryptError', async (t) => {
  const { log, lines, text } = capture();
  const expected = new FscryptError('the key is still in use; stop the pods', { code: 'ERR_FILES_BUSY', path: '/mnt/disks/a/vol-1' });
  const bug = Object.assign(new TypeError('cannot read x', { cause: new FscryptError(undefined, { errno: -2, syscall: 'open', path: '/nope' }) }), {
    request: { secrets: { passphrase: 'hunter2-err' } },
    buffer: randomKey(),
  });
  log.error({ err: expected }, 'lock failed');
  log.error({ error: bug }, 'bug');
  log.error(bug, 'direct');
  const [first, second, third] = lines();
  t.same(first!.err, { type: 'FscryptError', message: expected.message, code: 'ERR_FILES_BUSY', path: '/mnt/disks/a/vol-1' }, 'no stack for an expected failure');
  const logged = second!.error as Record<string, unknown>;
  t.equal(logged.type, 'TypeError');
  t.match(logged.stack, /TypeError: cannot read x\n\s+at /, 'a stack for a bug');
  t.match(logged.cause, { type: 'FscryptError', code: 'ENOENT', errno: -2, syscall: 'open', path: '/nope' });
  t.notOk('request' in logged || 'buffer' in logged, 'other properties of an error are not logged');
  t.match(third!.err, { type: 'TypeError', message: 'cannot read x' });
  t.notMatch(text(), /hunter2/);
  t.equal(errorFields('just text'), 'just text');
  t.equal(errorFields(42), '42');
  t.match(errorFields(Object.assign(new Error('numeric'), { code: 13, ioctl: 'FS_IOC_ADD_ENCRYPTION_KEY' })), { code: '13', ioctl: 'FS_IOC_ADD_ENCRYPTION_KEY' });
  const loop = new Error('a');
  (loop as { cause?: unknown }).cause = loop;
  t.match(errorFields(loop), { cause: { cause: { message: 'a' } } }, 'a cause loop ends');
});

t.test('by default lines go to stderr, and one logged just before process.exit is not lost', async (t) => {
  const child = spawnSync(process.execPath, [...process.execArgv, fileURLToPath(new URL('../fixtures/children/agent-log-child.ts', import.meta.url)), '200'], { encoding: 'utf8', timeout: 60_000 });
  t.equal(child.status, 3, 'the exit code the child chose');
  t.equal(child.stdout, '', 'nothing on stdout');
  const lines = child.stderr.split('\n').filter((line) => line.startsWith('{'));
  t.equal(lines.length, 200, 'every line arrived');
  t.match(JSON.parse(lines.at(-1)!), { level: 'info', line: 199, msg: 'before exit' });
});
