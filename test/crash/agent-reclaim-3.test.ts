// Invariant 6 under the node agent, part reclaim-3 of the agent crash matrix:
// the agent SIGKILLed right after each step of the last third of
// AGENT_STEPS.reclaim (a new reclaim step lands here);
// each converging once a new agent starts. The cases are in
// fixtures/crash/agent-crash-cases.ts, the split in fixtures/crash/agent-crash-points.ts.
import t from 'tap';
import { crashTests } from '../fixtures/crash/agent-crash-cases.js';

await crashTests(t, 'reclaim-3');
