// The scratch fixtures' last cleanup layer: a test process killed with
// SIGKILL runs no teardown and no exit handler, so what it made (loop-mounted
// ext4, tmpfs, scratch directories holding test keys) is removed by the
// registry sweep that the next fixture and .ci/run perform.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { sweepStale } from '../fixtures/system/scratch-fs.js';

interface Made {
  ext4: string;
  image: string;
  tmpfs: string;
  dir: string;
}

function mounted(path: string): boolean {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((line) => line.split(' ')[4] === path);
}

t.test('what a kill -9ed test made is unmounted and deleted by the sweep', async (t) => {
  const registry = `/run/fscrypt-local-test-isolated-${process.pid}`;
  t.teardown(() => {
    sweepStale(registry);
    rmSync(registry, { recursive: true, force: true });
  });
  const child = spawn(process.execPath, [...process.execArgv, join(import.meta.dirname, '..', 'fixtures', 'children', 'scratch-child.ts')], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, FSCRYPT_LOCAL_TEST_REGISTRY: registry },
  });
  const made = await new Promise<Made>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('\n')) resolve(JSON.parse(out) as Made);
    });
    child.on('exit', (code) => reject(new Error(`the child exited (${code}) before reporting`)));
  });
  t.ok(mounted(made.ext4) && mounted(made.tmpfs), 'the child mounted both');
  t.ok(existsSync(join(made.dir, 'kek')), 'and wrote into its scratch directory');

  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await exited;
  t.ok(mounted(made.ext4), 'SIGKILL ran no cleanup');

  t.equal(sweepStale(registry), 3, 'the sweep found the dead process\'s three records');
  t.notOk(mounted(made.ext4), 'the ext4 is unmounted');
  t.notOk(mounted(made.tmpfs), 'the tmpfs is unmounted');
  t.notOk(existsSync(made.image), 'the image is deleted');
  t.notOk(existsSync(made.dir), 'the scratch directory and its key file are deleted');
});
