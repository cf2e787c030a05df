// Crash safety, recovery by retry ("Idempotency as documented"), part 2: as
// part 1, for the remaining hooks but reconcile (its retry is reconcile, run
// by test/crash/volume-reconcile-2.test.ts). 24 crash points: recycle 12,
// rotate 12.
import t from 'tap';
import { retryMatrix } from '../fixtures/crash/crash-retry.js';

await retryMatrix(t, 2, 24);
