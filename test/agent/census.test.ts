// The agent's census (lib/agent/census.ts) against the hooks on a real slot:
// a census read never holds a volume open while a hook runs on its slot
// (invariant 2). The soak once saw a lock's REMOVE_KEY meet the census's
// open volume directory and leave the key incompletely removed, for the
// background retrier. Each test holds a census read open through its
// whileHeld seam (an fd on the volume directory, as GET_POLICY holds one)
// for exactly as long as the test decides, so the overlap is forced, not
// hoped for.
import { spawn } from 'node:child_process';
import { constants } from 'node:fs';
import { open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { census } from '../../lib/agent/census.js';
import type { SlotRecord } from '../../lib/agent/slots.js';
import { getKeyStatus } from '../../lib/kernel/index.js';
import { lock, prepare, unlock, type ProgressEvent, type SlotStatus, type StepName } from '../../lib/volume/index.js';
import { isBindOf } from '../../lib/volume/mounts/mounts.js';
import { withSlotLock } from '../../lib/volume/slot/slot-lock.js';
import { rejection } from '../fixtures/helpers.js';
import { freshSlot, podTargets } from '../fixtures/volume-slot.js';

const newTarget = podTargets(t);

/** A published volume on a fresh slot, with a file written through its target, and the slot's census record. */
async function publishedSlot(t: Parameters<typeof freshSlot>[0]) {
  const slot = await freshSlot(t);
  const volume = await prepare(slot.slot, slot.protector);
  const target = await newTarget();
  await unlock(volume, slot.protector, { path: target });
  await writeFile(join(target, 'data'), 'tenant data');
  const record: SlotRecord = {
    key: 'fast/ssd0',
    className: 'fast',
    name: 'ssd0',
    root: slot.slot,
    class: {
      className: 'fast',
      hostDir: slot.slot,
      mountDir: slot.slot,
      namePatterns: ['*'],
      accessMode: 'ReadWriteOnce',
      selector: [],
      fscrypt: { keySource: slot.source, keySourceText: `file:${slot.kek}` },
    },
    condition: 'ready',
    reconciled: true,
  };
  return { ...slot, volume, target, record };
}

/** A gate the test opens: `wait` resolves once `open` was called. */
function gate(): { wait: Promise<void>; open(): void } {
  let open!: () => void;
  const wait = new Promise<void>((resolve) => (open = resolve));
  return { wait, open };
}

/** A census whose read of the slot holds the volume directory open until `release` opens. */
function heldCensus(records: SlotRecord[], release: Promise<void>, order: string[]) {
  const holding = gate();
  const counted = census(records, {
    async whileHeld(status: SlotStatus) {
      const fd = await open(status.volume!.path, constants.O_RDONLY | constants.O_DIRECTORY);
      holding.open();
      await release;
      await fd.close();
      order.push('census read closed');
    },
  });
  return { holding: holding.wait, counted };
}

t.test('a last unpublish during a census read waits for it, and its first key removal takes the key out', async (t) => {
  const s = await publishedSlot(t);
  const order: string[] = [];
  const release = gate();
  const read = heldCensus([s.record], release.wait, order);
  await read.holding;

  const events: ProgressEvent[] = [];
  const locked = lock(s.volume, s.target, {
    // No background retrier could finish this one: a single removal attempt, as the soak's failure needed one.
    busyTimeoutMs: 0,
    onProgress(event) {
      events.push(event);
      // The lock is queued behind the read (or, were the read not holding the slot, met it): the read ends now.
      if (event.kind === 'note' || event.kind === 'busy') release.open();
    },
    onStep: (step: StepName) => void order.push(step),
  });
  const result = await locked.catch((error: unknown) => error);
  t.same(result, { locked: true, targets: [] }, 'the lock succeeds');
  t.equal((await getKeyStatus(s.slot, s.volume.identifier)).status, 'absent', 'the key is absent from the kernel as soon as the lock returns');
  t.same(
    events.filter((e) => e.kind === 'busy'),
    [],
    'no removal found files busy: the census fd was closed before REMOVE_KEY',
  );
  t.match(
    events.find((e) => e.kind === 'note'),
    { hook: 'lock', message: new RegExp(`waiting for slot ${s.slot}: an earlier call of this process holds it`) },
    'the lock said it waited for the slot',
  );
  t.same(order, ['census read closed', 'lock:unmounted', 'lock:key-removed', 'lock:recorded'], 'the read ended before the lock began');
  const counts = await read.counted;
  t.same(counts, { states: { published: 1, locked: 0, busy: 0, refused: 0, gone: 0, pending: 0 }, orphanKeys: 0, problems: 0 }, 'the census counted what it read: published');
});

t.test('a census skips a slot a hook holds: counted busy, not a problem, nothing opened in it', async (t) => {
  const s = await publishedSlot(t);
  const hook = gate();
  const holding = gate();
  const held = withSlotLock(s.slot, async () => {
    holding.open();
    await hook.wait;
  });
  await holding.wait;
  let reads = 0;
  const counts = await census([s.record], { whileHeld: () => void reads++ });
  t.same(counts, { states: { published: 0, locked: 0, busy: 1, refused: 0, gone: 0, pending: 0 }, orphanKeys: 0, problems: 0 }, 'busy, and neither a problem nor an orphan key');
  t.equal(reads, 0, 'the slot was not read');
  hook.open();
  await held;

  // A hook of another process (an admin's command) holds the slot through the file lock.
  const child = spawn(process.execPath, [...process.execArgv, new URL('../fixtures/children/slot-lock-child.ts', import.meta.url).pathname, s.slot], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  t.teardown(() => void child.kill('SIGKILL'));
  await new Promise((resolve) => child.stdout.once('data', resolve));
  t.match(await census([s.record], { whileHeld: () => void reads++ }), { states: { busy: 1 }, problems: 0 }, 'busy while another process holds the slot');
  t.equal(reads, 0, 'the slot was not read');
  child.kill('SIGKILL');
  await exited;

  t.match(await census([s.record], { whileHeld: () => void reads++ }), { states: { published: 1, busy: 0 }, orphanKeys: 0 }, 'read once the slot is free');
  t.equal(reads, 1);
  t.same(await withSlotLock(s.slot, async () => 'free', { timeoutMs: 5_000 }), 'free', 'a census leaves the slot free');
});

t.test('a hook behind a census read that never ends (a hung disk) gives up at its lock timeout, having changed nothing', async (t) => {
  const s = await publishedSlot(t);
  const order: string[] = [];
  const release = gate();
  const read = heldCensus([s.record], release.wait, order);
  await read.holding;

  const error = await rejection(lock(s.volume, s.target, { lockTimeoutMs: 300 }));
  t.match(error, { code: 'ERR_SLOT_LOCKED' }, 'the lock gives up waiting for the slot');
  t.ok(await isBindOf(s.target, s.volume.path), 'the target is still published');
  t.equal((await getKeyStatus(s.slot, s.volume.identifier)).status, 'present', 'and its key still in the kernel, as it must be while published');

  release.open();
  t.match(await read.counted, { states: { published: 1 } });
  t.same(await lock(s.volume, s.target), { locked: true, targets: [] }, 'the retried lock succeeds');
  t.equal((await getKeyStatus(s.slot, s.volume.identifier)).status, 'absent', 'and takes the key out');
});
