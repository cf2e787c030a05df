// writeFscryptConf: a config the stock tool accepts, written atomically; a
// valid existing one kept, an invalid one backed up and replaced. Uses a
// temp path: /etc/fscrypt.conf is never touched by the tests.
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { DEFAULT_ARGON2_COSTS, FSCRYPT_CONF_PATH, fscryptConfProblem, renderFscryptConf, writeFscryptConf } from '../../lib/keys/index.js';
import { runFscrypt, secretsDir } from '../fixtures/keys-helpers.js';
import { FSCRYPT, needs } from '../fixtures/system/optional.js';
import { ext4 } from '../fixtures/system/scratch-fs.js';

t.test('the default path is /etc/fscrypt.conf', async (t) => {
  t.equal(FSCRYPT_CONF_PATH, '/etc/fscrypt.conf');
});

t.test('the rendered config has our costs and v2 options, and is written atomically', async (t) => {
  const text = renderFscryptConf();
  const config = JSON.parse(text) as Record<string, Record<string, string>>;
  t.same(config.hash_costs, { time: String(DEFAULT_ARGON2_COSTS.time), memory: String(DEFAULT_ARGON2_COSTS.memory), parallelism: String(DEFAULT_ARGON2_COSTS.parallelism) });
  t.same(config.options, { padding: '32', contents: 'AES_256_XTS', filenames: 'AES_256_CTS', policy_version: '2' });
  t.equal(fscryptConfProblem(text), undefined);
  const dir = await secretsDir(t);
  const path = join(dir, 'fscrypt.conf');
  t.same(await writeFscryptConf(path, { hashCosts: { time: 2, memory: 2048, parallelism: 1 } }), { path, action: 'written' });
  t.equal((await stat(path)).mode & 0o777, 0o644);
  t.same(await readdir(dir), ['fscrypt.conf'], 'no temp file left');
});

t.test('the stock tool runs with the written config, and refuses a broken one', async (t) => {
  if (!needs(t, FSCRYPT)) return;
  const dir = await secretsDir(t);
  const path = join(dir, 'fscrypt.conf');
  await writeFscryptConf(path, { hashCosts: { time: 2, memory: 2048, parallelism: 1 } });
  // On an encrypt-capable ext4 of its own: what `fscrypt status` says about
  // TMPDIR's filesystem depends on the host, not on the config.
  const { mountpoint: mnt } = ext4(t);
  const setup = await runFscrypt(path, ['setup', mnt, '--quiet']);
  t.equal(setup.code, 0, 'fscrypt setup runs with it', { stderr: setup.stderr });
  const ok = await runFscrypt(path, ['status', mnt]);
  t.equal(ok.code, 0, 'fscrypt status runs with it', { stderr: ok.stderr });
  t.equal(ok.stderr, '', 'no complaint, about the config or anything else');
  t.match(ok.stdout, new RegExp(`ext4 filesystem "${mnt}" has 0 protectors and 0 policies`), 'the status of the filesystem');
  // Sanity: the tool does read FSCRYPT_CONF, and a broken one stops it.
  await writeFile(join(dir, 'broken.conf'), '{"source":');
  const broken = await runFscrypt(join(dir, 'broken.conf'), ['status', mnt]);
  t.not(broken.code, 0, 'a broken config is refused');
  t.match(broken.stderr, /broken\.conf/, 'and named');
});

t.test('a valid existing config is kept; an invalid one is backed up and replaced; force replaces', async (t) => {
  const dir = await secretsDir(t);
  const path = join(dir, 'fscrypt.conf');
  const theirs = renderFscryptConf({ hashCosts: { time: 19, memory: 131072, parallelism: 2 } });
  await writeFile(path, theirs);
  t.same(await writeFscryptConf(path), { path, action: 'kept' });
  t.equal(await readFile(path, 'utf8'), theirs, 'untouched');

  for (const [bad, reason] of [
    ['{"source":', /not valid JSON/],
    ['[]', /not a JSON object/],
    ['{"source":"raw_key"}', /"options" are missing/],
    ['{"source":"custom_passphrase","options":{"padding":"32","contents":"AES_256_XTS","filenames":"AES_256_CTS"}}', /hash_costs/],
    ['{"source":"raw_key","options":{"padding":"7","contents":"AES_256_XTS","filenames":"AES_256_CTS"}}', /padding/],
  ] as const) {
    await writeFile(path, bad);
    const result = await writeFscryptConf(path);
    t.match(result, { action: 'replaced', reason }, bad);
    t.equal(await readFile(result.backup!, 'utf8'), bad, 'the invalid file is kept as a backup');
    t.equal(fscryptConfProblem(await readFile(path, 'utf8')), undefined);
  }
  const forced = await writeFscryptConf(path, { force: true, source: 'raw_key' });
  t.match(forced, { action: 'replaced', reason: /forced/ });
  t.equal(JSON.parse(await readFile(path, 'utf8')).source, 'raw_key');
  t.equal(fscryptConfProblem('{"source":"raw_key","options":{"padding":32,"contents":1,"filenames":4},"future_field":true}'), undefined, 'numbers and unknown fields are tolerated');
});
