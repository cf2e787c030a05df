// Crash safety, recovery by retry ("Idempotency as documented"): for every
// step of every hook in HOOK_STEPS and every rotation step
// (test/fixtures/crash-matrix.ts derives the list from the code), a child
// running the hook is killed with SIGKILL right after the step; then, with no
// reconcile first, this process makes the same call again with the same
// arguments (the retry a controller or kubelet would make), which must
// complete with the result the hook documents; then DESIGN's invariants 1-4
// must hold and the slot must still work end to end. 54 crash points
// (init-slot 3, prepare 9, unlock 3, admin-unlock 2, lock 3, admin-lock 5,
// erase 5, recycle 12, rotate 12). reconcile's 8 are in
// volume-crash-reconcile.test.ts: its retry is reconcile again, which is
// what that file runs.
import { join } from 'node:path';
import { lstatSync } from 'node:fs';
import t, { type Test } from 'tap';
import { getKeyStatus, getPolicy, samePolicy, defaultPolicy } from '../lib/kernel/index.js';
import { SlotKeys, type ProtectorInfo } from '../lib/keys/index.js';
import type { EraseResult, LockResult, RecycleResult, SlotInfo, UnlockResult, Volume } from '../lib/volume/index.js';
import { isBindOf } from '../lib/volume/mounts.js';
import { slotPaths } from '../lib/volume/slot-layout.js';
import { readSlotState, type SlotState } from '../lib/volume/slot-state.js';
import { checkSlot, crash, crashPoints, matrix, opens, type Case } from './fixtures/crash-matrix.js';
import { runHook } from './fixtures/lifecycle-hooks.js';

const m = await matrix(t);
const { points, problems } = crashPoints();
const retried = points.filter((p) => p.hook !== 'reconcile');

t.test('the crash points cover every hook and step', async (t) => {
  t.same(problems, []);
  t.equal(retried.length, 54, "the count in this file's header and docs/lifecycle.md (update both when it changes)");
});

/** `volume` is the slot's current, ready volume, with its verified policy. */
async function isCurrentReady(t: Test, c: Case, volume: Volume, what: string): Promise<void> {
  const state = await readSlotState(c.slot);
  t.same(
    state.volume && { name: state.volume.name, identifier: state.volume.identifier, phase: state.volume.phase },
    { name: volume.name, identifier: volume.identifier, phase: 'ready' },
    `${what} is the slot's current, ready volume`,
  );
  const policy = await getPolicy(volume.path);
  t.ok(policy && samePolicy(policy, defaultPolicy(volume.identifier)), `${what} has its verified policy`);
}

/** The result each hook documents for a retry, after a crash at `step` (the state the crash left: `crashed`). */
async function checkResult(t: Test, c: Case, step: string, result: unknown, crashed: SlotState | undefined): Promise<void> {
  const volume = c.job.volume;
  switch (c.job.hook) {
    case 'init-slot': {
      const info = result as SlotInfo;
      t.equal(info.created, step !== 'init-slot:state-written', 'created unless the state was written before the crash');
      const protectors = await new SlotKeys(c.slot).listProtectors();
      t.same(protectors.map((p) => p.descriptor), [info.protector], 'one protector: the one returned');
      if (c.orphanProtector !== undefined) t.equal(info.protector, c.orphanProtector, 'the protector made before the crash');
      t.ok(await opens(c.slot, c.job.source), 'the source opens it');
      return;
    }
    case 'prepare': {
      const next = result as Volume;
      await isCurrentReady(t, c, next, 'the volume returned');
      if (step === 'prepare:ready') t.equal(next.identifier, crashed?.volume?.identifier, 'the same ready volume as before the crash');
      return;
    }
    case 'unlock':
      t.same(result as UnlockResult, { targets: 1 }, 'published at its one target');
      t.ok(await isBindOf(c.job.target!, volume!.path), 'the target holds the volume');
      return;
    case 'admin-unlock':
      t.same(result as UnlockResult, { targets: 0 });
      t.equal((await readSlotState(c.slot)).volume?.adminUnlocked, true, 'recorded as admin-unlocked');
      t.equal((await getKeyStatus(c.slot, volume!.identifier)).status, 'present', 'its key is in the kernel');
      return;
    case 'lock':
    case 'admin-lock':
      t.same(result as LockResult, { locked: true, targets: [] }, 'locked');
      for (const target of c.published) {
        t.notOk(await isBindOf(target, volume!.path), `${target} is unmounted`);
        t.equal(lstatSync(target, { throwIfNoEntry: false }), undefined, 'and removed');
      }
      return;
    case 'erase':
      // Idempotent: the retry finishes an erase whose intent was recorded; once it is done, there is nothing left to erase.
      t.same(result as EraseResult, step === 'erase:done' ? {} : { erased: volume!.name, trash: join(slotPaths(c.slot).trashDir, volume!.name) });
      return;
    case 'recycle': {
      const { erased, next } = result as RecycleResult;
      t.equal(erased, volume!.name, 'erased: the old generation');
      t.ok(next.generation > volume!.generation, 'next: a later generation');
      await isCurrentReady(t, c, next, 'next');
      if (step === 'recycle:ready') t.equal(next.identifier, crashed?.volume?.identifier, 'the same next volume as before the crash');
      return;
    }
    case 'rotate': {
      const info = result as ProtectorInfo;
      t.equal(info.descriptor, (await readSlotState(c.slot)).protector, "the slot's protector");
      t.ok(await opens(c.slot, c.job.newSource!), 'the new source opens the slot');
      t.notOk(await opens(c.slot, c.job.source), 'the old source does not');
      return;
    }
    default:
      t.fail(`no documented result for ${c.job.hook}`);
  }
}

for (const { hook, step, scenario } of retried) {
  t.test(`${hook} (${scenario.name}): kill -9 after ${step}, then the same call again`, async (t) => {
    const c = await scenario.setUp(m, t);
    await crash(t, m, c, step);
    const crashed = await readSlotState(c.slot).catch(() => undefined);
    const result = await runHook(c.job);
    await checkResult(t, c, step, result, crashed);
    await checkSlot(t, m, c, c.job.newSource ?? c.job.source);
  });
}
