// Invariant 6 under the node agent, part publish of the agent crash matrix:
// the agent SIGKILLed right after the claim of a bound PV, each step
// of a publish (unlock) and each step of an unpublish (lock), with kubelet
// retrying the interrupted call;
// each converging once a new agent starts. The cases are in
// fixtures/crash/agent-crash-cases.ts, the split in fixtures/crash/agent-crash-points.ts.
import t from 'tap';
import { crashTests } from '../fixtures/crash/agent-crash-cases.js';

await crashTests(t, 'publish');
