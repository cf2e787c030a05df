// Crash safety, recovery by reconcile (DESIGN invariant 6): for every step of
// every hook in HOOK_STEPS and every rotation step (test/fixtures/crash-matrix.ts
// derives the list from the code), a child running the hook is killed with
// SIGKILL right after the step; then reconcile runs (twice: the second must
// find nothing to do), and DESIGN's invariants 1-4 must hold and the slot must
// still work end to end. 62 crash points (init-slot 3, prepare 9, unlock 3,
// admin-unlock 2, lock 3, admin-lock 5, erase 5, recycle 12, reconcile 8,
// rotate 12); crash-matrix's `crashPoints()` is the count.
//
// Two hooks are recovered by more than reconcile, as documented: a slot whose
// init-slot died before its state was written is no slot yet (reconcile
// refuses it; init-slot again is the remedy its error names), and a rotation
// is finished by running it again (reconcile cannot: it does not have the new
// key source); both are run here after reconcile.
import { readdir } from 'node:fs/promises';
import t, { type Test } from 'tap';
import { slotLayout } from '../lib/keys/index.js';
import { initSlot, openSlotProtector, reconcile, rotateKeySource } from '../lib/volume/index.js';
import { readSlotState } from '../lib/volume/slot-state.js';
import { checkSlot, crash, crashPoints, matrix, metadataLeftovers, opens, rotationOpeners, type Case } from './fixtures/crash-matrix.js';
import { rejection } from './fixtures/helpers.js';

const m = await matrix(t);
const { points, problems } = crashPoints();

t.test('the crash points cover every hook and step', async (t) => {
  t.same(problems, []);
  t.equal(points.length, 62, "the count in this file's header and docs/lifecycle.md (update both when it changes)");
});

/** Reconcile, with the protector the slot opens with; a second run must have nothing to do. */
async function reconcileTwice(t: Test, c: Case, source = c.job.source): Promise<void> {
  const protector = await openSlotProtector(c.slot, source);
  try {
    const report = await reconcile(c.slot, protector);
    t.same(report.warnings, [], 'reconcile has nothing it cannot fix');
    t.same((await reconcile(c.slot, protector)).actions.filter((a) => !a.startsWith('resumed')), [], 'a second reconcile has nothing to do');
  } finally {
    protector.close();
  }
}

for (const { hook, step, scenario } of points) {
  t.test(`${hook} (${scenario.name}): kill -9 after ${step}, then reconcile`, async (t) => {
    const c = await scenario.setUp(m, t);
    await crash(t, m, c, step);
    let source = c.job.source;

    if (hook === 'init-slot' && step !== 'init-slot:state-written') {
      t.match(await rejection(reconcile(c.slot)), { code: 'ERR_NOT_INITIALIZED' }, 'no state yet: reconcile refuses the slot');
      const info = await initSlot(c.slot, source);
      t.equal(info.created, true, 'init-slot again creates the slot');
      if (c.orphanProtector !== undefined) t.equal(info.protector, c.orphanProtector, 'adopting the protector made before the crash');
      t.equal((await readdir(slotLayout(c.slot).protectorsDir)).length, 1, 'one protector');
    } else if (hook === 'rotate') {
      const expected = rotationOpeners(c, step);
      await reconcileTwice(t, c, expected.new ? c.job.newSource! : source);
      t.same({ old: await opens(c.slot, source), new: await opens(c.slot, c.job.newSource!) }, expected, 'who opens the slot now');
      const { protector } = await readSlotState(c.slot);
      const layout = slotLayout(c.slot);
      const leftovers = await metadataLeftovers(c.slot);
      t.ok(
        leftovers.every((f) => f.startsWith(`${layout.keysDir}/`) && f.split('/').pop()!.startsWith(`protector.${protector}.`)),
        `the only metadata left over is the rotation's own (${leftovers.length})`,
      );
      // The admin runs the rotation again, as its failure said to.
      t.equal((await rotateKeySource(c.slot, source, c.job.newSource!)).descriptor, protector, 'rotating again finishes it');
      t.notOk(await opens(c.slot, source), 'the old source no longer opens the slot');
      source = c.job.newSource!;
    } else {
      await reconcileTwice(t, c);
    }
    await checkSlot(t, m, c, source);
  });
}
