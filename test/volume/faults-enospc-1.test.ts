// A full filesystem (ENOSPC) right after each step of a hook, part 1:
// unlock and recycle (test/fixtures/campaign/fs-faults.ts derives the steps and
// says what each point checks). The hook completes or fails with ENOSPC
// saying to free space, leaves no key in the kernel that no target accounts
// for, fails the same way if called again while the slot is still full, and
// once the space is freed the same call converges with DESIGN's invariants
// 1-4 holding.
import t from 'tap';
import { ENOSPC_FAULT, faultMatrixFile } from '../fixtures/campaign/fs-faults.js';

await faultMatrixFile(t, ENOSPC_FAULT, 1, 'npx tap test/volume/faults-enospc-1.test.ts');
