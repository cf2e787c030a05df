// status's human form, at the formatter: the blockers of a pending lock one
// per line under their volume, every tenant-chosen name escaped inside its
// own line, as the admin's terminal gets it (through Output, which escapes
// each line once more). The end-to-end case, with a real process holding a
// file, is in test/cli/volume.test.ts.
import t from 'tap';
import { renderStatus } from '../../lib/cli/commands/status.js';
import { Output } from '../../lib/cli/output.js';
import type { Blocker, SlotStatus } from '../../lib/volume/index.js';

function pendingSlot(blockers: Blocker[]): SlotStatus {
  return {
    root: '/mnt/disks/ssd0',
    protector: '0123456789abcdef',
    volume: {
      name: 'vol-2',
      path: '/mnt/disks/ssd0/vol-2',
      generation: 2,
      identifier: '00'.repeat(16),
      phase: 'ready',
      key: 'incompletely-removed',
      adminUnlocked: false,
      claimed: true,
      targets: [{ path: '/var/lib/kubelet/pods/p/volumes/v/mount', readonly: false, mounted: false }],
      pendingLock: { blockers },
    },
    retiring: null,
    trash: [],
    strayVolumes: [],
    metadataProblems: [],
  };
}

/** What the admin's terminal shows: renderStatus through Output's text result. */
function shown(slots: SlotStatus[]): string[] {
  let text = '';
  new Output(false, { write: (chunk: string) => (text += chunk) }).result({ slots, errors: [] }, renderStatus(slots, []));
  return text.split('\n').slice(0, -1);
}

t.test('the blockers of a pending lock are one line each, indented under the volume', async (t) => {
  const lines = shown([
    pendingSlot([
      { kind: 'open-file', pid: 4242, command: 'postgres', path: '/mnt/disks/ssd0/vol-2/base/1' },
      { kind: 'cwd', pid: 4343, command: 'sh', path: '/mnt/disks/ssd0/vol-2' },
    ]),
  ]);
  const header = lines.findIndex((l) => l.endsWith('a lock is waiting for busy files:'));
  t.ok(header >= 0, 'the pending lock is told');
  t.match(lines[header], /^\/mnt\/disks\/ssd0: vol-2's key is still in the kernel \(incompletely-removed\) with no target/);
  t.same(
    lines.slice(header + 1),
    ['    pid 4242 (postgres) has /mnt/disks/ssd0/vol-2/base/1 open', '    pid 4343 (sh) has its working directory at /mnt/disks/ssd0/vol-2'],
    'each blocker on its own line, and nothing after them',
  );
  t.notOk(lines.some((l) => l.includes('\\n')), 'no escaped line break anywhere');
});

t.test('a newline or terminal control in a process name or path stays inside its blocker line', async (t) => {
  const lines = shown([
    pendingSlot([
      { kind: 'open-file', pid: 1, command: 'evil\nroot# rm', path: '/mnt/disks/ssd0/vol-2/a\nforged line' },
      { kind: 'mmap', pid: 2, command: '\u001b[2Jclear', path: '/mnt/disks/ssd0/vol-2/\u202etxt.exe' },
    ]),
  ]);
  const header = lines.findIndex((l) => l.endsWith('a lock is waiting for busy files:'));
  const blockers = lines.slice(header + 1);
  t.equal(blockers.length, 2, 'two blockers, two lines');
  t.ok(
    blockers.every((l) => l.startsWith('    pid ')),
    'every line under the volume is a blocker',
  );
  t.match(blockers[0], /^ {4}pid 1 \(evil\\nroot# rm\) has \/mnt\/disks\/ssd0\/vol-2\/a\\nforged line open$/, 'the newlines show as \\n');
  t.notOk(
    lines.some((l) => /^(root#|forged)/.test(l)),
    'no name starts a line',
  );
  t.notOk(
    lines.some((l) => /[\u0000-\u001f\u007f-\u009f\u202a-\u202e]/.test(l)),
    'no control character reaches the terminal',
  );
});

t.test('past twenty blockers the rest are counted, on a line of their own', async (t) => {
  const many: Blocker[] = Array.from({ length: 23 }, (_, i) => ({ kind: 'open-file', pid: 100 + i, command: 'worker', path: `/mnt/disks/ssd0/vol-2/f${i}` }));
  const lines = shown([pendingSlot(many)]);
  const header = lines.findIndex((l) => l.endsWith('a lock is waiting for busy files:'));
  const blockers = lines.slice(header + 1);
  t.equal(blockers.length, 21);
  t.equal(blockers[19], '    pid 119 (worker) has /mnt/disks/ssd0/vol-2/f19 open');
  t.equal(blockers[20], '    … and 3 more');
});

t.test('a pending lock nobody holds files for says so on its one line', async (t) => {
  const lines = shown([pendingSlot([])]);
  t.ok(
    lines.some((l) => l.endsWith('a lock is waiting for busy files')),
    'no colon, no blocker lines',
  );
  t.notOk(lines.some((l) => l.startsWith('    ')));
});
