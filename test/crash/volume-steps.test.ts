// The crash tests' list of crash points comes from HOOK_STEPS and
// ROTATION_STEPS (test/fixtures/crash/crash-matrix.ts). This proves that list is
// what the code does: each crash scenario's hook, run once end to end in
// this process with an onStep recorder, reports exactly the hook's steps
// minus those the scenario declares unreached, and the scenarios of a hook
// together report every step it lists. A step listed but never reached, a
// step reported but not listed, or one reported twice fails here.
import t from 'tap';
import { CRASH_HOOKS, crashPoints, matrix, SCENARIOS, stepsOf } from '../fixtures/crash/crash-matrix.js';
import { runHook } from '../fixtures/lifecycle-hooks.js';

const m = await matrix(t);
const reported = new Map<string, string[]>();

t.test('every hook has a scenario for every step, and scenarios name only real steps', async (t) => {
  t.same(crashPoints().problems, []);
});

for (const scenario of SCENARIOS) {
  t.test(`${scenario.hook} (${scenario.name}) reports its steps`, async (t) => {
    const c = await scenario.setUp(m, t);
    const steps: string[] = [];
    await runHook(c.job, (step) => {
      steps.push(step);
    });
    const expected = stepsOf(scenario.hook).filter((s) => !scenario.unreached.includes(s));
    // Compared as multisets: recycle's erase and prepare halves interleave.
    t.same([...steps].sort(), [...expected].sort(), 'exactly the listed steps, each once');
    reported.set(scenario.hook, [...(reported.get(scenario.hook) ?? []), ...steps]);
  });
}

t.test('the scenarios of each hook reach all of its steps', async (t) => {
  for (const hook of CRASH_HOOKS) t.same([...new Set(reported.get(hook))].sort(), [...stepsOf(hook)].sort(), hook);
});
