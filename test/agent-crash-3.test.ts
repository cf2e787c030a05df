// Invariant 6 under the node agent, part 3 of 3: the agent SIGKILLed right
// after each durable reclaim step of the last third of RECLAIM_STEPS, each
// converging once a new agent starts. The harness and the split are in
// fixtures/agent-crash.ts.
import t from 'tap';
import { crashTests } from './fixtures/agent-crash.js';

await crashTests(t, 3);
