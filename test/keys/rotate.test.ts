// Rotation of a slot's key source, crashed after each of its steps: a child
// process runs rotate() and SIGKILLs itself right after the step (no finally
// block runs, as in a real crash). Then the slot must open with the old or
// the new source (exactly the one the step implies), every policy key must
// still unwrap, and a later rotate() with the same arguments must finish the
// job: new source only, old one refused, no leftovers, policy files untouched.
import { mkdir, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t, { type Test } from 'tap';
import { isFscryptError, keyIdentifier } from '../../lib/kernel/index.js';
import { newPolicyKey, SlotKeys, slotLayout, type KeySourceSpec, type RotationStep } from '../../lib/keys/index.js';
import { rejection } from '../fixtures/helpers.js';
import { buildJs } from '../fixtures/system/js-build.js';
import { kekFile, passphraseFile, runTsChild, secretsDir, snapshotTree } from '../fixtures/keys-helpers.js';
import { startFakeKms, type FakeKms } from '../fixtures/kms-plugin.js';
import { decodeProtectorData } from '../../lib/keys/metadata-format.js';
import { ext4, syncFs, tmpfs } from '../fixtures/system/scratch-fs.js';

// The child runs as plain JavaScript transpiled from the sources: the
// TypeScript loader would cost seconds per crash.
let CHILD = fileURLToPath(new URL('../fixtures/children/keys-rotate-child.ts', import.meta.url));
const fs = tmpfs(t);
let kms: FakeKms;
let secrets: string;
let slots = 0;

t.before(async () => {
  const js = await buildJs(t, ['lib', 'test/fixtures/children/keys-rotate-child.ts']);
  CHILD = join(js, 'test/fixtures/children/keys-rotate-child.js');
  kms = await startFakeKms(t);
  secrets = await secretsDir(t);
});

type Scenario = { name: string; old: () => Promise<KeySourceSpec>; new: () => Promise<KeySourceSpec>; sameStorage: boolean };

const SCENARIOS: Scenario[] = [
  { name: 'file -> file', old: async () => (await kekFile(secrets, `k${++slots}`)).spec, new: async () => (await kekFile(secrets, `k${++slots}`)).spec, sameStorage: true },
  { name: 'file -> passphrase', old: async () => (await kekFile(secrets, `k${++slots}`)).spec, new: () => passphraseFile(secrets, `pw ${++slots}`, `p${slots}`), sameStorage: true },
  { name: 'file -> kms', old: async () => (await kekFile(secrets, `k${++slots}`)).spec, new: async () => ({ kind: 'kms', socket: kms.socket }), sameStorage: false },
  { name: 'kms -> passphrase', old: async () => ({ kind: 'kms', socket: kms.socket }), new: () => passphraseFile(secrets, `pw ${++slots}`, `p${slots}`), sameStorage: false },
];

const SAME_STORAGE_STEPS: RotationStep[] = ['opened', 'sealed', 'staged', 'old-linked', 'committed', 'erased'];
const OTHER_STORAGE_STEPS: RotationStep[] = ['opened', 'sealed', 'staged', 'committed', 'old-retired', 'erased'];

/** Which sources must open the slot after a crash right after `step`. */
function expectedOpeners(steps: RotationStep[], step: RotationStep, sameStorage: boolean): { old: boolean; new: boolean } {
  const committed = steps.indexOf(step) >= steps.indexOf('committed');
  if (sameStorage) return { old: !committed, new: committed };
  return { old: steps.indexOf(step) < steps.indexOf('old-retired'), new: committed };
}

async function opens(slot: SlotKeys, source: KeySourceSpec, keys: Buffer[]): Promise<boolean> {
  try {
    const open = await slot.openProtector(source);
    try {
      for (const key of keys) {
        if (!(await open.unwrapPolicyKey(keyIdentifier(key))).equals(key)) throw new Error('unwrapped a different key');
      }
    } finally {
      open.close();
    }
    return true;
  } catch (error) {
    if (isFscryptError(error, 'ERR_WRONG_KEY', 'ERR_BAD_METADATA', 'ENOENT')) return false;
    throw error;
  }
}

async function preparedSlot(source: KeySourceSpec): Promise<{ root: string; slot: SlotKeys; keys: Buffer[]; descriptor: string }> {
  const root = join(fs.mountpoint, `slot-${++slots}`);
  await mkdir(root);
  const slot = new SlotKeys(root);
  const open = await slot.createAndOpenProtector(source, { name: 'rotating' });
  const keys = [newPolicyKey(), newPolicyKey()];
  for (const key of keys) await open.addPolicy(key);
  open.close();
  return { root, slot, keys, descriptor: open.descriptor };
}

async function assertCompleted(t: Test, root: string, slot: SlotKeys, oldSource: KeySourceSpec, newSource: KeySourceSpec, keys: Buffer[], descriptor: string, policies: Record<string, string>): Promise<void> {
  t.ok(await opens(slot, newSource, keys), 'the new source opens it');
  t.notOk(await opens(slot, oldSource, keys), 'the old source no longer does');
  const protectors = await slot.listProtectors();
  t.same(protectors.map((p) => p.descriptor), [descriptor], 'one protector, same descriptor');
  t.equal(protectors[0]?.source, newSource.kind === 'file' ? 'raw_key' : newSource.kind === 'passphrase' ? 'custom_passphrase' : 'kms');
  const layout = slotLayout(root);
  t.same(await readdir(layout.eraseDir), [], 'nothing left to erase');
  t.same(await readdir(layout.tmpDir), [], 'no temp files left');
  t.same(await snapshotTree(layout.policiesDir), policies, 'policy files untouched');
}

for (const scenario of SCENARIOS) {
  const steps = scenario.sameStorage ? SAME_STORAGE_STEPS : OTHER_STORAGE_STEPS;
  t.test(`${scenario.name}: crash after each step, then finish`, async (t) => {
    for (const step of steps) {
      await t.test(`crash after ${step}`, async (t) => {
        const oldSource = await scenario.old();
        const newSource = await scenario.new();
        const { root, slot, keys, descriptor } = await preparedSlot(oldSource);
        const policies = await snapshotTree(slotLayout(root).policiesDir);
        const child = await runTsChild(CHILD, [JSON.stringify({ root, oldSource, newSource, crashAfter: step })]);
        t.equal(child.signal, 'SIGKILL', `the child died right after ${step}`);
        t.equal(child.stdout.trim().split('\n').pop(), step, child.stderr);

        const expected = expectedOpeners(steps, step, scenario.sameStorage);
        t.same({ old: await opens(slot, oldSource, keys), new: await opens(slot, newSource, keys) }, expected, 'who opens the slot now');
        t.ok(expected.old || expected.new);

        const info = await slot.rotate(oldSource, newSource);
        t.equal(info.descriptor, descriptor);
        await assertCompleted(t, root, slot, oldSource, newSource, keys, descriptor, policies);
        // And once more: already done, still fine.
        t.same(await slot.rotate(oldSource, newSource), info, 'rotate() again is a no-op');
      });
    }
  });
}

t.test('an uninterrupted rotation in a child finishes; the old record is gone from disk', async (t) => {
  const oldSource = (await kekFile(secrets, 'plain-old')).spec;
  const newSource = (await kekFile(secrets, 'plain-new')).spec;
  const { root, slot, keys, descriptor } = await preparedSlot(oldSource);
  const policies = await snapshotTree(slotLayout(root).policiesDir);
  const child = await runTsChild(CHILD, [JSON.stringify({ root, oldSource, newSource, crashAfter: 'never' })]);
  t.equal(child.code, 0, child.stderr);
  t.same(child.stdout.trim().split('\n'), [...SAME_STORAGE_STEPS, 'finished']);
  await assertCompleted(t, root, slot, oldSource, newSource, keys, descriptor, policies);
});

t.test('rotate() with neither source opening the protector changes nothing', async (t) => {
  const right = (await kekFile(secrets, 'right')).spec;
  const { root, slot } = await preparedSlot(right);
  const wrongOld = (await kekFile(secrets, 'wrong-old')).spec;
  const wrongNew = (await kekFile(secrets, 'wrong-new')).spec;
  const before = await snapshotTree(root);
  const error = await rejection(slot.rotate(wrongOld, wrongNew));
  t.match(error, { code: 'ERR_WRONG_KEY', message: /cannot rotate: .*wrong-old.* does not open protector .*wrong-new.* does not open it either.*Nothing was changed/ });
  t.same(await snapshotTree(root), before);
});

t.test('a wrong old source does not pass for a finished rotation of another protector', async (t) => {
  // Two protectors: A (file) and B (passphrase). rotate(wrong file -> B's
  // passphrase) must not report success just because the passphrase opens B.
  const a = (await kekFile(secrets, 'a')).spec;
  const { root, slot } = await preparedSlot(a);
  const b = await passphraseFile(secrets, 'bee', 'b');
  await slot.createProtector(b, { name: 'b' });
  const before = await snapshotTree(root);
  t.match(await rejection(slot.rotate((await kekFile(secrets, 'not-a')).spec, b)), { code: 'ERR_WRONG_KEY', message: /does not open it either/ });
  t.same(await snapshotTree(root), before);
});

t.test('on ext4, rotation overwrites the old wrapped protector key in place: it is gone from the disk image', async (t) => {
  const disk = ext4(t);
  const root = join(disk.mountpoint, 'slot');
  await mkdir(root);
  const slot = new SlotKeys(root);
  const oldSource = (await kekFile(secrets, 'disk-old')).spec;
  const newSource = (await kekFile(secrets, 'disk-new')).spec;
  const { descriptor } = await slot.createProtector(oldSource, { name: 'p' });
  const file = join(slotLayout(root).protectorsDir, descriptor);
  const oldWrapped = Buffer.from(decodeProtectorData(await readFile(file)).wrappedKey.encryptedKey);
  syncFs(root);
  t.ok((await readFile(disk.image!)).includes(oldWrapped), 'before: on disk');
  await slot.rotate(oldSource, newSource);
  syncFs(root);
  const image = await readFile(disk.image!);
  t.notOk(image.includes(oldWrapped), 'after: the old wrapped key is nowhere on the disk');
  t.ok(image.includes(Buffer.from(decodeProtectorData(await readFile(file)).wrappedKey.encryptedKey)), 'the new one is');
});
