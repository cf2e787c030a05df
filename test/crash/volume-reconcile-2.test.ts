// Crash safety, recovery by reconcile (DESIGN invariant 6), part 2: as part 1,
// for the remaining hooks (HOOK_STEPS, and the rotation's ROTATION_STEPS as
// 'rotate:<step>'). 32 crash points: recycle 12, reconcile 8 (a reconcile
// killed mid-way, reconciled again), rotate 12.
import t from 'tap';
import { reconcileMatrix } from '../fixtures/crash/crash-reconcile.js';

await reconcileMatrix(t, 2, 32);
