// Builds what benchmarks run: the package's dist/ (npm run build) and small
// C programs of bench/ (into the gitignored bench/bin/).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
const benchDir = join(repoRoot, 'bench');

/** Set by bench/run.mjs once it has built, so each benchmark need not build again. */
export const BUILT_ENV = 'FSCRYPT_LOCAL_BENCH_BUILT';

/**
 * Compiles lib/ to dist/ with `npm run build`. tsc still emits on type errors
 * (which may come from work in progress elsewhere in lib/), so those are
 * reported and the run continues as long as dist/index.js exists.
 */
export function buildPackage() {
  const result = spawnSync('npm', ['run', 'build', '--silent'], { cwd: repoRoot, encoding: 'utf8' });
  if (result.status !== 0) {
    const output = `${result.stdout ?? ''}${result.stderr ?? ''}`.trim();
    if (!existsSync(join(repoRoot, 'dist/index.js'))) {
      throw new Error(`npm run build failed and dist/index.js does not exist:\n${output}`);
    }
    process.stderr.write(`bench: npm run build reported errors; dist/ was still emitted, continuing:\n${output}\n`);
  }
  const addon = join(repoRoot, 'build/Release/fscrypt_local.node');
  const source = join(repoRoot, 'native/addon.cc');
  if (!existsSync(addon)) {
    throw new Error('the native addon is not built (build/Release/fscrypt_local.node); run `npm install` or `npx node-gyp rebuild`');
  }
  if (statSync(source).mtimeMs > statSync(addon).mtimeMs) {
    process.stderr.write('bench: native/addon.cc is newer than the built addon; run `npx node-gyp rebuild` to measure it\n');
  }
}

/** Builds the package unless bench/run.mjs already did in this run. */
export function ensurePackageBuilt() {
  if (process.env[BUILT_ENV] === '1') return;
  buildPackage();
}

/** Compiles bench/<source> with gcc -O2 to bench/bin/<binary> if missing or older than the source. */
export function compileC(source, binary) {
  const sourcePath = join(benchDir, source);
  const binaryPath = join(benchDir, 'bin', binary);
  if (existsSync(binaryPath) && statSync(binaryPath).mtimeMs >= statSync(sourcePath).mtimeMs) return binaryPath;
  mkdirSync(join(benchDir, 'bin'), { recursive: true });
  const result = spawnSync('gcc', ['-O2', '-Wall', '-Wextra', '-o', binaryPath, sourcePath], { encoding: 'utf8' });
  if (result.error?.code === 'ENOENT') throw new Error('gcc is not installed (apt-get install gcc)');
  if (result.status !== 0) throw new Error(`gcc failed on ${source}:\n${result.stderr}`);
  return binaryPath;
}
