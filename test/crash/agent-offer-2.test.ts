// Invariant 6 under the node agent, part offer-2 of the agent crash matrix:
// the agent SIGKILLed right after each step of the second half of
// AGENT_STEPS.offer (the rest of the prepare, the PV's creation);
// each converging once a new agent starts. The cases are in
// fixtures/crash/agent-crash-cases.ts, the split in fixtures/crash/agent-crash-points.ts.
import t from 'tap';
import { crashTests } from '../fixtures/crash/agent-crash-cases.js';

await crashTests(t, 'offer-2');
