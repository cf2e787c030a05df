// The double-buffered slot state: each write lands in the half not in force;
// a damaged newest half is refused, never silently replaced by the older
// one, unless the caller asks for the previous copy; a damaged older half is
// harmless; both bad is a clear error.
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, open, readFile, rename, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { readSlotState, writeSlotState, type SlotState } from '../../lib/volume/slot/slot-state.js';
import { rejection } from '../fixtures/helpers.js';

const HALF = 64 * 1024;
const root = await mkdtemp(join(tmpdir(), 'fscrypt-local-state-'));
t.teardown(() => rm(root, { recursive: true, force: true }));
await mkdir(join(root, '.fscrypt-local'));
const file = join(root, '.fscrypt-local', 'slot.state');

const state = (nextGeneration: number): SlotState => ({ version: 1, protector: '0123456789abcdef', nextGeneration, volume: null });

async function flipByte(offset: number): Promise<void> {
  const handle = await open(file, 'r+');
  try {
    const byte = Buffer.alloc(1);
    await handle.read(byte, 0, 1, offset);
    byte[0]! ^= 0xff;
    await handle.write(byte, 0, 1, offset);
  } finally {
    await handle.close();
  }
}

t.test('writes alternate halves; the newest intact one is in force', async (t) => {
  await writeSlotState(root, state(1));
  t.equal((await readFile(file)).length, 2 * HALF, 'both halves are allocated up front');
  t.same(await readSlotState(root), state(1));
  await writeSlotState(root, state(2)); // second half
  await writeSlotState(root, state(3)); // first half again
  t.same(await readSlotState(root), state(3));
  t.equal((await readFile(file)).length, 2 * HALF, 'the file never grows');
});

t.test('a state larger than a page round-trips', async (t) => {
  const big: SlotState = {
    ...state(5),
    volume: {
      generation: 4,
      name: 'vol-4',
      identifier: 'ab'.repeat(16),
      phase: 'ready',
      targets: Array.from({ length: 100 }, (_, i) => ({ path: `/var/lib/kubelet/pods/${'p'.repeat(36)}-${i}/volumes/mount`, readonly: i % 2 === 0 })),
      adminUnlocked: false,
      createdAt: new Date(0).toISOString(),
    },
  };
  t.ok(JSON.stringify(big).length > 4096, 'more than one page');
  await writeSlotState(root, big);
  t.same(await readSlotState(root), big);
  await writeSlotState(root, state(6));
  t.same(await readSlotState(root), state(6), 'a smaller state after a larger one');
  await writeSlotState(root, state(7));
  t.same(await readSlotState(root), state(7));
});

t.test('a damaged newest half is reported, and used only on request; a damaged older half is harmless', async (t) => {
  await writeSlotState(root, state(10));
  await writeSlotState(root, state(11));
  const newest = (await readFile(file)).subarray(0, HALF).includes('"nextGeneration":11') ? 0 : HALF;
  await flipByte(newest + 60); // inside the newest half's JSON: its checksum no longer matches
  t.match(await rejection(readSlotState(root)), { code: 'ERR_BAD_METADATA', message: /newest copy .* is damaged.*nothing was changed.*--use-previous-state/ });
  t.same(await readSlotState(root, { usePreviousState: true }), state(10), 'the intact older half, when asked for');
  await flipByte(newest + 8); // the damaged half's sequence too: unknown, so maybe newer
  t.match(await rejection(readSlotState(root)), { code: 'ERR_BAD_METADATA', message: /newest copy/ });
  await flipByte(newest + 8);
  await flipByte(newest); // the magic: not even a sequence to compare
  t.match(await rejection(readSlotState(root)), { code: 'ERR_BAD_METADATA', message: /newest copy/ });
  await flipByte(newest);
  await writeSlotState(root, state(12)); // goes to the half not in force: the damaged one
  t.same(await readSlotState(root), state(12));
  t.ok((await readFile(file)).subarray(newest, newest + HALF).includes('"nextGeneration":12'), 'written over the damaged half');
  await flipByte((newest === 0 ? HALF : 0) + 60); // now the older half (nextGeneration 10) is the damaged one
  t.same(await readSlotState(root), state(12), 'a damaged older half does not matter');
});

t.test('with both halves damaged the error names the file and what to do', async (t) => {
  await flipByte(30);
  await flipByte(HALF + 30);
  t.match(await rejection(readSlotState(root)), { code: 'ERR_BAD_METADATA', message: /slot\.state is corrupt: neither of its two copies is intact.*init-slot/ });
});

t.test('a symlink or a FIFO in place of the state file is refused, never followed or waited on', async (t) => {
  const elsewhere = join(root, 'elsewhere');
  await writeSlotState(root, state(20));
  await rename(file, elsewhere);
  await symlink(elsewhere, file);
  t.match(await rejection(readSlotState(root)), { code: 'ERR_BAD_METADATA', message: /slot\.state is corrupt: it is a symbolic link/ });
  t.match(await rejection(writeSlotState(root, state(21))), { code: 'ERR_BAD_METADATA' });
  t.ok((await readFile(elsewhere)).includes('"nextGeneration":20'), 'the file behind the link was not written');
  await rm(file);
  execFileSync('mkfifo', [file]);
  t.match(await rejection(readSlotState(root)), { code: 'ERR_BAD_METADATA', message: /it is not a regular file/ });
  t.match(await rejection(writeSlotState(root, state(22))), { code: 'ERR_BAD_METADATA', message: /it is not a regular file/ });
  await rm(file);
  await rename(elsewhere, file);
  t.same(await readSlotState(root), state(20));
});

t.test('a state too large for a half is refused before anything is written', async (t) => {
  const huge: SlotState = {
    ...state(1),
    volume: {
      generation: 0,
      name: 'vol-0',
      identifier: '00'.repeat(16),
      phase: 'ready',
      targets: Array.from({ length: 2000 }, (_, i) => ({ path: `/var/lib/kubelet/pods/${'x'.repeat(40)}-${i}/mount`, readonly: false })),
      adminUnlocked: false,
      createdAt: new Date().toISOString(),
    },
  };
  t.match(await rejection(writeSlotState(root, huge)), { code: 'ERR_INVALID_ARG', message: /more than/ });
});
