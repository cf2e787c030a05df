// Invariant 6 under the node agent, part offer-1 of the agent crash matrix:
// the agent SIGKILLed right after each step of the first half of
// AGENT_STEPS.offer (a fresh slot's init-slot and prepare);
// each converging once a new agent starts. The cases are in
// fixtures/crash/agent-crash-cases.ts, the split in fixtures/crash/agent-crash-points.ts.
import t from 'tap';
import { crashTests } from '../fixtures/crash/agent-crash-cases.js';

await crashTests(t, 'offer-1');
