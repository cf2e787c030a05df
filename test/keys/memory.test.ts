// Key bytes left in a process after use (docs/keys.md, "Secrets in
// memory"). A child process opens protectors with known key material (it is
// given only paths), unwraps a policy key, wipes it and closes the protector
// (then, in a second run, collects garbage); then this process reads the child's memory through
// /proc/PID/mem (every readable mapping except read-only file mappings, the
// code and constants of node and its libraries) and looks for the KEK, the
// passphrase, the Argon2 output, the protector keys and the policy key, whole
// and in 16-byte pieces: a freed heap chunk keeps all but its first 16 bytes.
//
// The one residue allowed, and why (docs/keys.md lists it): pieces of the
// passphrase in @node-rs/argon2's own heap (mimalloc, mapped apart from
// glibc's [heap]). Its native code copies the password it is given and
// frees the copy without zeroing it; no JavaScript can reach that memory.
// Never the whole passphrase (the allocator's free list overwrites the first
// bytes of a freed block), never a key, nothing in glibc's heap, on the
// stack or in V8's heap.
import { spawn } from 'node:child_process';
import { hkdfSync, randomFillSync } from 'node:crypto';
import { closeSync, openSync, readFileSync, readSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { keyIdentifier } from '../../lib/kernel/index.js';
import { hkdf, policyKeyIdentifier } from '../../lib/keys/hkdf.js';
import { newPolicyKey, SlotKeys, slotLayout, type KeySourceSpec } from '../../lib/keys/index.js';
import { decodeProtectorData } from '../../lib/keys/metadata-format.js';
import { deriveKek } from '../../lib/keys/sources/passphrase.js';
import { unwrapKey } from '../../lib/keys/wrap.js';
import { buildJs } from '../fixtures/system/js-build.js';
import { FAST_COSTS, kekFile, passphraseFile, secretsDir } from '../fixtures/keys-helpers.js';
import { tmpfs } from '../fixtures/system/scratch-fs.js';

const fs = tmpfs(t);
let CHILD = '';

t.before(async () => {
  // Plain JavaScript: tap's TypeScript loader would fill the child with
  // compiler state, and take seconds to start.
  const js = await buildJs(t, ['lib', 'test/fixtures/children/keys-memory-child.ts']);
  CHILD = join(js, 'test/fixtures/children/keys-memory-child.js');
});

interface Hit {
  name: string;
  address: number;
  /** The /proc/PID/maps line of the mapping it is in. */
  mapping: string;
}

type Needle = [name: string, bytes: Buffer];

/** Every place in `pid`'s writable or anonymous memory where a needle occurs. */
function scanMemory(pid: number, needles: Needle[]): { hits: Hit[]; bytes: number } {
  const maps = readFileSync(`/proc/${pid}/maps`, 'utf8').trim().split('\n');
  const fd = openSync(`/proc/${pid}/mem`, 'r');
  const hits: Hit[] = [];
  let bytes = 0;
  const overlap = Math.max(...needles.map(([, n]) => n.length));
  const CHUNK = 4 << 20;
  const buffer = Buffer.allocUnsafeSlow(CHUNK + overlap);
  try {
    for (const line of maps) {
      const fields = line.split(/\s+/);
      const [range, perms, , , inode] = fields as [string, string, string, string, string];
      const path = fields.slice(5).join(' ');
      if (!perms.startsWith('r') || /^\[(vvar|vvar_vclock|vsyscall)\]$/.test(path)) continue;
      if (inode !== '0' && !perms.startsWith('rw')) continue;
      const [start, end] = range.split('-').map((h) => parseInt(h, 16)) as [number, number];
      for (let at = start; at < end; at += CHUNK) {
        let n: number;
        try {
          n = readSync(fd, buffer, 0, Math.min(CHUNK + overlap, end - at), at);
        } catch {
          continue; // unreadable (a guard page)
        }
        bytes += Math.min(n, CHUNK);
        const view = buffer.subarray(0, n);
        for (const [name, needle] of needles) {
          for (let i = view.indexOf(needle); i >= 0 && i < CHUNK; i = view.indexOf(needle, i + 1)) hits.push({ name, address: at + i, mapping: line });
        }
      }
    }
  } finally {
    closeSync(fd);
  }
  return { hits, bytes };
}

/** A secret and its 16-byte pieces. */
function needles(name: string, secret: Buffer): Needle[] {
  const out: Needle[] = [[name, secret]];
  for (let i = 0; i + 16 <= secret.length; i += 16) out.push([`${name}[${i}..${i + 16})`, secret.subarray(i, i + 16)]);
  return out;
}

/** Runs the child until it is ready, scans it, ends it. */
async function scanChild(t: Test, args: { root: string; sources: KeySourceSpec[]; identifier: string; keep: boolean; collect: boolean }, secrets: Needle[]): Promise<Hit[]> {
  const proc = spawn(process.execPath, ['--expose-gc', CHILD, JSON.stringify(args)], { stdio: ['pipe', 'pipe', 'pipe'] });
  t.teardown(() => {
    proc.kill('SIGKILL');
  });
  let stderr = '';
  proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  await new Promise<void>((resolve, reject) => {
    let stdout = '';
    proc.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      if (stdout.includes('\n')) resolve();
    });
    proc.on('exit', (code) => reject(new Error(`the child exited (${code}): ${stderr}`)));
  });
  const started = Date.now();
  const { hits, bytes } = scanMemory(proc.pid!, secrets);
  t.comment(`scanned ${(bytes / 2 ** 20).toFixed(0)} MiB of the child in ${Date.now() - started} ms`);
  for (const h of hits) t.comment(`${h.name} at ${h.address.toString(16)} in ${h.mapping}`);
  proc.stdin.end();
  return hits;
}

