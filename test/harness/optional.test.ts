// The optional-requirement helper (test/fixtures/system/optional.ts): a missing tool
// is a named skip, or in strict mode a failure with the same message; each
// detector (tool on PATH, default key quotas, npm registry) really detects
// absence, so no test can skip silently where it should run, or run where it
// cannot.
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { defaultKeyQuotas, KEYCTL, needMessage, needs, npmRegistry, onPath, STRICT_ENV, strictMode, tool, type Skippable } from '../fixtures/system/optional.js';
import { scratchDir } from '../fixtures/system/scratch-fs.js';

const CHILD = join(import.meta.dirname, '..', 'fixtures', 'children', 'optional-child.ts');

/** Runs the one-test child tap file with this PATH, strict or not. */
function runChild(path: string, strict: boolean): { code: number | null; stdout: string; stderr: string } {
  const env: NodeJS.ProcessEnv = { PATH: path, HOME: process.env.HOME ?? '/root' };
  if (strict) env[STRICT_ENV] = '1';
  const child = spawnSync(process.execPath, [...process.execArgv, CHILD], { encoding: 'utf8', env, timeout: 120_000 });
  return { code: child.status, stdout: child.stdout, stderr: child.stderr };
}

/** A directory holding an executable `name` (a stand-in, never run). */
function fakeTool(t: Parameters<typeof scratchDir>[0], name: string): string {
  const dir = scratchDir(t, 'fscrypt-local-path-');
  writeFileSync(join(dir, name), '#!/bin/sh\nexit 0\n');
  chmodSync(join(dir, name), 0o755);
  return dir;
}

