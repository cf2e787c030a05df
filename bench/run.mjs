// bench/run.mjs: runs every benchmark, one after another (`npm run bench`).
//
// Convention:
//   - a benchmark is a file bench/<name>.mjs other than this one, e.g.
//     bench/kernel.mjs; it runs as `node bench/<name>.mjs [--json]`;
//   - with --json it prints exactly one JSON document on stdout (progress
//     and warnings go to stderr), and without it a human-readable report;
//   - it exits non-zero when it could not measure (2 for a missing
//     precondition such as root, 1 for anything else);
//   - helpers shared by benchmarks live in bench/lib/*.mjs and C sources or
//     other files in bench/ are not benchmarks; bench/bin/ and
//     bench/results/ are gitignored outputs.
//
//   npm run bench                      every benchmark, reports on stdout
//   npm run -s bench -- --json         one JSON document: { benchmarks: { <name>: <its document> }, failed: [...] }
//                                      (-s: otherwise npm prints its own banner on stdout first)
//   npm run bench -- kernel [--json]   only the named benchmarks
//
// The package is built first (npm run build) so dist/ matches lib/; the
// benchmarks are told so and do not build again.
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { BUILT_ENV, buildPackage, repoRoot } from './lib/build.mjs';

const benchDir = join(repoRoot, 'bench');

function discover() {
  return readdirSync(benchDir)
    .filter((file) => file.endsWith('.mjs') && file !== 'run.mjs')
    .map((file) => file.slice(0, -'.mjs'.length))
    .sort();
}

function parseArgs(argv, available) {
  const selected = [];
  let json = false;
  for (const arg of argv) {
    if (arg === '--json') json = true;
    else if (available.includes(arg)) selected.push(arg);
    else {
      process.stderr.write(`bench: unknown argument ${arg}; benchmarks: ${available.join(', ')}\nusage: npm run bench -- [--json] [name...]\n`);
      process.exit(2);
    }
  }
  return { json, names: selected.length > 0 ? selected : available };
}

function main() {
  const available = discover();
  const { json, names } = parseArgs(process.argv.slice(2), available);
  process.stderr.write('bench: npm run build\n');
  buildPackage();
  const env = { ...process.env, [BUILT_ENV]: '1' };

  const documents = {};
  const failed = [];
  for (const name of names) {
    const script = join(benchDir, `${name}.mjs`);
    const args = json ? [script, '--json'] : [script];
    if (!json) process.stdout.write(`\n=== bench/${name} ===\n`);
    const child = spawnSync(process.execPath, args, {
      cwd: repoRoot,
      env,
      stdio: ['inherit', json ? 'pipe' : 'inherit', 'inherit'],
      encoding: 'utf8',
      maxBuffer: 256 << 20,
    });
    if (child.status !== 0) {
      failed.push({ name, exitCode: child.status, signal: child.signal });
      process.stderr.write(`bench: ${name} failed (${child.signal ?? `exit ${child.status}`})\n`);
      continue;
    }
    if (json) {
      try {
        documents[name] = JSON.parse(child.stdout);
      } catch {
        failed.push({ name, exitCode: 0, error: 'stdout was not one JSON document' });
        process.stderr.write(`bench: ${name} did not print one JSON document with --json\n`);
      }
    }
  }

  if (json) process.stdout.write(`${JSON.stringify({ benchmarks: documents, failed }, null, 2)}\n`);
  if (failed.length > 0) process.exitCode = 1;
}

main();
