// The lifecycle part of smoke: one slot taken through init-slot, prepare,
// unlock, write/read, lock, erase on the real kernel, checking after each
// step what must be true on disk and in the kernel. Stops at the first
// failed step; the caller reports the rest as not run.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { lstat, mkdtemp, open, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { getKeyStatus, getPolicy, removeKey } from '../../kernel/index.js';
import { slotLayout, wipe, type OpenProtector } from '../../keys/index.js';
import { adminLock, adminUnlock, erase, initSlot, openSlotProtector, prepare, slotStatus, type Volume } from '../../volume/index.js';
import type { Progress } from '../progress.js';
import { commandTrash, finishTrash } from '../trash-wait.js';
import { CheckFailure, type Checklist, type CheckOutcome } from './checklist.js';
import type { CleanupStack } from './cleanup.js';
import { makeKekFile } from './kek-file.js';
import { blockDeviceOf, fileExtents, readExtents, scanFile, type Extent } from './raw-device.js';
import { findTool, runTool } from './tools.js';

export interface LifecycleSite {
  mode: 'scratch' | 'pool';
  /** scratch: the mount point, used as the slot; pool: the directory a temporary slot is made in. */
  base: string;
  /** scratch: the image file to scan for plaintext. */
  image?: string;
  /** Where the temporary KEK file goes. */
  workdir: string;
}

const MARKER_SIZE = 64 * 1024;
// Linux errno 126 (Node's os.constants.errno has no name for it).
const ENOKEY = 126;

interface Context {
  site: LifecycleSite;
  progress: Progress;
  cleanup: CleanupStack;
  slot?: string;
  protector?: OpenProtector;
  volume?: Volume;
  /** A random, recognisable plaintext: the unit repeated fills the marker file. */
  markerUnit: Buffer;
  markerName: string;
  /** The control file's name: unrelated to markerName, which must not be found on disk. */
  controlName: string;
  /** Plaintext in an unencrypted file: proves the on-disk check can see file data at all. */
  controlUnit: Buffer;
  /** pool: where the marker and control files lie on the device (found while unlocked). */
  extents?: { blockSize: number; marker: Extent[]; control: Extent[] } | { error: string };
  trash: ReturnType<typeof commandTrash>;
}

type Step = { name: string; run: (c: Context) => Promise<CheckOutcome> };

const STEPS: Step[] = [
  { name: 'init-slot', run: initStep },
  { name: 'prepare', run: prepareStep },
  { name: 'unlock', run: unlockStep },
  { name: 'write-read', run: writeReadStep },
  { name: 'lock', run: lockStep },
  { name: 'locked-access', run: lockedAccessStep },
  { name: 'ciphertext-on-disk', run: ciphertextStep },
  { name: 'unlock-again', run: unlockAgainStep },
  { name: 'erase', run: eraseStep },
  { name: 'unrecoverable', run: unrecoverableStep },
  { name: 'background-deletion', run: backgroundDeletionStep },
];

export const LIFECYCLE_CHECKS = STEPS.map((s) => s.name);

/** Runs the steps into the checklist; returns the names of those not run. */
export async function runLifecycle(site: LifecycleSite, checklist: Checklist, progress: Progress, cleanup: CleanupStack): Promise<string[]> {
  const tag = randomBytes(8).toString('hex');
  const context: Context = {
    site,
    progress,
    cleanup,
    markerUnit: Buffer.from(`FSCRYPT-LOCAL-SMOKE-PLAINTEXT-${tag}|`),
    markerName: `smoke-marker-${tag}.txt`,
    controlName: `.fscrypt-local-smoke-control-${randomBytes(8).toString('hex')}`,
    controlUnit: Buffer.from(`FSCRYPT-LOCAL-SMOKE-CONTROL-${tag}|`),
    trash: commandTrash(progress),
  };
  try {
    for (const [index, step] of STEPS.entries()) {
      if (!(await checklist.run(step.name, () => step.run(context)))) return STEPS.slice(index + 1).map((s) => s.name);
    }
    return [];
  } finally {
    // Before the slot is removed: a deletion still running would race it.
    await context.trash.close();
  }
}

