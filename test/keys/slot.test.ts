// SlotKeys with the file key source on a real ext4 filesystem: the hierarchy
// (protector key wraps policy keys), the files and modes it leaves, errors
// for wrong keys with nothing modified, secrets kept out of every output,
// and crypto-erase of a policy down to the disk image.
import { readdir, readFile, stat, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { inspect } from 'node:util';
import t from 'tap';
import { keyIdentifier } from '../../lib/kernel/index.js';
import { newPolicyKey, SlotKeys, slotLayout } from '../../lib/keys/index.js';
import { decodePolicyData, decodeProtectorData } from '../../lib/keys/metadata-format.js';
import { keyDescriptor } from '../../lib/keys/wrap.js';
import { randomKey, rejection } from '../fixtures/helpers.js';
import { assertNoSecrets, kekFile, secretsDir, snapshotTree } from '../fixtures/keys-helpers.js';
import { ext4, syncFs } from '../fixtures/system/scratch-fs.js';

const fs = ext4(t);

const ownBuffer = (b: Buffer): boolean => b.byteOffset === 0 && b.buffer.byteLength === b.length;

t.test('newPolicyKey: 64 random bytes in a buffer of its own (not a slice of the pool)', async (t) => {
  const a = newPolicyKey();
  const b = newPolicyKey();
  t.equal(a.length, 64);
  t.ok(ownBuffer(a), 'own ArrayBuffer');
  t.notOk(a.equals(b));
  t.notOk(a.equals(Buffer.alloc(64)));
});

t.test('create, open, add and unwrap policies: files, modes and identifiers are what fscrypt expects', async (t) => {
  const root = join(fs.mountpoint, 'slot-basic');
  await mkdir(root);
  const dir = await secretsDir(t);
  const { spec } = await kekFile(dir);
  const slot = new SlotKeys(root);
  t.same(await slot.listProtectors(), [], 'a slot without .fscrypt has no protectors');
  t.same(await slot.listPolicies(), []);

  const info = await slot.createProtector(spec, { name: 'break-glass' });
  t.match(info, { source: 'raw_key', name: 'break-glass', descriptor: /^[0-9a-f]{16}$/ });
  const layout = slotLayout(root);
  t.equal((await stat(layout.fscryptDir)).mode & 0o7777, 0o755);
  t.equal((await stat(layout.protectorsDir)).mode & 0o7777, 0o755);
  t.equal((await stat(layout.policiesDir)).mode & 0o7777, 0o755);
  const protectorFile = join(layout.protectorsDir, info.descriptor);
  t.equal((await stat(protectorFile)).mode & 0o7777, 0o600);
  t.same(await readdir(layout.protectorsDir), [info.descriptor], 'no temp file left in .fscrypt');
  t.equal(decodeProtectorData(await readFile(protectorFile)).descriptor, info.descriptor);

  const open = await slot.openProtector(spec);
  t.equal(open.descriptor, info.descriptor);
  t.same(open.info, info);
  const keys = [newPolicyKey(), newPolicyKey(), newPolicyKey()];
  for (const key of keys) {
    const policy = await open.addPolicy(key);
    t.same(policy, {
      identifier: keyIdentifier(key),
      protectors: [info.descriptor],
      options: { padding: 32, contents: 1, filenames: 4, policyVersion: 2 },
    });
    t.equal((await stat(join(layout.policiesDir, policy.identifier))).mode & 0o7777, 0o600);
  }
  t.same((await slot.listPolicies()).map((p) => p.identifier), keys.map((k) => keyIdentifier(k)).sort());
  for (const key of keys) {
    const id = keyIdentifier(key);
    t.ok(await slot.hasPolicy(id));
    t.same((await slot.readPolicy(id.toUpperCase())).identifier, id, 'identifiers are case-insensitive on input');
    const unwrapped = await open.unwrapPolicyKey(id);
    t.ok(unwrapped.equals(key), 'unwraps to the same key');
    t.ok(ownBuffer(unwrapped), 'returned in a buffer of its own');
  }
  t.notOk(await slot.hasPolicy('00'.repeat(16)));
  t.match(await rejection(slot.readPolicy('00'.repeat(16))), { code: 'ENOENT' });
  t.match(await rejection(slot.readPolicy('../../etc/passwd')), { code: 'ERR_INVALID_ARG' });

  // Opening by descriptor gives the same key: unwrap through a second handle.
  const again = await slot.openProtector(spec, info.descriptor);
  t.ok((await again.unwrapPolicyKey(keyIdentifier(keys[0]!))).equals(keys[0]!));
  again.close();

  // addPolicy is idempotent.
  const before = await snapshotTree(layout.fscryptDir);
  t.same((await open.addPolicy(keys[0]!)).protectors, [info.descriptor]);
  t.same(await snapshotTree(layout.fscryptDir), before, 'adding a policy again changes nothing');

  open.close();
  t.match(await rejection(open.unwrapPolicyKey(keyIdentifier(keys[0]!))), { code: 'ERR_CLOSED', message: /closed/ });
  t.match(await rejection(open.addPolicy(newPolicyKey())), { code: 'ERR_CLOSED' });
  t.match(await rejection(slot.openProtector(spec).then((o) => o.addPolicy(randomKey(32)))), { code: 'ERR_INVALID_ARG', message: /64 bytes/ });
});

t.test('a policy can be protected by several protectors; each unwraps the same key', async (t) => {
  const root = join(fs.mountpoint, 'slot-two');
  await mkdir(root);
  const dir = await secretsDir(t);
  const a = await kekFile(dir, 'a');
  const b = await kekFile(dir, 'b');
  const slot = new SlotKeys(root);
  const pa = await slot.createAndOpenProtector(a.spec, { name: 'a' });
  const pb = await slot.createAndOpenProtector(b.spec, { name: 'b' });
  const key = newPolicyKey();
  await pa.addPolicy(key);
  const both = await pb.addPolicy(key);
  t.same(both.protectors, [pa.descriptor, pb.descriptor]);
  t.ok((await pa.unwrapPolicyKey(both.identifier)).equals(key));
  t.ok((await pb.unwrapPolicyKey(both.identifier)).equals(key));
  // Two protectors of one kind: opening needs the descriptor.
  const ambiguous = await rejection(slot.openProtector(a.spec));
  t.match(ambiguous, { code: 'ERR_BAD_METADATA', message: /2 raw_key protectors.*descriptor/ });
  t.ok(String(ambiguous.message).includes(pa.descriptor) && String(ambiguous.message).includes(pb.descriptor));
  // A protector the policy does not list cannot unwrap it.
  const c = await kekFile(dir, 'c');
  const pc = await slot.createAndOpenProtector(c.spec, { name: 'c' });
  t.match(await rejection(pc.unwrapPolicyKey(both.identifier)), { code: 'ERR_WRONG_KEY', message: new RegExp(`not protected by protector ${pc.descriptor}`) });
  for (const p of [pa, pb, pc]) p.close();
});

t.test('a wrong KEK is ERR_WRONG_KEY naming the slot and protector, with nothing modified and no secret in the message', async (t) => {
  const root = join(fs.mountpoint, 'slot-wrong');
  await mkdir(root);
  const dir = await secretsDir(t);
  const right = await kekFile(dir, 'right');
  const wrong = await kekFile(dir, 'wrong');
  const slot = new SlotKeys(root);
  const open = await slot.createAndOpenProtector(right.spec, { name: 'p' });
  const key = newPolicyKey();
  await open.addPolicy(key);
  const before = await snapshotTree(root);
  const attempts = [() => slot.openProtector(wrong.spec), () => slot.openProtector(wrong.spec, open.descriptor), () => slot.rotate(wrong.spec, wrong.spec)];
  for (const attempt of attempts) {
    const error = await rejection(attempt());
    t.match(error, { name: 'FscryptError', code: 'ERR_WRONG_KEY' });
    t.ok(error.message.includes(root), 'names the slot');
    t.ok(error.message.includes(open.descriptor), 'names the protector');
    t.ok(assertNoSecrets(error.message + inspect(error), [right.bytes, wrong.bytes, key]), 'no key bytes in the error');
  }
  t.same(await snapshotTree(root), before, 'nothing modified');
  open.close();
});

t.test('key-source problems are ERR_KEY_SOURCE; a missing protector kind is ERR_WRONG_KEY', async (t) => {
  const root = join(fs.mountpoint, 'slot-source');
  await mkdir(root);
  const dir = await secretsDir(t);
  const slot = new SlotKeys(root);
  t.match(await rejection(slot.openProtector({ kind: 'file', path: join(dir, 'kek') })), { code: 'ERR_WRONG_KEY', message: /no raw_key protector/ });
  const { spec } = await kekFile(dir);
  await slot.createProtector(spec, { name: 'p' });
  t.match(await rejection(slot.openProtector({ kind: 'file', path: join(dir, 'missing') })), { code: 'ERR_KEY_SOURCE', message: /missing.*ENOENT/ });
  await writeFile(join(dir, 'short'), randomKey(31));
  await writeFile(join(dir, 'long'), randomKey(33));
  await writeFile(join(dir, 'hex'), randomKey(32).toString('hex'));
  for (const name of ['short', 'long', 'hex']) {
    const error = await rejection(slot.openProtector({ kind: 'file', path: join(dir, name) }));
    t.match(error, { code: 'ERR_KEY_SOURCE', message: /exactly 32 raw bytes|at most 32/ }, name);
  }
  t.match(await rejection(slot.openProtector({ kind: 'file', path: dir })), { code: 'ERR_KEY_SOURCE', message: /not a regular file/ });
  t.match(await rejection(slot.openProtector({ kind: 'passphrase', path: join(dir, 'x') })), { code: 'ERR_WRONG_KEY', message: /no custom_passphrase protector/ });
  t.match(await rejection(slot.createProtector(spec, { name: '' })), { code: 'ERR_INVALID_ARG' });
  t.match(await rejection(slot.createProtector(spec, { name: 'a\nb' })), { code: 'ERR_INVALID_ARG' });
  t.match(await rejection(slot.openProtector({ kind: 'nope' } as never)), { code: 'ERR_INVALID_ARG' });
});

t.test('inspect, JSON and errors never show a key', async (t) => {
  const root = join(fs.mountpoint, 'slot-inspect');
  await mkdir(root);
  const dir = await secretsDir(t);
  const { spec, bytes } = await kekFile(dir);
  const slot = new SlotKeys(root);
  const open = await slot.createAndOpenProtector(spec, { name: 'p' });
  const key = newPolicyKey();
  await open.addPolicy(key);
  const shown = [inspect(open, { showHidden: true, depth: 10 }), JSON.stringify(open), inspect(slot, { showHidden: true }), String(open)];
  shown.push(JSON.stringify(await slot.listProtectors()), JSON.stringify(await slot.listPolicies()));
  t.match(shown[0], /OpenProtector \{ descriptor: '[0-9a-f]{16}', source: 'raw_key'/);
  for (const text of shown) t.ok(assertNoSecrets(text, [bytes, key]), text.slice(0, 60));
  open.close();
  t.match(inspect(open), /closed/);
});

t.test('destroyPolicy crypto-erases: the wrapped key is gone from the disk image, and it is idempotent', async (t) => {
  const root = join(fs.mountpoint, 'slot-erase');
  await mkdir(root);
  const dir = await secretsDir(t);
  const { spec } = await kekFile(dir);
  const slot = new SlotKeys(root);
  const open = await slot.createAndOpenProtector(spec, { name: 'p' });
  const keep = newPolicyKey();
  const doomed = newPolicyKey();
  await open.addPolicy(keep);
  const { identifier } = await open.addPolicy(doomed);
  const layout = slotLayout(root);
  const file = join(layout.policiesDir, identifier);
  const wrapped = Buffer.from(decodePolicyData(await readFile(file)).wrappedPolicyKeys[0]!.wrappedKey.encryptedKey);
  syncFs(root);
  const image = fs.image!;
  t.ok((await readFile(image)).includes(wrapped), 'before: the wrapped key is on disk');

  // A crashed earlier write of the same policy left a temp file behind.
  await writeFile(join(layout.tmpDir, `policy.${identifier}.0badc0ffee00.tmp`), await readFile(file), { mode: 0o600 });

  await slot.destroyPolicy(identifier);
  syncFs(root);
  t.notOk(await slot.hasPolicy(identifier));
  t.same(await readdir(layout.eraseDir), [], 'nothing left to erase');
  t.same(await readdir(layout.tmpDir), [], 'the leftover temp copy is erased too');
  t.notOk((await readFile(image)).includes(wrapped), 'after: the wrapped key is nowhere on the disk image');
  t.match(await rejection(open.unwrapPolicyKey(identifier)), { code: 'ENOENT' });
  t.ok((await open.unwrapPolicyKey(keyIdentifier(keep))).equals(keep), 'other policies are untouched');

  await slot.destroyPolicy(identifier); // absent: fine
  await slot.destroyPolicy('ab'.repeat(16));
  t.match(await rejection(slot.destroyPolicy('../x')), { code: 'ERR_INVALID_ARG' });
  open.close();
});

t.test('a policy rewritten to add a second protector leaves no copy of its first version on disk after destroyPolicy', async (t) => {
  const root = join(fs.mountpoint, 'slot-two-protectors');
  await mkdir(root);
  const dir = await secretsDir(t);
  const slot = new SlotKeys(root);
  const first = await slot.createAndOpenProtector((await kekFile(dir, 'a')).spec, { name: 'first' });
  const second = await slot.createAndOpenProtector((await kekFile(dir, 'b')).spec, { name: 'break-glass' });
  const key = newPolicyKey();
  const { identifier } = await first.addPolicy(key);
  const file = join(slotLayout(root).policiesDir, identifier);
  const underFirst = Buffer.from(decodePolicyData(await readFile(file)).wrappedPolicyKeys[0]!.wrappedKey.encryptedKey);
  syncFs(root);
  t.ok((await readFile(fs.image!)).includes(underFirst), 'before: the first version is on disk');

  t.same((await second.addPolicy(key)).protectors.length, 2, 'the file is rewritten with both protectors');
  t.ok((await second.unwrapPolicyKey(identifier)).equals(key));
  await slot.destroyPolicy(identifier);
  syncFs(root);
  t.notOk((await readFile(fs.image!)).includes(underFirst), 'after: not even the replaced first version is on the disk image');
  t.same(await readdir(slotLayout(root).eraseDir), [], 'nothing left to erase');
  first.close();
  second.close();
});

t.test('policies of one slot are destroyed and added concurrently; a sweep erases only its own policy\'s leftovers', async (t) => {
  const root = join(fs.mountpoint, 'slot-concurrent');
  await mkdir(root);
  const dir = await secretsDir(t);
  const slot = new SlotKeys(root);
  const open = await slot.createAndOpenProtector((await kekFile(dir)).spec, { name: 'p' });
  const doomed = await Promise.all([newPolicyKey(), newPolicyKey(), newPolicyKey()].map((key) => open.addPolicy(key)));
  const layout = slotLayout(root);
  // Another policy's leftover in erase/ (its crashed rewrite): a second name
  // for its live file, which only that policy's own sweep may touch.
  const bystander = await open.addPolicy(newPolicyKey());
  const leftover = join(layout.eraseDir, `policy.${bystander.identifier}.0123456789ab`);
  await writeFile(leftover, await readFile(join(layout.policiesDir, bystander.identifier)), { mode: 0o600 });

  const fresh = [newPolicyKey(), newPolicyKey(), newPolicyKey()];
  const added = await Promise.all([...doomed.map((p) => slot.destroyPolicy(p.identifier)), ...fresh.map((key) => open.addPolicy(key))]);
  for (const p of doomed) t.notOk(await slot.hasPolicy(p.identifier), `${p.identifier} destroyed`);
  for (const key of fresh) t.ok((await open.unwrapPolicyKey(keyIdentifier(key))).equals(key), 'a policy added meanwhile unwraps');
  t.equal(added.filter((r) => r !== undefined).length, fresh.length);
  t.same(await readdir(layout.eraseDir), [`policy.${bystander.identifier}.0123456789ab`], 'the other policy\'s leftover is untouched');
  t.same(await readdir(layout.tmpDir), [], 'no temp file left');

  await slot.destroyPolicy(bystander.identifier);
  t.same(await readdir(layout.eraseDir), [], 'its own destroy sweeps it');
  open.close();
});

t.test('a protector key is 32 CSPRNG bytes whose descriptor names the file', async (t) => {
  const root = join(fs.mountpoint, 'slot-descriptor');
  await mkdir(root);
  const dir = await secretsDir(t);
  const { spec, bytes } = await kekFile(dir);
  const slot = new SlotKeys(root);
  const seen = new Set<string>();
  for (let i = 0; i < 5; i++) seen.add((await slot.createProtector(spec, { name: `p${i}` })).descriptor);
  t.equal(seen.size, 5, 'every protector key is new');
  // Unwrap one protector file by hand with the KEK: its key hashes to its name.
  const { unwrapKey } = await import('../../lib/keys/wrap.js');
  for (const d of seen) {
    const data = decodeProtectorData(await readFile(join(slotLayout(root).protectorsDir, d)));
    const p = unwrapKey(bytes, data.wrappedKey)!;
    t.equal(p.length, 32);
    t.equal(keyDescriptor(p), d);
  }
});
