// The slot's filesystem turning read-only (EROFS) right after each step of
// a hook, part 2: prepare and the key-source rotation. It turns read-only
// the way ext4 does after an I/O error with errors=remount-ro
// (test/fixtures/campaign/fs-faults.ts says why not by `mount -o remount,ro`, and
// what each point checks). The hook completes or fails with EROFS saying to
// check dmesg and fsck, leaves no key in the kernel that no target accounts
// for, and once the filesystem is repaired and mounted again, reconcile and
// the same call converge with DESIGN's invariants 1-4 holding.
import { execFileSync } from 'node:child_process';
import t from 'tap';
import { prepare } from '../../lib/volume/index.js';
import { EROFS_FAULT, faultMatrixFile } from '../fixtures/campaign/fs-faults.js';
import { freshSlot } from '../fixtures/volume-slot.js';

await faultMatrixFile(t, EROFS_FAULT, 2, 'npx tap test/volume/faults-erofs-2.test.ts');

// Why the fault is ext4's error path and not `mount -o remount,ro`: while a
// hook holds the slot, its lock file is open for writing on the slot's
// filesystem, and the kernel refuses the remount (mount point busy). Once
// the hook is done, the same remount goes through.
t.test('mount -o remount,ro is refused while a hook holds the slot, and works after it', async (t) => {
  const { slot, protector } = await freshSlot(t, { sizeMiB: 16 });
  const remountRo = (): string | undefined => {
    try {
      execFileSync('mount', ['-o', 'remount,ro', slot], { stdio: ['ignore', 'ignore', 'pipe'] });
      return undefined;
    } catch (error) {
      return String((error as { stderr?: Buffer }).stderr ?? error);
    }
  };
  let during: string | undefined = 'never tried';
  await prepare(slot, protector, {
    onStep: (step) => {
      if (step === 'prepare:intent-recorded') during = remountRo();
    },
  });
  t.match(during, /busy/, 'refused in the middle of prepare: the mount point is busy');
  t.equal(remountRo(), undefined, 'accepted once prepare is done');
  execFileSync('mount', ['-o', 'remount,rw', slot]);
});