function need<T>(value: T | undefined, what: string): T {
  if (value === undefined) throw new CheckFailure(`internal: ${what} missing`);
  return value;
}

function repeated(unit: Buffer, size: number): Buffer {
  return Buffer.alloc(size, unit);
}

async function writeDurably(path: string, data: Buffer): Promise<void> {
  const handle = await open(path, 'wx', 0o600);
  try {
    await handle.writeFile(data);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

async function keyStatus(c: Context): Promise<string> {
  const volume = need(c.volume, 'volume');
  return (await getKeyStatus(volume.slot, volume.identifier)).status;
}

async function initStep(c: Context): Promise<CheckOutcome> {
  let slot = c.site.base;
  if (c.site.mode === 'pool') {
    const dir = await mkdtemp(join(c.site.base, '.fscrypt-local-smoke-'));
    c.cleanup.push(`remove the temporary slot ${dir}`, () => rm(dir, { recursive: true, force: true }));
    // A slot is a mount point: the temporary one is a bind mount of itself.
    execFileSync('mount', ['--bind', dir, dir], { stdio: ['ignore', 'ignore', 'pipe'] });
    c.cleanup.push(`unmount the temporary slot ${dir}`, () => {
      execFileSync('umount', [dir], { stdio: ['ignore', 'ignore', 'pipe'] });
    });
    slot = dir;
  }
  c.slot = slot;
  const kek = await makeKekFile(c.site.workdir, c.cleanup);
  const source = { kind: 'file', path: kek } as const;
  const info = await initSlot(slot, source);
  const protector = await openSlotProtector(slot, source);
  c.protector = protector;
  c.cleanup.push('close the protector', () => protector.close());
  return `slot ${info.root} initialized: protector ${info.protector} wrapped under a fresh 32-byte KEK file (deleted afterwards)`;
}

async function prepareStep(c: Context): Promise<CheckOutcome> {
  const slot = need(c.slot, 'slot');
  const volume = await prepare(slot, need(c.protector, 'protector'), { onProgress: c.progress.hook });
  c.volume = volume;
  // Whatever happens next, no key of this test stays in the kernel.
  c.cleanup.push(`remove key ${volume.identifier}`, async () => {
    await removeKey(volume.slot, volume.identifier, { allUsers: true }).catch(() => undefined);
  });
  const policy = await getPolicy(volume.path);
  if (policy === null || policy.version !== 2 || policy.identifier !== volume.identifier) {
    throw new CheckFailure(`${volume.path} does not carry the v2 policy of key ${volume.identifier} (found ${policy === null ? 'none' : `v${policy.version}`})`);
  }
  const status = await keyStatus(c);
  if (status !== 'absent') throw new CheckFailure(`after prepare the key is ${status}; a prepared volume must be locked`);
  return `${volume.path}: v2 policy ${policy.contents}/${policy.filenames} with key ${volume.identifier} verified; locked`;
}

async function unlockStep(c: Context): Promise<CheckOutcome> {
  const volume = need(c.volume, 'volume');
  await adminUnlock(volume, need(c.protector, 'protector'), { onProgress: c.progress.hook });
  const status = await keyStatus(c);
  if (status !== 'present') throw new CheckFailure(`after unlock the key is ${status}, not present`);
  return `key ${volume.identifier} added to the filesystem keyring`;
}

async function writeReadStep(c: Context): Promise<CheckOutcome> {
  const volume = need(c.volume, 'volume');
  const slot = need(c.slot, 'slot');
  const marker = repeated(c.markerUnit, MARKER_SIZE);
  const markerPath = join(volume.path, c.markerName);
  await writeDurably(markerPath, marker);
  const controlPath = join(slot, c.controlName);
  await writeDurably(controlPath, repeated(c.controlUnit, MARKER_SIZE));
  c.cleanup.push(`remove ${controlPath}`, () => rm(controlPath, { force: true }));
  const back = await readFile(markerPath);
  if (!back.equals(marker)) throw new CheckFailure(`${markerPath} reads back ${back.length} bytes that differ from the ${marker.length} written`);
  if (c.site.mode === 'pool') {
    // FIEMAP needs an open file, which a locked one refuses: find the blocks now.
    try {
      const [m, k] = await Promise.all([fileExtents(markerPath), fileExtents(controlPath)]);
      c.extents = { blockSize: m.blockSize, marker: m.extents, control: k.extents };
    } catch (error) {
      c.extents = { error: error instanceof Error ? error.message : String(error) };
    }
  }
  return `wrote ${MARKER_SIZE / 1024} KiB of known plaintext to ${c.markerName} in ${volume.name} and read it back`;
}

async function lockStep(c: Context): Promise<CheckOutcome> {
  const volume = need(c.volume, 'volume');
  const result = await adminLock(volume, { onProgress: c.progress.hook });
  if (!result.locked) throw new CheckFailure(`lock left the key in the kernel (${result.reason ?? 'no reason given'})`);
  const status = await keyStatus(c);
  if (status !== 'absent') throw new CheckFailure(`after lock the key is ${status}, not absent`);
  return `key removed for all users; the kernel reports it absent`;
}

function errnoOf(error: unknown): number | undefined {
  return (error as NodeJS.ErrnoException).errno;
}

async function lockedAccessStep(c: Context): Promise<CheckOutcome> {
  const volume = need(c.volume, 'volume');
  const names = await readdir(volume.path);
  if (names.includes(c.markerName)) throw new CheckFailure(`the locked ${volume.name} still lists the plaintext name ${c.markerName}`);
  if (names.length !== 1) throw new CheckFailure(`the locked ${volume.name} lists ${names.length} entries, expected the 1 file written`);
  const noKeyName = names[0]!;
  try {
    const handle = await open(join(volume.path, noKeyName), 'r');
    await handle.close();
    throw new CheckFailure(`the file in the locked ${volume.name} opened without its key`);
  } catch (error) {
    if (error instanceof CheckFailure) throw error;
    if (errnoOf(error) !== -ENOKEY) throw new CheckFailure(`opening the locked file failed with ${(error as Error).message}, expected ENOKEY`);
  }
  const byName = await lstat(join(volume.path, c.markerName)).then(
    () => 'found',
    (error: unknown) => (error as NodeJS.ErrnoException).code ?? 'error',
  );
  if (byName !== 'ENOENT') throw new CheckFailure(`looking the plaintext name up in the locked ${volume.name} gave ${byName}, expected ENOENT`);
  return `${volume.name} lists only the no-key name '${noKeyName.slice(0, 12)}…'; opening it fails with ENOKEY`;
}

async function ciphertextStep(c: Context): Promise<CheckOutcome> {
  const slot = need(c.slot, 'slot');
  await runTool('sync', ['-f', slot]);
  if (c.site.mode === 'scratch') {
    const image = need(c.site.image, 'image');
    const needles = [c.markerUnit, Buffer.from(c.markerName), c.controlUnit, Buffer.from(c.controlName)];
    const [content, name, control, controlName] = await scanFile(image, needles);
    if (!control || !controlName) {
      throw new CheckFailure(`the scan of ${image} did not find the plaintext control file (${control ? 'its name' : 'its data'}): the image does not show what was written, so the check proves nothing`);
    }
    if (content) throw new CheckFailure(`the plaintext written to the encrypted volume is on the raw image ${image}: the data is NOT encrypted on disk`);
    if (name) throw new CheckFailure(`the plaintext file name is on the raw image ${image}: file names are NOT encrypted on disk`);
    return 'after `sync -f`, the whole image holds neither the plaintext nor the file name (a plaintext control file outside the volume, name and data, is found)';
  }
  const extents = c.extents;
  if (extents === undefined || 'error' in extents) {
    return { skipped: true, detail: `skipped: the marker's blocks could not be located with filefrag (${extents?.error ?? 'not found'})` };
  }
  if (findTool('dd') === undefined) return { skipped: true, detail: 'skipped: dd not found (install coreutils)' };
  const device = await blockDeviceOf(slot);
  if (device === undefined) return { skipped: true, detail: "skipped: the pool's filesystem is not on a block device visible here (mount /dev from the host)" };
  const [controlBytes, markerBytes] = [await readExtents(device, extents.blockSize, extents.control), await readExtents(device, extents.blockSize, extents.marker)];
  if (!controlBytes.includes(c.controlUnit)) {
    throw new CheckFailure(`reading the control file's blocks from ${device} did not find its plaintext: the device does not show what was written, so the check proves nothing`);
  }
  if (markerBytes.length === 0) throw new CheckFailure(`the marker file has no blocks on ${device}`);
  if (markerBytes.includes(c.markerUnit)) throw new CheckFailure(`the marker's blocks on ${device} hold the plaintext: the data is NOT encrypted on disk`);
  return `the marker's ${extents.marker.length} extent(s) read from ${device} with O_DIRECT hold no plaintext (a plaintext control file's blocks do)`;
}

async function unlockAgainStep(c: Context): Promise<CheckOutcome> {
  const volume = need(c.volume, 'volume');
  await adminUnlock(volume, need(c.protector, 'protector'), { onProgress: c.progress.hook });
  const back = await readFile(join(volume.path, c.markerName));
  if (!back.equals(repeated(c.markerUnit, MARKER_SIZE))) throw new CheckFailure('after unlocking again, the marker reads back different bytes');
  // Released, as a volume is when its last pod is gone: erase refuses an unlocked one.
  const locked = await adminLock(volume, { onProgress: c.progress.hook });
  if (!locked.locked) throw new CheckFailure(`locking again left the key in the kernel (${locked.reason ?? 'no reason given'})`);
  return 'unlocked again with the same KEK; the marker reads back intact; locked again (released)';
}

function policyFile(volume: Volume): string {
  return join(slotLayout(volume.slot).policiesDir, volume.identifier);
}

async function eraseStep(c: Context): Promise<CheckOutcome> {
  const volume = need(c.volume, 'volume');
  const exists = await lstat(policyFile(volume)).then(
    () => true,
    () => false,
  );
  if (!exists) throw new CheckFailure(`before erase, the wrapped key is not at ${policyFile(volume)}: the check after erase would prove nothing`);
  const result = await erase(volume, { onProgress: c.progress.hook, trash: c.trash });
  if (result.erased !== volume.name) throw new CheckFailure(`erase reported ${result.erased ?? 'nothing'} erased, expected ${volume.name}`);
  return `${volume.name} crypto-erased; its ciphertext queued for background deletion`;
}

async function unrecoverableStep(c: Context): Promise<CheckOutcome> {
  const volume = need(c.volume, 'volume');
  const policyGone = await lstat(policyFile(volume)).then(
    () => false,
    (error: unknown) => (error as NodeJS.ErrnoException).code === 'ENOENT',
  );
  if (!policyGone) throw new CheckFailure(`the wrapped key ${policyFile(volume)} still exists after erase`);
  const status = await keyStatus(c);
  if (status !== 'absent') throw new CheckFailure(`after erase the key is ${status} in the kernel, not absent`);
  let unwrapError: string;
  try {
    const key = await need(c.protector, 'protector').unwrapPolicyKey(volume.identifier);
    wipe(key);
    throw new CheckFailure(`the protector still unwraps the key of ${volume.name} after erase`);
  } catch (error) {
    if (error instanceof CheckFailure) throw error;
    unwrapError = (error as { code?: string }).code ?? 'error';
  }
  const names = await readdir(volume.slot);
  if (names.includes(volume.name)) throw new CheckFailure(`${volume.name} is still in the slot after erase`);
  return `policy file gone from .fscrypt/policies, key absent from the kernel, unwrapping the old key fails (${unwrapError}), ${volume.name} gone from the slot`;
}

async function backgroundDeletionStep(c: Context): Promise<CheckOutcome> {
  const deletion = await finishTrash(c.trash, c.progress, true);
  const left = (await slotStatus(need(c.slot, 'slot'))).trash;
  if (left.length > 0) throw new CheckFailure(`the slot's trash still holds ${left.join(', ')} after deletion finished`);
  return `old ciphertext deleted (${deletion.files} files, ${deletion.dirs} directories); the slot's trash is empty`;
}

