// KEK and passphrase files as docs/keys.md describes them (issue 7 #10):
// a KEK is 32 raw bytes, never text; a key file that someone else can write
// (another owner, group or world write bits) is refused, since whoever can
// write it chooses the key; one everybody can read works with a warning.
// Every refusal is ERR_KEY_SOURCE with the remedy, changes nothing, and
// never shows the file's bytes.
import { randomFillSync } from 'node:crypto';
import { chmod, chown, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { inspect } from 'node:util';
import t from 'tap';
import { newPolicyKey, SlotKeys, slotLayout, type KeySourceSpec, type KeysWarning } from '../../lib/keys/index.js';
import { decodeProtectorData, encodeProtectorData } from '../../lib/keys/metadata-format.js';
import { unwrapKey, wrapKey } from '../../lib/keys/wrap.js';
import { rejection } from '../fixtures/helpers.js';
import { assertNoSecrets, kekFile, passphraseFile, secretsDir, snapshotTree } from '../fixtures/keys-helpers.js';
import { tmpfs } from '../fixtures/system/scratch-fs.js';

const fs = tmpfs(t);
let n = 0;

async function newSlot(): Promise<{ root: string; slot: SlotKeys; warnings: KeysWarning[] }> {
  const root = join(fs.mountpoint, `slot-${++n}`);
  await mkdir(root);
  const warnings: KeysWarning[] = [];
  return { root, slot: new SlotKeys(root, { onWarning: (w) => warnings.push(w) }), warnings };
}

const REMEDY = 'head -c 32 /dev/urandom > kek; chmod 600 kek';

/** Text a KEK file typically holds by mistake: each exactly 32 bytes. */
function textKeks(): [string, Buffer][] {
  const random = (size: number) => randomFillSync(Buffer.alloc(size));
  return [
    ['hex (openssl rand -hex 16, newline stripped)', Buffer.from(random(16).toString('hex'))],
    ['base64 (openssl rand -base64 24)', Buffer.from(random(24).toString('base64'))],
    ['a password', Buffer.from('correct horse battery staple 123')],
    ['text with tabs and a newline', Buffer.from('\tpassword-ish\ttext-and-more-12\r\n')],
  ];
}

t.test('a KEK of 32 bytes of text is refused for a new protector, and as the target of a rotation', async (t) => {
  const dir = await secretsDir(t);
  const good = await kekFile(dir, 'good');
  for (const [what, bytes] of textKeks()) {
    t.equal(bytes.length, 32, what);
    const { root, slot } = await newSlot();
    const path = join(dir, `text-${n}`);
    await writeFile(path, bytes, { mode: 0o600 });
    const spec: KeySourceSpec = { kind: 'file', path };
    const before = await snapshotTree(root);
    const error = await rejection(slot.createProtector(spec, { name: 'p' }));
    t.match(error, { name: 'FscryptError', code: 'ERR_KEY_SOURCE', path, message: /32 bytes of text.*not 32 random bytes/ }, what);
    t.ok(error.message.includes(REMEDY), 'says how to make a KEK');
    t.ok(assertNoSecrets(`${error.message} ${inspect(error)}`, [bytes, bytes.toString('latin1')]), 'the text is not shown');
    t.same(await snapshotTree(root), before, 'nothing created');

    await slot.createProtector(good.spec, { name: 'good' });
    const during = await snapshotTree(root);
    t.match(await rejection(slot.rotate(good.spec, spec)), { code: 'ERR_KEY_SOURCE', message: /32 bytes of text/ }, 'rotate to it');
    t.same(await snapshotTree(root), during, 'rotation refused before anything changed');
  }
});

t.test('a KEK file of another size says it is text when it is (openssl rand -hex 16 > kek: 33 bytes)', async (t) => {
  const dir = await secretsDir(t);
  const { slot } = await newSlot();
  await slot.createProtector((await kekFile(dir, 'good')).spec, { name: 'good' }); // something to open
  const cases: [string, Buffer, RegExp][] = [
    ['hex with its newline', Buffer.from(`${randomFillSync(Buffer.alloc(16)).toString('hex')}\n`), /holds 33 bytes of text/],
    ['hex of 32 bytes', Buffer.from(randomFillSync(Buffer.alloc(32)).toString('hex')), /holds 64 bytes of text/],
    ['31 raw bytes', randomFillSync(Buffer.alloc(31)), /holds 31 bytes; a KEK/],
    ['33 raw bytes', Buffer.concat([randomFillSync(Buffer.alloc(32)), Buffer.of(0)]), /holds 33 bytes; a KEK/],
    ['an empty file', Buffer.alloc(0), /holds 0 bytes; a KEK/],
    ['a large file', randomFillSync(Buffer.alloc(4096)), /holds 4096 bytes; a KEK/],
  ];
  for (const [what, bytes, message] of cases) {
    const path = join(dir, `k-${++n}`);
    await writeFile(path, bytes, { mode: 0o600 });
    for (const attempt of [() => slot.createProtector({ kind: 'file', path }, { name: 'p' }), () => slot.openProtector({ kind: 'file', path })]) {
      const error = await rejection(attempt());
      t.match(error, { code: 'ERR_KEY_SOURCE', message }, what);
      t.match(error.message, /a KEK is exactly 32 raw bytes, not text/);
      t.ok(error.message.includes(REMEDY), 'with the remedy');
    }
  }
});

t.test('an existing protector made with a text KEK still opens, with a warning that says to rotate', async (t) => {
  const dir = await secretsDir(t);
  const { root, slot, warnings } = await newSlot();
  const first = await kekFile(dir, 'first');
  const open = await slot.createAndOpenProtector(first.spec, { name: 'p' });
  const key = newPolicyKey();
  const { identifier } = await open.addPolicy(key);
  open.close();
  // As an earlier version let it happen: the protector key rewrapped under a text KEK.
  const file = join(slotLayout(root).protectorsDir, open.descriptor);
  const data = decodeProtectorData(await readFile(file));
  const protectorKey = unwrapKey(first.bytes, data.wrappedKey)!;
  const text = Buffer.from(randomFillSync(Buffer.alloc(16)).toString('hex'));
  const textPath = join(dir, 'text');
  await writeFile(textPath, text, { mode: 0o600 });
  await writeFile(file, encodeProtectorData({ ...data, wrappedKey: wrapKey(text, protectorKey) }), { mode: 0o600 });

  const textSpec: KeySourceSpec = { kind: 'file', path: textPath };
  const reopened = await slot.openProtector(textSpec);
  t.ok((await reopened.unwrapPolicyKey(identifier)).equals(key), 'it opens');
  reopened.close();
  t.match(warnings, [{ code: 'FSCRYPT_LOCAL_TEXT_KEK', path: textPath, message: /holds 32 bytes of text.*head -c 32 \/dev\/urandom.*rotate/ }]);
  t.ok(assertNoSecrets(warnings[0]!.message, [text, text.toString('latin1')]));
  const fresh = await kekFile(dir, 'fresh');
  await slot.rotate(textSpec, fresh.spec);
  const rotated = await slot.openProtector(fresh.spec);
  t.ok((await rotated.unwrapPolicyKey(identifier)).equals(key), 'rotated to a proper KEK');
  rotated.close();
});

t.test('a key file another user owns, or that others can write, is refused; one others can read only warns', async (t) => {
  const dir = await secretsDir(t);
  const { root, slot, warnings } = await newSlot();
  const kek = await kekFile(dir, 'kek');
  const pass = await passphraseFile(dir, 'a passphrase of some length');
  const { descriptor } = await slot.createProtector(kek.spec, { name: 'file' });
  await slot.createProtector(pass, { name: 'pass' });
  const before = await snapshotTree(root);

  const refusals: [string, () => Promise<void>, RegExp][] = [
    ['owned by another user', () => chown(kek.spec.path, 65534, 65534), /owned by uid 65534, who can change the key in it. To fix: chown root:root .*; chmod 600/],
    ['group-writable', () => chmod(kek.spec.path, 0o620), /other users can write to it \(mode 0620\).*To fix: chmod 600/],
    ['world-writable', () => chmod(kek.spec.path, 0o606), /other users can write to it \(mode 0606\)/],
  ];
  for (const [what, spoil, message] of refusals) {
    await spoil();
    for (const [op, attempt] of [
      ['open', () => slot.openProtector(kek.spec)],
      ['open by descriptor', () => slot.openProtector(kek.spec, descriptor)],
      ['create', () => slot.createProtector(kek.spec, { name: 'x' })],
    ] as const) {
      const error = await rejection(attempt());
      t.match(error, { code: 'ERR_KEY_SOURCE', path: kek.spec.path, message }, `${what}: ${op}`);
      t.ok(assertNoSecrets(error.message, [kek.bytes]));
    }
    await chown(kek.spec.path, 0, 0);
    await chmod(kek.spec.path, 0o600);
  }
  await chown(pass.path, 65534, 65534);
  t.match(await rejection(slot.openProtector(pass)), { code: 'ERR_KEY_SOURCE', message: /passphrase file .* owned by uid 65534/ }, 'a passphrase file too');
  await chown(pass.path, 0, 0);
  t.same(await snapshotTree(root), before, 'nothing changed');
  t.same(warnings, [], 'no warning for a 0600 file');

  await chmod(kek.spec.path, 0o640);
  (await slot.openProtector(kek.spec)).close();
  t.same(warnings, [], 'readable by its group (a Kubernetes Secret with fsGroup): no warning');
  await chmod(kek.spec.path, 0o644);
  (await slot.openProtector(kek.spec)).close();
  await chmod(pass.path, 0o604);
  (await slot.openProtector(pass)).close();
  t.match(warnings, [
    { code: 'FSCRYPT_LOCAL_SECRET_FILE_READABLE', path: kek.spec.path, message: /KEK file .* can be read by every user on this host \(mode 0644\). To fix: chmod 600 .*defaultMode: 0400/ },
    { code: 'FSCRYPT_LOCAL_SECRET_FILE_READABLE', path: pass.path, message: /passphrase file .* \(mode 0604\)/ },
  ]);
});

t.test('without onWarning, a warning is a process warning, once per message', async (t) => {
  const dir = await secretsDir(t);
  const root = join(fs.mountpoint, `slot-${++n}`);
  await mkdir(root);
  const slot = new SlotKeys(root);
  const kek = await kekFile(dir, 'loose');
  await chmod(kek.spec.path, 0o644);
  const seen: Error[] = [];
  const listener = (w: Error): void => {
    if (w.name === 'FscryptLocalWarning') seen.push(w);
  };
  process.on('warning', listener);
  t.teardown(() => {
    process.off('warning', listener);
  });
  await slot.createProtector(kek.spec, { name: 'p' });
  (await slot.openProtector(kek.spec)).close();
  (await slot.openProtector(kek.spec)).close();
  await new Promise((resolve) => setImmediate(resolve)); // process warnings are emitted on the next tick
  t.equal(seen.length, 1, 'once');
  t.match(seen[0], { name: 'FscryptLocalWarning', code: 'FSCRYPT_LOCAL_SECRET_FILE_READABLE', message: /can be read by every user/ });
  t.throws(() => new SlotKeys(root, { onWarning: 'yes' as never }), { code: 'ERR_INVALID_ARG' });
});