t.test('without the tool: a skip naming it and its install command; strict mode makes it a failure', async (t) => {
  const empty = scratchDir(t, 'fscrypt-local-path-');
  const skipped = runChild(empty, false);
  t.equal(skipped.code, 0, 'a skip passes the file', { output: skipped.stdout + skipped.stderr });
  t.match(skipped.stdout, /^ok 1 - a test that needs keyctl # SKIP needs `keyctl` \(not found on PATH\); to run it: apt-get install keyutils$/m);
  t.notMatch(skipped.stdout, /not ok/);

  const strict = runChild(empty, true);
  t.equal(strict.code, 1, 'strict: the file fails');
  t.match(strict.stdout, /^ {4}not ok 1 - needs `keyctl` \(not found on PATH\); to run it: apt-get install keyutils \[FSCRYPT_LOCAL_TEST_STRICT=1: a skip is a failure\]$/m);
  t.match(strict.stdout, /^not ok 1 - a test that needs keyctl/m);
  t.notMatch(strict.stdout, /^\s*ok \d+ .*# SKIP/m, 'strict mode skips nothing');
});

t.test('with the tool on PATH the test runs, strict or not', async (t) => {
  const dir = fakeTool(t, 'keyctl');
  for (const strict of [false, true]) {
    const ran = runChild(dir, strict);
    t.equal(ran.code, 0, `strict=${strict}: the file passes`, { output: ran.stdout + ran.stderr });
    t.match(ran.stdout, /ok 1 - keyctl was found/, `strict=${strict}: the body ran`);
    t.notMatch(ran.stdout, /^\s*(ok \d+ .*# SKIP|not ok)/m);
  }
});

t.test('needs() in this process: true when met; otherwise one skip or one failure, and false', async (t) => {
  const calls: string[] = [];
  const fake: Skippable = {
    plan: (n, comment) => void calls.push(`plan ${n} ${comment}`),
    fail: (message) => (calls.push(`fail ${message}`), false),
  };
  const present = { name: 'present', missing: () => undefined, enable: 'nothing' };
  const absent = { name: 'absent', missing: () => 'gone', enable: 'install-it' };
  const saved = process.env[STRICT_ENV];
  t.teardown(() => {
    if (saved === undefined) delete process.env[STRICT_ENV];
    else process.env[STRICT_ENV] = saved;
  });

  delete process.env[STRICT_ENV];
  t.equal(needs(fake, present), true);
  t.same(calls, [], 'nothing reported when met');
  t.equal(needs(fake, present, absent, absent), false);
  t.same(calls, ['plan 0 needs absent (gone); to run it: install-it'], 'one skip, for the first missing');

  calls.length = 0;
  process.env[STRICT_ENV] = '1';
  t.equal(needs(fake, absent), false);
  t.same(calls, [`fail needs absent (gone); to run it: install-it [${STRICT_ENV}=1: a skip is a failure]`]);
  t.equal(strictMode({ [STRICT_ENV]: '0' }), false, 'only "1" is strict');
  t.equal(strictMode({}), false);
});

t.test('onPath finds executables only, in PATH order', async (t) => {
  const first = fakeTool(t, 'fscrypt-local-fake');
  const second = fakeTool(t, 'fscrypt-local-fake');
  const notExecutable = scratchDir(t, 'fscrypt-local-path-');
  writeFileSync(join(notExecutable, 'fscrypt-local-fake'), 'data');
  mkdirSync(join(notExecutable, 'a-directory'));
  t.equal(onPath('fscrypt-local-fake', `${notExecutable}::${first}:${second}`), join(first, 'fscrypt-local-fake'));
  t.equal(onPath('a-directory', notExecutable), undefined, 'a directory is not a command');
  t.equal(onPath('fscrypt-local-fake', notExecutable), undefined, 'a file without x is not a command');
  t.equal(tool('fscrypt-local-no-such-tool', 'apt-get install nothing').missing(), 'not found on PATH');
  t.equal(KEYCTL.missing(), onPath('keyctl') === undefined ? 'not found on PATH' : undefined, 'KEYCTL looks at the real PATH');
});

t.test('defaultKeyQuotas: met only with the kernel defaults, and says what this machine has', async (t) => {
  const dir = scratchDir(t, 'fscrypt-local-quota-');
  const write = (keys: string, bytes: string): void => {
    writeFileSync(join(dir, 'maxkeys'), `${keys}\n`);
    writeFileSync(join(dir, 'maxbytes'), `${bytes}\n`);
  };
  write('200', '20000');
  t.equal(defaultKeyQuotas(dir).missing(), undefined);
  write('2000', '20000');
  t.equal(defaultKeyQuotas(dir).missing(), 'this machine has kernel.keys.maxkeys=2000, kernel.keys.maxbytes=20000');
  write('200', '200000');
  t.match(defaultKeyQuotas(dir).missing(), /maxbytes=200000/);
  const quotas = defaultKeyQuotas(join(dir, 'missing'));
  t.match(quotas.missing(), /maxkeys=unreadable: ENOENT/);
  t.match(needMessage(quotas, 'x'), /^needs the kernel's default key quotas .*maxkeys=200, kernel\.keys\.maxbytes=20000\) \(x\); to run it: sysctl -w kernel\.keys\.maxkeys=200 kernel\.keys\.maxbytes=20000/);
});

t.test('npmRegistry: an unreachable registry is detected, fast, and named', async (t) => {
  const started = Date.now();
  // Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
  const why = npmRegistry({ ...process.env, npm_config_registry: 'http://127.0.0.1:9/' }).missing();
  t.match(why, /^the cache lacks dependencies of the packed tarball \(node-addon-api, bindings, \.\.\.\) and `npm ping` failed: exit 1, .*ECONNREFUSED/);
  t.ok(Date.now() - started < 30_000, 'answered within the timeout');
});

t.test('an offline install with a cold cache reports ENOTCACHED (what the package test tells apart from real failures)', async (t) => {
  const cache = scratchDir(t, 'fscrypt-local-npm-cache-');
  const project = scratchDir(t, 'fscrypt-local-npm-project-');
  writeFileSync(join(project, 'package.json'), '{"name":"consumer","version":"1.0.0","private":true}');
  const result = spawnSync('npm', ['install', '--offline', '--no-audit', '--no-fund', 'bindings@1.5.0'], {
    cwd: project,
    encoding: 'utf8',
    env: { ...process.env, npm_config_cache: cache },
    timeout: 60_000,
  });
  t.not(result.status, 0);
  t.match(result.stderr, /ENOTCACHED/);
});
