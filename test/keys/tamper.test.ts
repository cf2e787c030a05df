// Damaged and altered metadata on disk: every case is a clear FscryptError
// naming the file (never a crash, never a silent success), and reading
// modifies nothing.
import { execFileSync } from 'node:child_process';
import { chmod, chown, mkdir, readFile, rename, rm, symlink, truncate, writeFile, copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { keyIdentifier } from '../../lib/kernel/index.js';
import { newPolicyKey, SlotKeys, slotLayout, type KeySourceSpec } from '../../lib/keys/index.js';
import { decodePolicyData, encodePolicyData, encodeProtectorData, decodeProtectorData } from '../../lib/keys/metadata-format.js';
import { wrapKey } from '../../lib/keys/wrap.js';
import { randomKey, rejection } from '../fixtures/helpers.js';
import { kekFile, secretsDir, snapshotTree } from '../fixtures/keys-helpers.js';
import { tmpfs } from '../fixtures/system/scratch-fs.js';

const fs = tmpfs(t);
let n = 0;

interface Fixture {
  root: string;
  slot: SlotKeys;
  spec: KeySourceSpec;
  kek: Buffer;
  descriptor: string;
  identifier: string;
  key: Buffer;
  protectorFile: string;
  policyFile: string;
}

async function fixture(t: { teardown(fn: () => unknown): void }): Promise<Fixture> {
  const root = join(fs.mountpoint, `slot-${++n}`);
  await mkdir(root);
  const dir = await secretsDir(t);
  const { spec, bytes } = await kekFile(dir);
  const slot = new SlotKeys(root);
  const open = await slot.createAndOpenProtector(spec, { name: 'p' });
  const key = newPolicyKey();
  const { identifier } = await open.addPolicy(key);
  open.close();
  const layout = slotLayout(root);
  return { root, slot, spec, kek: bytes, descriptor: open.descriptor, identifier, key, protectorFile: join(layout.protectorsDir, open.descriptor), policyFile: join(layout.policiesDir, identifier) };
}

/** Every read path that touches the protector file must fail the same way; nothing may change. */
async function protectorRefused(t: Test, f: Fixture, code: string, message: RegExp, listed = false): Promise<void> {
  const path = f.protectorFile;
  const before = await snapshotTree(f.root);
  const runs: [string, () => Promise<unknown>][] = [
    ['openProtector', () => f.slot.openProtector(f.spec)],
    ['openProtector(descriptor)', () => f.slot.openProtector(f.spec, f.descriptor)],
    ['rotate', () => f.slot.rotate(f.spec, f.spec)],
  ];
  // Listing only decodes: a damage the decoder sees fails it too; one that
  // only the key can reveal (a changed wrapped key) does not.
  if (listed) t.ok(await f.slot.listProtectors(), 'listProtectors still lists it');
  else runs.push(['listProtectors', () => f.slot.listProtectors()]);
  for (const [what, run] of runs) {
    const error = await rejection(run());
    t.match(error, { name: 'FscryptError', code, message }, what);
    if (code === 'ERR_BAD_METADATA') t.equal(error.path, path, `${what} names the file`);
  }
  t.same(await snapshotTree(f.root), before, 'nothing modified');
}

async function policyRefused(t: Test, f: Fixture, message: RegExp, reads = true): Promise<void> {
  const open = await f.slot.openProtector(f.spec);
  const before = await snapshotTree(f.root);
  const runs: [string, () => Promise<unknown>][] = [['unwrapPolicyKey', () => open.unwrapPolicyKey(f.identifier)]];
  if (reads) runs.push(['readPolicy', () => f.slot.readPolicy(f.identifier)], ['listPolicies', () => f.slot.listPolicies()], ['addPolicy', () => open.addPolicy(f.key)]);
  for (const [what, run] of runs) {
    const error = await rejection(run());
    t.match(error, { name: 'FscryptError', code: 'ERR_BAD_METADATA', path: f.policyFile, message }, what);
  }
  t.same(await snapshotTree(f.root), before, 'nothing modified');
  open.close();
}

t.test('protector file: truncated, emptied, oversized, garbage', async (t) => {
  let f = await fixture(t);
  await truncate(f.protectorFile, 50);
  await protectorRefused(t, f, 'ERR_BAD_METADATA', /is invalid: .*(truncated|not a valid protobuf|premature)/);
  f = await fixture(t);
  await truncate(f.protectorFile, 0);
  await protectorRefused(t, f, 'ERR_BAD_METADATA', /protector_descriptor must be 16/);
  f = await fixture(t);
  await writeFile(f.protectorFile, Buffer.concat([await readFile(f.protectorFile), Buffer.alloc(17 * 1024)]));
  await protectorRefused(t, f, 'ERR_BAD_METADATA', /metadata files are at most 16384/);
  f = await fixture(t);
  await writeFile(f.protectorFile, randomKey(64));
  await protectorRefused(t, f, 'ERR_BAD_METADATA', /is invalid/);
});

t.test('protector file: a changed bit in the wrapped key cannot be told from a wrong key', async (t) => {
  for (const offset of [40, 60, 100]) {
    const f = await fixture(t);
    const bytes = await readFile(f.protectorFile);
    bytes[offset] = bytes[offset]! ^ 0x10;
    await writeFile(f.protectorFile, bytes);
    await protectorRefused(t, f, 'ERR_WRONG_KEY', /does not open protector.*wrong key, or the protector file was altered/, true);
  }
});

t.test('protector file: a validly wrapped key that is not the descriptor\'s key', async (t) => {
  const f = await fixture(t);
  const data = decodeProtectorData(await readFile(f.protectorFile));
  await writeFile(f.protectorFile, encodeProtectorData({ ...data, wrappedKey: wrapKey(f.kek, randomKey(32)) }));
  await protectorRefused(t, f, 'ERR_BAD_METADATA', /the key it wraps does not match its descriptor/, true);
});

t.test('protector file: copied under another descriptor\'s name', async (t) => {
  const f = await fixture(t);
  const other = join(slotLayout(f.root).protectorsDir, '0123456789abcdef');
  await copyFile(f.protectorFile, other);
  const error = await rejection(f.slot.listProtectors());
  t.match(error, { code: 'ERR_BAD_METADATA', path: other, message: new RegExp(`holds protector ${f.descriptor}, not the 0123456789abcdef its name says`) });
  t.match(await rejection(f.slot.openProtector(f.spec, '0123456789abcdef')), { code: 'ERR_BAD_METADATA' });
});

/**
 * An entry that cannot be a file of ours (a symlink, a FIFO, a directory,
 * another owner's file) is skipped by listings (issue 7 #7: in a directory
 * others can write, it must not block the slot), so opening by kind finds no
 * protector and says what it ignored; named by its descriptor it is refused
 * as damaged, without being opened. Nothing changes either way.
 */
async function protectorSkipped(t: Test, f: Fixture, reason: RegExp): Promise<void> {
  const before = await snapshotTree(f.root);
  const warnings: string[] = [];
  const slot = new SlotKeys(f.root, { onWarning: (w) => warnings.push(w.message) });
  t.same(await slot.listProtectors(), [], 'not listed');
  t.match(warnings, [new RegExp(`ignored '${f.protectorFile}': ${reason.source}`)], 'and the warning says why');
  for (const [what, run] of [
    ['openProtector', () => slot.openProtector(f.spec)],
    ['rotate', () => slot.rotate(f.spec, f.spec)],
  ] as const) {
    t.match(await rejection(run()), { code: 'ERR_WRONG_KEY', message: new RegExp(`no raw_key protector .*ignored 1 entry that is not ours, e.g. '${f.protectorFile}': ${reason.source}`) }, what);
  }
  for (const [what, run] of [
    ['openProtector(descriptor)', () => slot.openProtector(f.spec, f.descriptor)],
    ['rotate(descriptor)', () => slot.rotate(f.spec, f.spec, f.descriptor)],
  ] as const) {
    t.match(await rejection(run()), { code: 'ERR_BAD_METADATA', path: f.protectorFile, message: reason }, what);
  }
  t.same(await snapshotTree(f.root), before, 'nothing modified');
}

t.test('protector file: symlink, FIFO, directory and foreign owner are skipped; a loose mode is refused', async (t) => {
  let f = await fixture(t);
  const elsewhere = join(fs.mountpoint, `elsewhere-${n}`);
  await rename(f.protectorFile, elsewhere);
  await symlink(elsewhere, f.protectorFile);
  await protectorSkipped(t, f, /it is a symbolic link/);

  f = await fixture(t);
  await rm(f.protectorFile);
  execFileSync('mkfifo', ['-m', '600', f.protectorFile]);
  await protectorSkipped(t, f, /it is not a regular file/);

  f = await fixture(t);
  await rm(f.protectorFile);
  await mkdir(f.protectorFile);
  await protectorSkipped(t, f, /it is not a regular file/);

  f = await fixture(t);
  await chown(f.protectorFile, 1000, 1000);
  await protectorSkipped(t, f, /it is owned by uid 1000, not root/);

  // Root's own file with a mode others could write through: ours, damaged.
  f = await fixture(t);
  await chmod(f.protectorFile, 0o666);
  await protectorRefused(t, f, 'ERR_BAD_METADATA', /writable by other users \(mode 666\)/);
});

t.test('metadata directories: a symlinked .fscrypt or a world-writable protectors dir is unsafe', async (t) => {
  let f = await fixture(t);
  const layout = slotLayout(f.root);
  const moved = join(fs.mountpoint, `moved-${n}`);
  await rename(layout.fscryptDir, moved);
  await symlink(moved, layout.fscryptDir);
  await protectorRefused(t, f, 'ERR_UNSAFE_PATH', /\.fscrypt'?: it is a symbolic link/);
  t.match(await rejection(f.slot.listPolicies()), { code: 'ERR_UNSAFE_PATH' });
  t.match(await rejection(f.slot.createProtector(f.spec, { name: 'x' })), { code: 'ERR_UNSAFE_PATH' });

  f = await fixture(t);
  await chmod(slotLayout(f.root).protectorsDir, 0o777);
  await protectorRefused(t, f, 'ERR_UNSAFE_PATH', /writable by other users/);
  await chmod(slotLayout(f.root).protectorsDir, 0o1777); // fscrypt --all-users: sticky, accepted
  (await f.slot.openProtector(f.spec)).close();
});

t.test('policy file: a changed wrapped key fails authentication', async (t) => {
  for (const offset of [-1, -40, -70]) {
    const f = await fixture(t);
    const bytes = await readFile(f.policyFile);
    bytes[bytes.length + offset] = bytes[bytes.length + offset]! ^ 0x01;
    await writeFile(f.policyFile, bytes);
    await policyRefused(t, f, /fails authentication/, false);
  }
});

t.test('policy file: another policy\'s wrapped key under this identifier', async (t) => {
  const f = await fixture(t);
  const open = await f.slot.openProtector(f.spec);
  const other = newPolicyKey();
  await open.addPolicy(other);
  open.close();
  const mine = decodePolicyData(await readFile(f.policyFile));
  const theirs = decodePolicyData(await readFile(join(slotLayout(f.root).policiesDir, keyIdentifier(other))));
  await writeFile(f.policyFile, encodePolicyData({ ...mine, wrappedPolicyKeys: theirs.wrappedPolicyKeys }));
  await policyRefused(t, f, /is not the key of policy/, false);
  t.match(await rejection((await f.slot.openProtector(f.spec)).addPolicy(f.key)), { code: 'ERR_BAD_METADATA', message: /does not match the key being added/ });
});

t.test('policy file: truncated, garbage, or naming another identifier', async (t) => {
  let f = await fixture(t);
  await truncate(f.policyFile, 60);
  await policyRefused(t, f, /is invalid/);
  f = await fixture(t);
  await writeFile(f.policyFile, Buffer.from('{"not":"protobuf"}'));
  await policyRefused(t, f, /is invalid/);
  f = await fixture(t);
  const data = decodePolicyData(await readFile(f.policyFile));
  await writeFile(f.policyFile, encodePolicyData({ ...data, keyDescriptor: 'ab'.repeat(16) }));
  await policyRefused(t, f, /holds policy abab.*not the .* its name says/);
});
