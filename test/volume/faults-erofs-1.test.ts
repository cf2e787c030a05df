// The slot's filesystem turning read-only (EROFS) right after each step of
// a hook, part 1: unlock and recycle. It turns read-only
// the way ext4 does after an I/O error with errors=remount-ro
// (test/fixtures/campaign/fs-faults.ts says why not by `mount -o remount,ro`, and
// what each point checks). The hook completes or fails with EROFS saying to
// check dmesg and fsck, leaves no key in the kernel that no target accounts
// for, and once the filesystem is repaired and mounted again, reconcile and
// the same call converge with DESIGN's invariants 1-4 holding.
//
// Regression: the points of recycle up to erase:key-removed failed before
// lib/volume/hooks/recovery.ts rolled the prepare half back even when the erase
// half could not be finished: the new generation's key stayed in the kernel.
import t from 'tap';
import { EROFS_FAULT, faultMatrixFile } from '../fixtures/campaign/fs-faults.js';

await faultMatrixFile(t, EROFS_FAULT, 1, 'npx tap test/volume/faults-erofs-1.test.ts');
