// The slot's filesystem turning read-only (EROFS) right after each step of
// prepare, unlock, recycle and the key-source rotation, the way ext4 does
// it after an I/O error with errors=remount-ro (test/fixtures/fs-faults.ts
// says why not `mount -o remount,ro`): the hook completes or fails with
// EROFS saying to check dmesg, fsck and remount, leaves no key in the
// kernel unaccounted for, and once the filesystem is repaired and mounted
// again, reconcile and the same call converge with DESIGN's invariants 1-4
// holding.
import t from 'tap';
import { recordFigure } from './fixtures/campaign.js';
import { EROFS_FAULT, FAULT_HOOKS, faultMatrix, faultPoints, runFaultPoint } from './fixtures/fs-faults.js';

const COMMAND = 'npx tap test/volume-faults-erofs.test.ts';
const { points, problems } = faultPoints();
t.same(problems, [], 'every step of every hook has a scenario reaching it');

const m = await faultMatrix(t);
const driven = new Map<string, number>();
const failed = new Map<string, number>();
for (const point of points) {
  await t.test(`EROFS after ${point.step} (${point.scenario.name})`, async (t) => {
    const outcome = await runFaultPoint(t, m, EROFS_FAULT, point);
    if (outcome.injected) driven.set(point.hook, (driven.get(point.hook) ?? 0) + 1);
    if (outcome.failed) failed.set(point.hook, (failed.get(point.hook) ?? 0) + 1);
  });
}

t.test('figures', async (t) => {
  let total = 0;
  for (const hook of FAULT_HOOKS) {
    const n = driven.get(hook) ?? 0;
    t.ok(n > 0, `${hook}: points driven`);
    total += n;
    recordFigure({ area: 'faults', name: `EROFS mid-hook: ${hook} points`, value: n, command: COMMAND });
    recordFigure({ area: 'faults', name: `EROFS mid-hook: ${hook} points where the hook failed`, value: failed.get(hook) ?? 0, command: COMMAND });
  }
  t.equal(total, points.length, 'every point was driven');
  recordFigure({ area: 'faults', name: 'EROFS mid-hook: points', value: total, command: COMMAND });
});
