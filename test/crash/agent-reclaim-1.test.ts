// Invariant 6 under the node agent, part reclaim-1 of the agent crash matrix:
// the control (a whole reclaim in one agent), then the agent SIGKILLed right
// after each step of the first third of AGENT_STEPS.reclaim;
// each converging once a new agent starts. The cases are in
// fixtures/crash/agent-crash-cases.ts, the split in fixtures/crash/agent-crash-points.ts.
import t from 'tap';
import { crashTests } from '../fixtures/crash/agent-crash-cases.js';

await crashTests(t, 'reclaim-1');
