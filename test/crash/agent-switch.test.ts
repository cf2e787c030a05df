// The agent's fault switch (runAgent's onStep, which the crash tests use to
// SIGKILL the agent after a step) is off in production: `fscrypt-local run`
// has no flag or environment variable that reaches it. Proved on the real
// command: a plain-JS transpile of lib/ whose run-agent module is replaced
// by a recorder, run with every flag the run command declares (read from the
// command itself, so a flag added later is exercised too) and with every
// variable it reads plus names a switch could hide behind; the recorder
// shows what runAgent received: no onStep, no function at all.
import { spawnSync } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { recordFigure } from '../fixtures/campaign/campaign.js';
import { buildJs } from '../fixtures/system/js-build.js';
import { scratchDir } from '../fixtures/system/scratch-fs.js';

const js = await buildJs(t, ['lib']);
const scratch = scratchDir(t);
// The CLI reads its version from the package.json two levels above its module: the transpile's root.
const { version } = JSON.parse(await readFile(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
await writeFile(join(js, 'package.json'), `${JSON.stringify({ type: 'module', version })}\n`);

// The recorder: what runAgent was called with (each option's type, and its value when it is plain data), then a SIGTERM to itself so the command returns.
// A signal handler does not hold the event loop open, and the signal arrives asynchronously after process.kill: the recorder holds the loop
// open until stop() the way the real agent's servers do, or the process may drain and exit 13 (unsettled top-level await) before SIGTERM lands.
await writeFile(
  join(js, 'lib/agent/run-agent.js'),
  `export async function runAgent(options) {
  const seen = Object.fromEntries(Object.entries(options).map(([k, v]) => [k, { type: typeof v, value: typeof v === 'function' ? undefined : v }]));
  process.stdout.write('RUN-AGENT ' + JSON.stringify(seen) + '\\n');
  const alive = setInterval(() => undefined, 1000);
  setTimeout(() => process.kill(process.pid, 'SIGTERM'), 100);
  return { stop: async () => clearInterval(alive) };
}
`,
);
await writeFile(
  join(js, 'run-options.js'),
  `import { buildProgram } from './lib/cli/program.js';
const run = buildProgram({ exitCode: 0 }).commands.find((c) => c.name() === 'run');
process.stdout.write(JSON.stringify(run.options.map((o) => ({ long: o.long, takesValue: o.required || o.optional }))) + '\\n');
`,
);

// A valid value for each flag the run command has today; a flag added later gets a plain word (and fails here if it rejects it, to be looked at).
const VALUES: Record<string, string> = {
  '--config': join(scratch, 'config'),
  '--node-name': 'node-a',
  '--namespace': 'kube-system',
  '--csi-endpoint': `unix://${join(scratch, 'csi.sock')}`,
  '--kubeconfig': join(scratch, 'kubeconfig'),
  '--listen-address': '127.0.0.1:0',
  '--kubelet-dir': join(scratch, 'kubelet'),
  '--discovery-period': '15s',
};
// Every variable run reads, and names a test-only switch would plausibly use.
const ENV: Record<string, string> = {
  FSCRYPT_LOCAL_CONFIG: join(scratch, 'config-env'),
  MY_NODE_NAME: 'node-env',
  MY_NAMESPACE: 'env-namespace',
  CSI_ENDPOINT: `unix://${join(scratch, 'env.sock')}`,
  KUBECONFIG: join(scratch, 'kubeconfig-env'),
  FSCRYPT_LOCAL_CRASH_AT: 'reclaim/recycle:intent-recorded',
  FSCRYPT_LOCAL_ON_STEP: 'kill',
  FSCRYPT_LOCAL_FAULTS: 'on',
  FSCRYPT_LOCAL_TEST: '1',
  CRASH_AT: 'offer/prepare:key-added',
  ON_STEP: 'kill',
};

function runCommand(args: string[], env: Record<string, string>): { status: number | null; seen?: Record<string, { type: string; value?: unknown }>; output: string } {
  const child = spawnSync(process.execPath, [join(js, 'lib/cli/main.js'), 'run', ...args], {
    env: { PATH: process.env.PATH ?? '', ...env },
    encoding: 'utf8',
    timeout: 60_000,
  });
  const line = child.stdout.split('\n').find((l) => l.startsWith('RUN-AGENT '));
  return { status: child.status, ...(line ? { seen: JSON.parse(line.slice('RUN-AGENT '.length)) } : {}), output: `${child.stdout}${child.stderr}` };
}

const listed = spawnSync(process.execPath, [join(js, 'run-options.js')], { encoding: 'utf8' });
if (listed.status !== 0) throw new Error(`cannot read the run command's flags: ${listed.stderr}`);
const flags = JSON.parse(listed.stdout) as { long: string; takesValue: boolean }[];

t.test('the run command declares no flag for steps, crashes or faults', async (t) => {
  t.ok(flags.length >= 8, `run has ${flags.length} flags`);
  t.same(
    flags.filter((f) => /step|crash|fault|kill/i.test(f.long)),
    [],
    'none is named for a step, a crash or a fault',
  );
});

const cases: { name: string; args: string[]; env: Record<string, string> }[] = [
  { name: 'every flag', args: flags.flatMap((f) => (f.takesValue ? [f.long, VALUES[f.long] ?? 'value'] : [f.long])), env: {} },
  { name: 'every variable', args: [], env: ENV },
  { name: 'every flag and every variable', args: flags.flatMap((f) => (f.takesValue ? [f.long, VALUES[f.long] ?? 'value'] : [f.long])), env: ENV },
];

let checked = 0;
for (const c of cases) {
  t.test(`fscrypt-local run with ${c.name}: runAgent gets no step observer`, async (t) => {
    const run = runCommand(c.args, c.env);
    t.equal(run.status, 0, `the command ran and stopped cleanly${run.status === 0 ? '' : `: ${run.output}`}`);
    t.ok(run.seen, 'runAgent was called');
    const seen = run.seen ?? {};
    t.notOk('onStep' in seen, 'no onStep option');
    t.same(
      Object.entries(seen)
        .filter(([, v]) => v.type === 'function')
        .map(([k]) => k),
      [],
      'no option is a function: nothing the command passes can observe or stop a step',
    );
    t.same(
      Object.keys(seen).filter((k) => /step|crash|fault|kill/i.test(k)),
      [],
      'no option is named for a step, a crash or a fault',
    );
    // The run really took what it was given: the flags and variables above are read, so the proof is not vacuous.
    if (c.args.length > 0) t.equal(seen.nodeName?.value, 'node-a', 'the flags reached runAgent');
    else t.equal(seen.nodeName?.value, 'node-env', 'the variables reached runAgent');
    checked++;
  });
}

t.test('figures', async (t) => {
  t.equal(checked, cases.length, 'every way of running the command was checked');
  recordFigure({ area: 'crash matrix', name: 'fault switch: run invocations checked (flags and variables)', value: checked, command: 'npx tap test/crash/agent-switch.test.ts' });
});
