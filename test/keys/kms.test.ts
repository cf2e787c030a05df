// The kms key source against fake KMS v2 plugins over real unix sockets: the
// record kept beside .fscrypt, the checks on the plugin (health, version,
// key_id consistency, deadlines), refusals as wrong keys, and a plugin-side
// KEK rotation followed by our rotate().
import { mkdir, readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { keyIdentifier } from '../../lib/kernel/index.js';
import { newPolicyKey, parseKeySource, SlotKeys, slotLayout, type KeySourceSpec } from '../../lib/keys/index.js';
import { decodeKmsProtector } from '../../lib/keys/metadata-format.js';
import { keyDescriptor } from '../../lib/keys/wrap.js';
import { rejection } from '../fixtures/helpers.js';
import { kekFile, secretsDir, snapshotTree } from '../fixtures/keys-helpers.js';
import { startFakeKms } from '../fixtures/kms-plugin.js';
import { tmpfs } from '../fixtures/system/scratch-fs.js';

const fs = tmpfs(t);
let slotCount = 0;
async function newSlot(): Promise<{ root: string; slot: SlotKeys }> {
  const root = join(fs.mountpoint, `slot-${++slotCount}`);
  await mkdir(root);
  return { root, slot: new SlotKeys(root) };
}

t.test('a KMS protector: P wrapped by the plugin, stored beside .fscrypt, never inside it', async (t) => {
  const kms = await startFakeKms(t);
  const { root, slot } = await newSlot();
  const spec = parseKeySource(`kms:unix://${kms.socket}`);
  const info = await slot.createProtector(spec, { name: 'kms' });
  t.same(info, { descriptor: info.descriptor, source: 'kms', name: 'kms', kmsKeyId: 'kms-test' });
  t.equal(kms.plaintexts.length, 1);
  t.equal(kms.plaintexts[0]!.length, 32, 'the plugin was asked to encrypt a 32-byte key');
  t.equal(keyDescriptor(kms.plaintexts[0]!), info.descriptor, 'and it was the protector key');
  t.ok(kms.calls.status >= 1, 'Status was checked before Encrypt');

  const layout = slotLayout(root);
  const file = join(layout.kmsProtectorsDir, info.descriptor);
  t.equal((await stat(file)).mode & 0o7777, 0o600);
  t.equal((await stat(layout.keysDir)).mode & 0o7777, 0o700);
  const record = decodeKmsProtector(await readFile(file));
  t.match(record, { descriptor: info.descriptor, name: 'kms', keyId: 'kms-test' });
  t.same([...record.annotations.keys()], ['version.encryption.remote.io']);
  await t.rejects(readdir(layout.protectorsDir), { code: 'ENOENT' }, 'nothing under .fscrypt/protectors');

  const open = await slot.openProtector(spec);
  t.equal(kms.calls.decrypt, 1);
  const keys = [newPolicyKey(), newPolicyKey()];
  for (const key of keys) await open.addPolicy(key);
  for (const key of keys) t.ok((await open.unwrapPolicyKey(keyIdentifier(key))).equals(key));
  t.equal(kms.calls.decrypt, 1, 'one Decrypt per open, none per volume');
  t.same(await slot.listProtectors(), [info]);
  t.same((await slot.listPolicies()).map((p) => p.protectors), [[info.descriptor], [info.descriptor]]);
  open.close();
});

t.test('a policy can be protected by a KMS protector and a break-glass file protector', async (t) => {
  const kms = await startFakeKms(t);
  const { slot } = await newSlot();
  const dir = await secretsDir(t);
  const { spec: file } = await kekFile(dir);
  const k = await slot.createAndOpenProtector({ kind: 'kms', socket: kms.socket }, { name: 'kms' });
  const f = await slot.createAndOpenProtector(file, { name: 'break-glass' });
  const key = newPolicyKey();
  await k.addPolicy(key);
  const policy = await f.addPolicy(key);
  t.same(policy.protectors, [k.descriptor, f.descriptor]);
  t.same((await slot.listProtectors()).map((p) => p.source).sort(), ['kms', 'raw_key']);
  // Each source finds its own protector without a descriptor.
  const viaFile = await slot.openProtector(file);
  t.ok((await viaFile.unwrapPolicyKey(policy.identifier)).equals(key));
  // A descriptor of the other kind is refused clearly.
  t.match(await rejection(slot.openProtector({ kind: 'kms', socket: kms.socket }, f.descriptor)), { code: 'ERR_WRONG_KEY', message: /raw_key protector.*'file:' key source/ });
  for (const o of [k, f, viaFile]) o.close();
});

t.test('an unhealthy, wrong-version or inconsistent plugin is ERR_KEY_SOURCE, and nothing is written', async (t) => {
  const cases: [string, Parameters<typeof startFakeKms>[1], RegExp][] = [
    ['unhealthy', { healthz: 'err: HSM unreachable' }, /is unhealthy: healthz is "err: HSM unreachable"/],
    ['v1 plugin', { version: 'v1beta1' }, /unsupported API version: "v1beta1"/],
    ['Encrypt key_id differs from Status', { encryptKeyId: 'other-key' }, /Encrypt returned key_id "other-key" but Status reports "kms-test"/],
  ];
  for (const [what, options, message] of cases) {
    const kms = await startFakeKms(t, options);
    const { root, slot } = await newSlot();
    const before = await snapshotTree(root);
    const error = await rejection(slot.createProtector({ kind: 'kms', socket: kms.socket }, { name: 'x' }));
    t.match(error, { code: 'ERR_KEY_SOURCE', message }, what);
    t.ok(error.message.includes(kms.socket), 'names the socket');
    t.same(await snapshotTree(root), before, `${what}: nothing written`);
  }
  const beta = await startFakeKms(t, { version: 'v2beta1' });
  const { slot } = await newSlot();
  t.match(await slot.createProtector({ kind: 'kms', socket: beta.socket }, { name: 'beta' }), { source: 'kms' }, 'v2beta1 (AWS, Azure, GCP plugins) is accepted');
});

t.test('an unhealthy plugin cannot open a protector either; a healthy one again can', async (t) => {
  const good = await startFakeKms(t);
  const { root, slot } = await newSlot();
  const spec: KeySourceSpec = { kind: 'kms', socket: good.socket };
  await slot.createProtector(spec, { name: 'kms' });
  good.options.healthz = 'degraded';
  const before = await snapshotTree(root);
  t.match(await rejection(slot.openProtector(spec)), { code: 'ERR_KEY_SOURCE', message: /unhealthy/ });
  t.same(await snapshotTree(root), before);
  good.options.healthz = 'ok';
  (await slot.openProtector(spec)).close();
});

t.test('deadlines: a plugin that never answers, and a socket that does not exist', async (t) => {
  const hung = await startFakeKms(t, { hang: true });
  const { slot } = await newSlot();
  const error = await rejection(slot.createProtector({ kind: 'kms', socket: hung.socket, timeoutMs: 300 }, { name: 'x' }));
  t.match(error, { code: 'ERR_KEY_SOURCE', message: /failed Status: DEADLINE_EXCEEDED after 300 ms\. Is the plugin running and healthy\?/ });
  const missing = join(fs.mountpoint, 'no-such.sock');
  t.match(await rejection(slot.createProtector({ kind: 'kms', socket: missing, timeoutMs: 300 }, { name: 'x' })), {
    code: 'ERR_KEY_SOURCE',
    message: /DEADLINE_EXCEEDED.*socket does not exist/,
  });
});

t.test('a plugin with another KEK refuses to decrypt: ERR_WRONG_KEY naming slot and protector, nothing modified', async (t) => {
  const mine = await startFakeKms(t);
  const other = await startFakeKms(t); // same key_id name, different key material
  const { root, slot } = await newSlot();
  const info = await slot.createProtector({ kind: 'kms', socket: mine.socket }, { name: 'kms' });
  const before = await snapshotTree(root);
  const error = await rejection(slot.openProtector({ kind: 'kms', socket: other.socket }));
  t.match(error, { code: 'ERR_WRONG_KEY', message: /refused to decrypt it/ });
  t.ok(error.message.includes(root) && error.message.includes(info.descriptor));
  t.same(await snapshotTree(root), before);

  // A plugin that "decrypts" anything to 32 random bytes does not fool the descriptor check.
  const liar = await startFakeKms(t, { decryptGarbage: 32 });
  const { slot: slot2 } = await newSlot();
  await slot2.createProtector({ kind: 'kms', socket: liar.socket }, { name: 'kms' });
  t.match(await rejection(slot2.openProtector({ kind: 'kms', socket: liar.socket })), { code: 'ERR_WRONG_KEY', message: /decrypted to a different key/ });
  liar.options.decryptGarbage = 16;
  t.match(await rejection(slot2.openProtector({ kind: 'kms', socket: liar.socket })), { code: 'ERR_KEY_SOURCE', message: /to 16 bytes, not 32/ });
});

t.test('after the plugin rotates its KEK, old records still open; rotate() rewraps under the new key_id', async (t) => {
  const kms = await startFakeKms(t);
  const { root, slot } = await newSlot();
  const spec: KeySourceSpec = { kind: 'kms', socket: kms.socket };
  const open = await slot.createAndOpenProtector(spec, { name: 'kms' });
  const key = newPolicyKey();
  const { identifier } = await open.addPolicy(key);
  open.close();
  kms.rotateKek('kms-test-2');
  const reopened = await slot.openProtector(spec);
  t.ok((await reopened.unwrapPolicyKey(identifier)).equals(key));
  reopened.close();
  t.equal((await slot.listProtectors())[0]!.kmsKeyId, 'kms-test', 'still wrapped under the old KEK');
  const rotated = await slot.rotate(spec, spec);
  t.same(rotated, { descriptor: open.descriptor, source: 'kms', name: 'kms', kmsKeyId: 'kms-test-2' });
  t.same(await slot.listProtectors(), [rotated]);
  const after = await slot.openProtector(spec);
  t.ok((await after.unwrapPolicyKey(identifier)).equals(key), 'the policy file was not touched and still opens');
  after.close();
  const layout = slotLayout(root);
  t.same(await readdir(layout.eraseDir), []);
  t.same(await readdir(layout.tmpDir), []);
});
