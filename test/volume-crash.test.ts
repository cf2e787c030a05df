// Crash safety (DESIGN invariant 6): a process running a lifecycle hook is
// killed with SIGKILL right after each durable step of each hook; reconcile
// then runs, and invariants 1-4 must hold and the slot must still work.
import { spawnSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { defaultPolicy, getKeyStatus, getPolicy, samePolicy } from '../lib/kernel/index.js';
import { parseKeySource, SlotKeys } from '../lib/keys/index.js';
import { initSlot, lock, openSlotProtector, prepare, reconcile, resolveVolume, slotStatus, unlock, defaultTrash } from '../lib/volume/index.js';
import { readSlotState } from '../lib/volume/slot-state.js';
import { buildJs } from './fixtures/js-build.js';
import { ext4, tmpfs } from './fixtures/scratch-fs.js';

// The children run plain-JS transpiles: the TypeScript loader would cost
// seconds per child, and there is one child per step.
const js = await buildJs(t, ['lib', 'test/fixtures/lifecycle-child.ts']);
const CHILD = join(js, 'test/fixtures/lifecycle-child.js');
const STEPS = {
  prepare: ['intent-recorded', 'key-added', 'dir-created', 'policy-set', 'probe-file-checked', 'policy-verified', 'metadata-committed', 'key-removed', 'ready'],
  unlock: ['key-added', 'target-recorded', 'mounted'],
  lock: ['unmounted', 'key-removed'],
  erase: ['intent-recorded', 'key-removed', 'policy-destroyed', 'moved-to-trash', 'done'],
  // recycle runs the erase and prepare steps concurrently between its own two.
  recycle: ['recycle:intent-recorded', 'prepare:policy-set', 'erase:policy-destroyed', 'prepare:metadata-committed', 'recycle:ready'],
} as const;
type Hook = keyof typeof STEPS;

const kubelet = tmpfs(t); // where targets live, as kubelet's pod directories would
const MARKER = 'tenant data that must survive a crash\n';
let cases = 0;

async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
}

/** A fresh slot brought to the state just before `hook` runs. */
async function setUp(t: Test, hook: Hook) {
  const fs = ext4(t);
  const slot = fs.mountpoint;
  const kek = join(slot, '..', 'kek');
  await writeFile(kek, randomFillSync(Buffer.alloc(32)), { mode: 0o600 });
  const keySource = `file:${kek}`;
  await initSlot(slot, parseKeySource(keySource));
  const target = join(kubelet.mountpoint, `pod-${cases++}`);
  const protector = await openSlotProtector(slot, parseKeySource(keySource));
  const seen = new Set<string>();
  try {
    if (hook !== 'prepare') {
      const volume = await prepare(slot, protector);
      seen.add(volume.identifier);
      if (hook === 'lock' || hook === 'erase' || hook === 'recycle') {
        await unlock(volume, protector, { path: target });
        await writeFile(join(target, 'data'), MARKER);
      }
      if (hook === 'erase' || hook === 'recycle') await lock(volume, target);
    }
  } finally {
    protector.close();
  }
  return { slot, keySource, target, seen };
}

async function checkInvariants(t: Test, slot: string, keySource: string, seen: Set<string>, expectData: boolean): Promise<void> {
  const status = await slotStatus(slot);
  const keys = new SlotKeys(slot);
  for (const policy of await keys.listPolicies()) seen.add(policy.identifier);
  if (status.volume) seen.add(status.volume.identifier);

  // Invariant 1: a ready volume's directory has exactly the verified policy.
  t.same(status.strayVolumes, [], 'no half-made generation is left in the slot');
  if (status.volume) {
    t.equal(status.volume.phase, 'ready', 'reconcile leaves no hook half-done');
    const policy = await getPolicy(status.volume.path);
    t.ok(policy && samePolicy(policy, defaultPolicy(status.volume.identifier)), 'the ready volume has its verified policy');
    t.ok(await keys.hasPolicy(status.volume.identifier), 'its wrapped key is committed');
  }
  // Invariant 2: a key is in the kernel only while a target is published.
  const published = status.volume?.targets.filter((x) => x.mounted).length ?? 0;
  for (const identifier of seen) {
    const key = (await getKeyStatus(slot, identifier)).status;
    const allowed = status.volume?.identifier === identifier && published > 0;
    t.equal(key, allowed ? 'present' : 'absent', `key ${identifier.slice(0, 8)} is ${allowed ? 'present (published)' : 'absent'}`);
  }
  // Invariant 3: no wrapped copy of an erased key in any file the agent owns.
  const current = status.volume?.identifier;
  for (const identifier of seen) {
    if (identifier === current) continue;
    t.notOk(await keys.hasPolicy(identifier), `no policy file for retired key ${identifier.slice(0, 8)}`);
  }
  const metadataFiles = [...(await filesUnder(join(slot, '.fscrypt'))), ...(await filesUnder(join(slot, '.fscrypt-local')))];
  t.notOk(metadataFiles.some((f) => f.endsWith('.tmp') || f.includes('.tmp-')), 'no temporary metadata file survives reconcile');

  // Invariant 4 and usability: the slot still works end to end, and a
  // published tenant's data survived.
  const protector = await openSlotProtector(slot, parseKeySource(keySource));
  try {
    const volume = status.volume ? await resolveVolume(slot) : await prepare(slot, protector);
    const target = join(kubelet.mountpoint, `check-${cases++}`);
    await unlock(volume, protector, { path: target });
    if (expectData) t.equal(await readFile(join(target, 'data'), 'utf8'), MARKER, 'tenant data is intact');
    await writeFile(join(target, 'after'), 'usable');
    t.equal(await readFile(join(target, 'after'), 'utf8'), 'usable');
    const locked = await lock(volume, target);
    // Other targets from before the crash may still be published.
    if (locked.targets.length === 0) t.equal(locked.locked, true, 'locks again');
  } finally {
    protector.close();
  }
}

for (const hook of Object.keys(STEPS) as Hook[]) {
  for (const step of STEPS[hook]) {
    t.test(`kill -9 after ${step.includes(':') ? `${hook} at ${step}` : `${hook}:${step}`}, then reconcile`, async (t) => {
      const { slot, keySource, target, seen } = await setUp(t, hook);
      const job = { hook, slot, keySource, crashAt: step.includes(':') ? step : `${hook}:${step}`, ...(hook === 'unlock' || hook === 'lock' ? { target } : {}) };
      const child = spawnSync(process.execPath, [CHILD, JSON.stringify(job)], { encoding: 'utf8', timeout: 120_000 });
      t.equal(child.signal, 'SIGKILL', `the child reached ${job.crashAt} and was killed there${child.stderr ? `: ${child.stderr}` : ''}`);
      // The interrupted generations' keys must be accounted for too.
      const crashed = await readSlotState(slot);
      if (crashed.volume) seen.add(crashed.volume.identifier);
      if (crashed.retiring) seen.add(crashed.retiring.identifier);

      const protector = await openSlotProtector(slot, parseKeySource(keySource));
      try {
        const report = await reconcile(slot, protector);
        t.same(report.warnings, [], 'reconcile has nothing it cannot fix');
        // Reconcile is idempotent: a second run changes nothing.
        t.same((await reconcile(slot, protector)).actions.filter((a) => !a.startsWith('resumed')), [], 'a second reconcile has nothing to do');
      } finally {
        protector.close();
      }
      await defaultTrash().idle();
      // Only the lock case had a tenant write data before the crash.
      await checkInvariants(t, slot, keySource, seen, hook === 'lock');
    });
  }
}
