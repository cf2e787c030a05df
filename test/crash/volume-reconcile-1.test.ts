// Crash safety, recovery by reconcile (DESIGN invariant 6), part 1: a child
// running the hook is killed with SIGKILL right after each of its steps
// (test/fixtures/crash/crash-matrix.ts derives them from HOOK_STEPS); reconcile
// runs, then DESIGN's invariants 1-4 must hold and the slot must still work
// end to end (test/fixtures/crash/crash-reconcile.ts). 30 crash points: init-slot 3,
// prepare 9, unlock 3, admin-unlock 2, lock 3, admin-lock 5, erase 5.
import t from 'tap';
import { reconcileMatrix } from '../fixtures/crash/crash-reconcile.js';

await reconcileMatrix(t, 1, 30);
