// Key sources: the text form, the passphrase file rules, Argon2 costs (the
// defaults, explicit ones stored in the protector), and wrong passphrases.
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { inspect } from 'node:util';
import t from 'tap';
import { keySourceArg } from '../../lib/cli/key-source-arg.js';
import { DEFAULT_ARGON2_COSTS, newPolicyKey, parseKeySource, SlotKeys, slotLayout } from '../../lib/keys/index.js';
import { decodeProtectorData } from '../../lib/keys/metadata-format.js';
import { checkArgon2Costs, readPassphraseFile } from '../../lib/keys/sources/passphrase.js';
import { rejection } from '../fixtures/helpers.js';
import { assertNoSecrets, FAST_COSTS, passphraseFile, secretsDir, snapshotTree } from '../fixtures/keys-helpers.js';
import { tmpfs } from '../fixtures/system/scratch-fs.js';

const fs = tmpfs(t);

t.test('parseKeySource: the three kinds and the socket spellings', async (t) => {
  t.same(parseKeySource('file:/run/secrets/kek'), { kind: 'file', path: '/run/secrets/kek' });
  t.same(parseKeySource('passphrase:pw.txt'), { kind: 'passphrase', path: 'pw.txt' });
  t.same(parseKeySource('kms:/var/run/kmsplugin/socket.sock'), { kind: 'kms', socket: '/var/run/kmsplugin/socket.sock' });
  t.same(parseKeySource('kms:unix:///var/run/kms.sock'), { kind: 'kms', socket: '/var/run/kms.sock' });
  t.same(parseKeySource('kms:unix:/var/run/kms.sock'), { kind: 'kms', socket: '/var/run/kms.sock' });
  t.same(parseKeySource('kms:unix:///@abstract'), { kind: 'kms', socket: '/@abstract' });
});

// Issue 7 #11: an unknown kind was echoed (up to 20 characters). Every error
// path is taken here with secret-like text in every part of the input, and
// no error may contain any 4 characters of it, nor its length.
t.test('parseKeySource and --key-source: no error repeats any of the text', async (t) => {
  const secret = () => `Zq${Math.random().toString(36).slice(2, 12)}Xv`;
  const windows = (s: string): string[] => Array.from({ length: s.length - 3 }, (_, i) => s.slice(i, i + 4));
  const cases: [string, (s: string) => string, RegExp][] = [
    ['no kind', (s) => s, /has no kind/],
    ['no kind, long', (s) => `${s}${s}${s}`, /has no kind/],
    ['an unknown kind', (s) => `${s}:/x`, /before the first ':' is not one of these kinds/],
    ['an unknown kind, path too', (s) => `${s}:${s}`, /not one of these kinds/],
    ['a kind in capitals', (s) => `FILE:/${s}`, /not one of these kinds \(they are lower case\)/],
    ['a short unknown kind', (s) => `${s.slice(0, 4)}:${s}`, /not one of these kinds/],
    ['a NUL in a file path', (s) => `file:/${s}\0${s}`, /must not contain a NUL byte/],
    ['a NUL in a passphrase path', (s) => `passphrase:${s}\0`, /must not contain a NUL byte/],
    ['a NUL in a socket path', (s) => `kms:/${s}\0`, /must not contain a NUL byte/],
    ['a relative socket', (s) => `kms:${s}`, /must be an absolute path/],
    ['a relative unix:// socket', (s) => `kms:unix://${s}`, /must be an absolute path/],
    ['a relative unix: socket', (s) => `kms:unix:${s}`, /must be an absolute path/],
  ];
  for (const [what, make, message] of cases) {
    const marker = secret();
    const text = make(marker);
    const errors: (Error & { code?: string })[] = [];
    try {
      parseKeySource(text);
    } catch (e) {
      errors.push(e as Error & { code?: string });
    }
    try {
      keySourceArg(text);
    } catch (e) {
      errors.push(e as Error & { code?: string });
    }
    t.equal(errors.length, 2, `${what}: both refuse it`);
    t.match(errors[0], { code: 'ERR_INVALID_ARG', message: /file:PATH.*passphrase:PATH.*kms:SOCKET/ }, `${what}: says what a key source looks like`);
    t.match(errors[0]?.message, message, `${what}: says which rule`);
    t.match(errors[1], { code: 'ERR_USAGE', message: /^--key-source: / }, `${what}: a usage error`);
    for (const error of errors) {
      const shown = `${error.message} ${inspect(error)}`;
      t.notOk(windows(marker).some((w) => shown.includes(w)), `${what}: no part of the text is repeated`);
      t.notOk(new RegExp(`\\b(${text.length}|${marker.length})\\b`).test(error.message), `${what}: nor its length`);
    }
  }
  // Empty paths and non-strings: nothing to repeat, still refused.
  for (const text of ['file:', 'passphrase:', 'kms:', '', ':']) t.throws(() => parseKeySource(text), { code: 'ERR_INVALID_ARG' }, JSON.stringify(text));
  t.throws(() => parseKeySource(42 as unknown as string), { code: 'ERR_INVALID_ARG', message: /got number/ });
  t.throws(() => keySourceArg(undefined), { code: 'ERR_USAGE', message: /--key-source SOURCE is required/ });
  t.throws(() => keySourceArg('nope', '--new-key-source'), { code: 'ERR_USAGE', message: /^--new-key-source: / });
});

