// Creating a protector, killed after each of its steps (issue 7 #13: a kill
// about 0.2 s into init-slot left P wrapped under the KEK in keys/tmp, and
// no later command removed it). A child runs initSlot and SIGKILLs itself
// right after the step; then the next initSlot must succeed and leave
// nothing wrapped behind but the slot's one protector: keys/tmp and
// keys/erase empty, no other protector, and on the ext4 image no trace of
// what the dead child had staged.
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { newPolicyKey, SlotKeys, slotLayout, type KeySourceSpec } from '../../lib/keys/index.js';
import { decodeKmsProtector, decodeProtectorData } from '../../lib/keys/metadata-format.js';
import type { CreationStep } from '../../lib/keys/slot-keys.js';
import { mountedDir } from '../fixtures/volume-slot.js';
import { initSlot } from '../../lib/volume/index.js';
import { buildJs } from '../fixtures/system/js-build.js';
import { kekFile, runTsChild, secretsDir } from '../fixtures/keys-helpers.js';
import { startFakeKms, type FakeKms } from '../fixtures/kms-plugin.js';
import { ext4, syncFs } from '../fixtures/system/scratch-fs.js';

const fs = ext4(t);
let CHILD = '';
let kms: FakeKms;
let secrets: string;
let slots = 0;

t.before(async () => {
  // Plain JavaScript: the TypeScript loader would cost seconds per crash.
  const js = await buildJs(t, ['lib', 'test/fixtures/children/keys-create-child.ts']);
  CHILD = join(js, 'test/fixtures/children/keys-create-child.js');
  kms = await startFakeKms(t);
  secrets = await secretsDir(t);
});

const STEPS: CreationStep[] = ['sealed', 'dirs-made', 'staged', 'committed'];

const SOURCES: { name: string; make: () => Promise<KeySourceSpec> }[] = [
  { name: 'file', make: async () => (await kekFile(secrets, `kek-${++slots}`)).spec },
  { name: 'kms', make: async () => ({ kind: 'kms', socket: kms.socket }) },
];

/** The wrapped protector key in a record's bytes (what must not survive). */
function wrappedIn(bytes: Buffer, storage: 'fscrypt' | 'kms'): Buffer {
  return Buffer.from(storage === 'kms' ? decodeKmsProtector(bytes).ciphertext : decodeProtectorData(bytes).wrappedKey.encryptedKey);
}

async function protectorNames(root: string): Promise<string[]> {
  const layout = slotLayout(root);
  const names = async (dir: string) => (await readdir(dir).catch(() => [])).sort();
  return [...(await names(layout.protectorsDir)), ...(await names(layout.kmsProtectorsDir))];
}

for (const source of SOURCES) {
  t.test(`${source.name}: init-slot killed after each step of creating the protector, then run again`, async (t) => {
    const storage = source.name === 'kms' ? 'kms' : 'fscrypt';
    for (const step of STEPS) {
      await t.test(`killed after ${step}`, async (t) => {
        const spec = await source.make();
        const root = mountedDir(t, join(fs.mountpoint, `slot-${++slots}`));
        const layout = slotLayout(root);
        const child = await runTsChild(CHILD, [JSON.stringify({ root, source: spec, crashAfter: step })]);
        t.equal(child.signal, 'SIGKILL', child.stderr);
        t.equal(child.stdout.trim().split('\n').pop(), step);

        // What the dead child left: its staged record (after 'staged'), or its committed one.
        const staged = await readdir(layout.tmpDir).catch(() => []);
        t.equal(staged.length, step === 'staged' ? 1 : 0, `temp files after ${step}`);
        const orphans = await Promise.all(staged.map(async (name) => wrappedIn(await readFile(join(layout.tmpDir, name)), storage)));
        const committed = await protectorNames(root);
        t.equal(committed.length, step === 'committed' ? 1 : 0, `records after ${step}`);

        const info = await initSlot(root, spec);
        t.equal(info.created, true);
        if (step === 'committed') t.equal(info.protector, committed[0], 'the committed protector is adopted');
        t.same(await protectorNames(root), [info.protector], 'one protector: the one the slot state names');
        t.same(await readdir(layout.tmpDir), [], 'nothing left in keys/tmp');
        t.same(await readdir(layout.eraseDir), [], 'nothing left in keys/erase');
        syncFs(root);
        const image = await readFile(fs.image!);
        for (const wrapped of orphans) t.notOk(image.includes(wrapped), 'the orphan\'s wrapped key is gone from the disk image');
        // And the slot works.
        const open = await new SlotKeys(root).openProtector(spec, info.protector);
        const key = newPolicyKey();
        const { identifier } = await open.addPolicy(key);
        t.ok((await open.unwrapPolicyKey(identifier)).equals(key));
        open.close();
      });
    }
  });
}

t.test('an orphan is swept only when no protector has its descriptor; sweepLeftovers() clears the rest', async (t) => {
  const root = mountedDir(t, join(fs.mountpoint, `slot-${++slots}`));
  const layout = slotLayout(root);
  const spec = (await kekFile(secrets, 'sweep')).spec;
  const slot = new SlotKeys(root);
  const open = await slot.createAndOpenProtector(spec, { name: 'p' });
  const { identifier } = await open.addPolicy(newPolicyKey());
  open.close();
  // An interrupted rotation's staged record (its protector exists), an
  // interrupted policy rewrite's old version, a crashed write of a policy
  // and an orphan of a creation.
  const record = await readFile(join(layout.protectorsDir, open.descriptor));
  const policy = await readFile(join(layout.policiesDir, identifier));
  const rotationTemp = `protector.${open.descriptor}.00aa00aa00aa.tmp`;
  const orphanTemp = 'protector.0123456789abcdef.11bb11bb11bb.tmp';
  await writeFile(join(layout.tmpDir, rotationTemp), record, { mode: 0o600 });
  await writeFile(join(layout.tmpDir, orphanTemp), record, { mode: 0o600 });
  await writeFile(join(layout.tmpDir, `policy.${identifier}.22cc22cc22cc.tmp`), policy, { mode: 0o600 });
  await writeFile(join(layout.eraseDir, `policy.${identifier}.33dd33dd33dd`), policy, { mode: 0o600 });

  await slot.createProtector((await kekFile(secrets, 'second')).spec, { name: 'second' });
  t.same((await readdir(layout.tmpDir)).sort(), [`policy.${identifier}.22cc22cc22cc.tmp`, rotationTemp].sort(), 'creating a protector erased only the orphan');

  t.equal(await slot.sweepLeftovers(), 3);
  t.same(await readdir(layout.tmpDir), []);
  t.same(await readdir(layout.eraseDir), []);
  t.equal(await slot.sweepLeftovers(), 0, 'idempotent');
  const again = await slot.openProtector(spec, open.descriptor);
  t.ok(await again.unwrapPolicyKey(identifier), 'live files untouched');
  again.close();
});