interface Keys {
  root: string;
  identifier: string;
  file: KeySourceSpec;
  pass: KeySourceSpec;
  passphrase: Buffer;
  kek: Buffer;
  argon2Kek: Buffer;
  pFile: Buffer;
  pPass: Buffer;
  policyKey: Buffer;
}

let slots = 0;

/** A slot with a file and a passphrase protector on one policy, and every secret of it, known here. */
async function slotWithKnownKeys(t: Test): Promise<Keys> {
  const root = join(fs.mountpoint, `slot-${++slots}`);
  await mkdir(root);
  const dir = await secretsDir(t);
  const file = await kekFile(dir);
  // Long and unlike anything else in a process, so that a hit is a copy.
  const passphrase = `correct-horse-battery-staple-${newPolicyKey().toString('hex').slice(0, 40)}`;
  const pass = await passphraseFile(dir, passphrase, 'passphrase', FAST_COSTS);
  const slot = new SlotKeys(root);
  const a = await slot.createAndOpenProtector(file.spec, { name: 'file' });
  const b = await slot.createAndOpenProtector(pass, { name: 'passphrase' });
  const policyKey = newPolicyKey();
  await a.addPolicy(policyKey);
  const { identifier } = await b.addPolicy(policyKey);
  a.close();
  b.close();
  const layout = slotLayout(root);
  const fileData = decodeProtectorData(await readFile(join(layout.protectorsDir, a.descriptor)));
  const passData = decodeProtectorData(await readFile(join(layout.protectorsDir, b.descriptor)));
  const argon2Kek = await deriveKek(Buffer.from(passphrase), passData.salt!, passData.costs!);
  return {
    root,
    identifier,
    file: file.spec,
    pass,
    passphrase: Buffer.from(passphrase),
    kek: file.bytes,
    argon2Kek,
    pFile: unwrapKey(file.bytes, fileData.wrappedKey)!,
    pPass: unwrapKey(argon2Kek, passData.wrappedKey)!,
    policyKey,
  };
}

t.test('the scan finds keys that are still in use (it would see a copy)', async (t) => {
  const k = await slotWithKnownKeys(t);
  const hits = await scanChild(t, { root: k.root, sources: [k.file], identifier: k.identifier, keep: true, collect: true }, [...needles('P', k.pFile), ...needles('K', k.policyKey)]);
  t.ok(hits.some((h) => h.name === 'P'), 'the open protector key is found');
  t.ok(hits.some((h) => h.name === 'K'), 'the unwrapped policy key is found');
});

// Copies that only garbage collection frees would be there without it: the
// KeyObject crypto.hkdfSync makes of its key, a Hash object's state, a
// typed array's bytes in V8's heap. So both: right after close(), and after
// collecting garbage (which would free the unwiped copies Node made into
// memory it never clears).
for (const collect of [false, true]) {
  const when = collect ? 'after close() and GC' : 'right after close()';

  t.test(`file protector: ${when}, no copy of the KEK, the protector key or the policy key is left`, async (t) => {
    const k = await slotWithKnownKeys(t);
    const hits = await scanChild(t, { root: k.root, sources: [k.file], identifier: k.identifier, keep: false, collect }, [
      ...needles('KEK', k.kek),
      ...needles('P', k.pFile),
      ...needles('K', k.policyKey),
    ]);
    t.same(hits, [], 'nothing, whole or in part');
  });

  t.test(`passphrase protector: ${when}, no key is left; of the passphrase only pieces, in @node-rs/argon2's own heap`, async (t) => {
    const k = await slotWithKnownKeys(t);
    const hits = await scanChild(t, { root: k.root, sources: [k.pass], identifier: k.identifier, keep: false, collect }, [
      ...needles('passphrase', k.passphrase),
      ...needles('Argon2 output', k.argon2Kek),
      ...needles('P', k.pPass),
      ...needles('K', k.policyKey),
    ]);
    // An anonymous mapping (the line ends with inode 0 and no name), not glibc's heap or a stack.
    const allowed = (h: Hit): boolean => h.name.startsWith('passphrase[') && !h.name.startsWith('passphrase[0..') && /\s0\s*$/.test(h.mapping);
    t.same(hits.filter((h) => !allowed(h)), [], "no key, no whole passphrase, nothing in glibc's heap, a stack or V8's heap");
  });
}

t.test('hkdf.ts computes what crypto.hkdfSync and lib/kernel compute', async (t) => {
  for (const [hash, length] of [['sha256', 64], ['sha512', 16], ['sha256', 100], ['sha512', 130]] as const) {
    const ikm = randomFillSync(Buffer.alloc(32));
    const salt = randomFillSync(Buffer.alloc(hash === 'sha256' ? 0 : 64));
    const info = Buffer.from('fscrypt\0\x01', 'latin1');
    t.same(hkdf(hash, ikm, salt, info, length), Buffer.from(hkdfSync(hash, ikm, salt, info, length)), `${hash}, ${length} bytes`);
  }
  for (let i = 0; i < 4; i++) {
    const key = newPolicyKey();
    t.equal(policyKeyIdentifier(key), keyIdentifier(key));
  }
  t.throws(() => hkdf('sha256', Buffer.alloc(32), Buffer.alloc(0), Buffer.alloc(0), 255 * 32 + 1), RangeError);
});