t.test('passphrase files: one trailing newline is dropped; what fscrypt could not read is refused', async (t) => {
  const dir = await secretsDir(t);
  const read = async (content: string | Buffer): Promise<Buffer | (Error & { code?: string })> => {
    await writeFile(join(dir, 'p'), content);
    return readPassphraseFile(join(dir, 'p')).catch((e: Error) => e);
  };
  t.same(await read('correct horse'), Buffer.from('correct horse'));
  t.same(await read('correct horse\n'), Buffer.from('correct horse'));
  t.same(await read('correct horse\r\n'), Buffer.from('correct horse'));
  t.same(await read('pässwörd ✓\n'), Buffer.from('pässwörd ✓'));
  const cases: [string | Buffer, RegExp][] = [
    ['', /is empty/],
    ['\n', /is empty/],
    ['zebra\nquokka\n', /line break or a control character/],
    ['zebra cr\r', /line break or a control character/],
    ['quokka\bzebra', /control character/],
    ['x'.repeat(1025), /more than 1024 bytes/],
    ['x'.repeat(5000), /at most 1026 are accepted/],
  ];
  for (const [content, message] of cases) {
    const result = await read(content);
    t.match(result, { code: 'ERR_KEY_SOURCE', message }, JSON.stringify(content).slice(0, 30));
    t.ok(result instanceof Error && !result.message.includes('zebra') && !result.message.includes('quokka'), 'content not echoed');
  }
  const ok = await read('x'.repeat(1024) + '\n');
  t.equal((ok as Buffer).length, 1024);
  t.equal(ok instanceof Buffer && ok.buffer.byteLength, 1024, 'a buffer of its own');
});

t.test('Argon2 costs are checked against fscrypt rules and our limits', async (t) => {
  t.same(checkArgon2Costs({ time: 1, memory: 8, parallelism: 1 }), { time: 1, memory: 8, parallelism: 1 });
  for (const bad of [{ time: 0, memory: 1024, parallelism: 1 }, { time: 1, memory: 15, parallelism: 2 }, { time: 1, memory: 1024, parallelism: 256 }, { time: 1.5, memory: 1024, parallelism: 1 }, { time: 1, memory: 2 ** 21, parallelism: 1 }, null]) {
    t.throws(() => checkArgon2Costs(bad), { code: 'ERR_INVALID_ARG' }, JSON.stringify(bad));
  }
  t.same(DEFAULT_ARGON2_COSTS, { time: 12, memory: 65536, parallelism: 1 }, 'the documented defaults (docs/keys.md)');
  t.ok(Object.isFrozen(DEFAULT_ARGON2_COSTS));
});

t.test('a passphrase protector stores its explicit costs and salt; defaults apply when none are given', async (t) => {
  const root = join(fs.mountpoint, 'pass');
  await mkdir(root);
  const dir = await secretsDir(t);
  const spec = await passphraseFile(dir, 'correct horse battery staple');
  const slot = new SlotKeys(root);
  const info = await slot.createProtector(spec, { name: 'pw' });
  t.same(info, { descriptor: info.descriptor, source: 'custom_passphrase', name: 'pw', costs: FAST_COSTS });
  const data = decodeProtectorData(await readFile(join(slotLayout(root).protectorsDir, info.descriptor)));
  t.match(data, { source: 'custom_passphrase', costs: { ...FAST_COSTS, truncationFixed: false } });
  t.equal(data.salt?.length, 16);

  // Opening uses the costs stored in the protector, not the spec's.
  const open = await slot.openProtector({ ...spec, costs: { time: 3, memory: 4096, parallelism: 2 } });
  const key = newPolicyKey();
  const { identifier } = await open.addPolicy(key);
  // The same passphrase without the trailing newline opens it too.
  await writeFile(join(dir, 'no-newline'), 'correct horse battery staple');
  const again = await slot.openProtector({ kind: 'passphrase', path: join(dir, 'no-newline') });
  t.ok((await again.unwrapPolicyKey(identifier)).equals(key));

  // A wrong passphrase: ERR_WRONG_KEY, nothing modified, passphrase nowhere in the error.
  const wrong = await passphraseFile(dir, 'correct horse battery stapler', 'wrong');
  const before = await snapshotTree(root);
  const error = await rejection(slot.openProtector(wrong));
  t.match(error, { code: 'ERR_WRONG_KEY', message: new RegExp(`passphrase in '.*wrong' does not open protector ${info.descriptor}.*slot '${root}'`) });
  t.ok(assertNoSecrets(error.message, ['correct horse battery stapler', 'correct horse battery staple', key]));
  t.same(await snapshotTree(root), before);

  // No costs given: the defaults, written into the protector.
  const defaults = await slot.createProtector({ kind: 'passphrase', path: spec.path }, { name: 'default-costs' });
  t.same(defaults.costs, DEFAULT_ARGON2_COSTS);
  t.same((await slot.listProtectors()).map((p) => p.name).sort(), ['default-costs', 'pw']);
  t.match(await rejection(slot.openProtector({ kind: 'passphrase', path: spec.path })), { code: 'ERR_BAD_METADATA', message: /2 custom_passphrase protectors/ });
  open.close();
  again.close();
});
