// The lifecycle state of one slot, persisted in the slot itself so that every
// hook is idempotent and resumable after a crash: a hook records what it is
// about to do (an intent: a generation `preparing`, one `retiring`, a target
// about to be mounted) before doing it, and `reconcile` finishes or rolls back from that
// record plus what the kernel says, never from memory.
//
// The file holds no secret: key identifiers are public (they are also in the
// directory's encryption policy).
//
// On disk: two fixed halves (a double buffer), each holding a sequence
// number, the JSON state and a SHA-256 over both. An update overwrites the
// half not in force and fdatasyncs it: the file's size and blocks never
// change, so that is one device flush and no journal commit, where a
// temp-file-and-rename update costs two commits. The reader takes the valid
// half with the higher sequence number, so a hook only acts once its intent's
// flush has returned. Crash safety thus does not rely on any filesystem's
// ordering.
//
// A newest half that is damaged is never silently replaced by the older one:
// a flipped bit and a write torn by a power loss look alike, and acting on
// the older state (a `preparing` record, say, for a volume since filled with
// data) could undo work that was done. The reader refuses such a file
// (ERR_BAD_METADATA) unless told to use the previous copy
// (`reconcile --use-previous-state`), and rollbacks never delete a volume
// directory holding anything beyond what the hook itself made (recovery.ts).
import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { open, rename, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { fsyncDirectory, readUpTo, withHandle, writeFully, type FileHandle } from '../../durable-fs.js';
import { FscryptError } from '../../kernel/index.js';
import { parseVolumeName, slotPaths, VOLUME_NAME_PATTERN } from './slot-layout.js';

export type VolumePhase = 'preparing' | 'ready';

export interface TargetRecord {
  /** Where the volume is (or is about to be) bind-mounted. */
  path: string;
  readonly: boolean;
}

export interface VolumeRecord {
  generation: number;
  /** The directory name in the slot: vol-<generation>. */
  name: string;
  /** The v2 key identifier of the volume's policy key. */
  identifier: string;
  phase: VolumePhase;
  targets: TargetRecord[];
  /** Unlocked by an admin without a target; lock and reconcile honour it. */
  adminUnlocked: boolean;
  /**
   * Handed to a tenant (its PV was seen Bound, or it was published): never
   * offered again (claim.ts). Absent in states written before it existed.
   */
  claimed?: boolean;
  createdAt: string;
}

/**
 * A generation whose erase was decided: its key is out of the kernel, and
 * destroying its wrapped key and moving its directory to the trash are
 * under way (finished by reconcile if interrupted).
 */
export interface RetiringRecord {
  generation: number;
  name: string;
  identifier: string;
}

/** The generation most recently crypto-erased: lets a retried recycle find its result. */
export interface ErasedRecord {
  generation: number;
  identifier: string;
}

export interface SlotState {
  version: 1;
  /** Descriptor of the slot's protector in .fscrypt/protectors. */
  protector: string;
  /** Generations are never reused, so neither are directory names. */
  nextGeneration: number;
  volume: VolumeRecord | null;
  retiring?: RetiringRecord;
  lastErased?: ErasedRecord;
}

export interface ReadStateOptions {
  /**
   * Use the previous copy when the newest is damaged (after a power loss in
   * the middle of a state write). Only reconcile offers it, on request.
   */
  usePreviousState?: boolean;
}

const HALF_SIZE = 64 * 1024;
// Halves are written in whole pages, so a write never makes the kernel read
// a page first.
const PAGE = 4096;
const MAGIC = Buffer.from('FSLSTAT1', 'latin1');
// magic (8) | sequence (u64) | JSON length (u32) | SHA-256 of sequence, length and JSON (32) | JSON
const HEADER_SIZE = 8 + 8 + 4 + 32;
const MAX_JSON_BYTES = HALF_SIZE - HEADER_SIZE;
// memcmp against zeros is microseconds; a byte loop over 64 KiB is not.
const ZERO_HALF = Buffer.alloc(HALF_SIZE);
const MAX_SEQUENCE = (1n << 64n) - 1n;

interface Half {
  sequence: bigint;
  json: Buffer;
}

function digest(sequence: bigint, json: Buffer): Buffer {
  const head = Buffer.alloc(12);
  head.writeBigUInt64LE(sequence, 0);
  head.writeUInt32LE(json.length, 8);
  return createHash('sha256').update(head).update(json).digest();
}

type DecodedHalf =
  | { kind: 'empty' }
  | { kind: 'valid'; half: Half }
  /** `sequence` is what the damaged header claims, when its magic is intact. */
  | { kind: 'damaged'; sequence?: bigint };

/** A half: never written (all zeros), valid, or damaged (torn or corrupt). */
function decodeHalf(bytes: Buffer): DecodedHalf {
  if (bytes.equals(ZERO_HALF.subarray(0, bytes.length))) return { kind: 'empty' };
  if (bytes.length < HEADER_SIZE || !bytes.subarray(0, 8).equals(MAGIC)) return { kind: 'damaged' };
  const sequence = bytes.readBigUInt64LE(8);
  const length = bytes.readUInt32LE(16);
  if (length > MAX_JSON_BYTES || HEADER_SIZE + length > bytes.length) return { kind: 'damaged', sequence };
  const json = bytes.subarray(HEADER_SIZE, HEADER_SIZE + length);
  return digest(sequence, json).equals(bytes.subarray(20, HEADER_SIZE)) ? { kind: 'valid', half: { sequence, json } } : { kind: 'damaged', sequence };
}

function encodeHalf(sequence: bigint, state: SlotState, file: string): Buffer {
  const json = Buffer.from(JSON.stringify(state));
  if (json.length > MAX_JSON_BYTES) {
    throw new FscryptError(`the slot state for ${file} would be ${json.length} bytes, more than ${MAX_JSON_BYTES}; too many targets?`, { code: 'ERR_INVALID_ARG', path: file });
  }
  const half = Buffer.alloc(Math.ceil((HEADER_SIZE + json.length) / PAGE) * PAGE);
  MAGIC.copy(half, 0);
  half.writeBigUInt64LE(sequence, 8);
  half.writeUInt32LE(json.length, 16);
  digest(sequence, json).copy(half, 20);
  json.copy(half, HEADER_SIZE);
  return half;
}

// Every call on the file goes through the thread pool: see durable-fs.ts.

/**
 * Both halves; the one in force is the valid one with the higher sequence.
 * One read of the whole file: when the cache is cold (a hook on a slot left
 * alone for a while) that is one device request, not two in a row.
 */
async function readHalves(handle: FileHandle): Promise<[DecodedHalf, DecodedHalf]> {
  const file = Buffer.alloc(2 * HALF_SIZE);
  const length = await readUpTo(handle, file, 0);
  return [decodeHalf(file.subarray(0, Math.min(length, HALF_SIZE))), decodeHalf(file.subarray(HALF_SIZE, length))];
}

interface InForce {
  /** The valid half with the higher sequence, if any. */
  current?: { half: Half; index: 0 | 1 };
  /** A damaged half that is, or may be, newer than `current`. */
  newestDamaged: boolean;
  /** The highest sequence either half claims. */
  highest: bigint;
}

function inForce(halves: [DecodedHalf, DecodedHalf]): InForce {
  let current: InForce['current'];
  let highest = 0n;
  halves.forEach((h, index) => {
    if (h.kind === 'valid' && (current === undefined || h.half.sequence > current.half.sequence)) current = { half: h.half, index: index as 0 | 1 };
    const claimed = h.kind === 'valid' ? h.half.sequence : h.kind === 'damaged' ? h.sequence : undefined;
    if (claimed !== undefined && claimed > highest) highest = claimed;
  });
  // A file is created with both halves written (createStateFile), so an
  // empty half beside a valid one was written and then lost (a block read
  // back as zeros, a file cut short) and may have been the newer one: as
  // damaged as a torn half, not a half never written (found by
  // test/fuzz/state.test.ts). Only a file created before that, still at its
  // first write (sequence 1 in the first half), has a second half that was
  // never written.
  const legacyFirstWrite = current?.index === 0 && current.half.sequence === 1n && halves[1].kind === 'empty';
  const lostHalf = current !== undefined && !legacyFirstWrite && halves.some((h) => h.kind === 'empty');
  const newestDamaged = lostHalf || halves.some((h) => h.kind === 'damaged' && (h.sequence === undefined || current === undefined || h.sequence > current.half.sequence));
  return { ...(current ? { current } : {}), newestDamaged, highest };
}

export async function readSlotState(root: string, options: ReadStateOptions = {}): Promise<SlotState> {
  const { stateFile } = slotPaths(root);
  let found: InForce;
  try {
    found = await withHandle(await openStateFile(stateFile, constants.O_RDONLY), async (handle) => inForce(await readHalves(handle)));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new FscryptError(`'${root}' is not an initialized slot (no ${stateFile}). To fix: run \`fscrypt-local init-slot ${root} --key-source ...\``, {
        code: 'ERR_NOT_INITIALIZED',
        path: root,
      });
    }
    throw error;
  }
  const { current } = found;
  if (current === undefined) throw bad(stateFile, 'neither of its two copies is intact');
  if (found.newestDamaged && !options.usePreviousState) {
    throw new FscryptError(
      `the newest copy of the slot state ${stateFile} is damaged (disk corruption, or a power loss in the middle of a write); nothing was changed. ` +
        `To fix: if the machine lost power during a hook, run \`fscrypt-local reconcile ${root} --use-previous-state\` to continue from the previous copy ` +
        '(a rollback never deletes a volume directory holding data); otherwise restore the file from a backup or repair it by hand',
      { code: 'ERR_BAD_METADATA', path: stateFile },
    );
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(current.half.json.toString('utf8'));
  } catch {
    throw bad(stateFile, 'not valid JSON');
  }
  return checkState(parsed, stateFile);
}

/**
 * Opens the state file, which must be a regular file: never through a
 * symlink, and without blocking on a FIFO (an open that never returns
 * would hold a pool thread for good). ENOENT is left to the caller.
 */
async function openStateFile(stateFile: string, access: number): Promise<FileHandle> {
  let handle: FileHandle;
  try {
    handle = await open(stateFile, access | constants.O_NOFOLLOW | constants.O_NONBLOCK | constants.O_NOCTTY);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ELOOP') throw bad(stateFile, 'it is a symbolic link');
    throw error;
  }
  let isFile = false;
  try {
    isFile = (await handle.stat()).isFile();
  } finally {
    if (!isFile) await handle.close();
  }
  if (!isFile) throw bad(stateFile, 'it is not a regular file');
  return handle;
}

function bad(file: string, why: string): FscryptError {
  return new FscryptError(
    `the slot state ${file} is corrupt: ${why}. Repair it by hand, or move it away and run \`fscrypt-local init-slot\` with the slot's key source: ` +
      'the existing volume is then kept as a stray directory (never deleted), and new generations are numbered above it',
    {
      code: 'ERR_BAD_METADATA',
      path: file,
    },
  );
}

function checkState(value: unknown, file: string): SlotState {
  const s = value as Partial<SlotState>;
  if (typeof s !== 'object' || s === null || s.version !== 1) throw bad(file, 'unknown version');
  if (typeof s.protector !== 'string' || !/^[0-9a-f]{16}$/.test(s.protector)) throw bad(file, 'bad protector descriptor');
  if (!Number.isSafeInteger(s.nextGeneration) || s.nextGeneration! < 1) throw bad(file, 'bad nextGeneration');
  if (s.volume !== null) {
    const v = s.volume as Partial<VolumeRecord> | undefined;
    if (typeof v !== 'object' || v === null) throw bad(file, 'bad volume');
    if (!Number.isSafeInteger(v.generation) || v.generation! >= s.nextGeneration!) throw bad(file, 'bad volume generation');
    if (typeof v.name !== 'string' || !VOLUME_NAME_PATTERN.test(v.name) || parseVolumeName(v.name) !== v.generation) throw bad(file, 'bad volume name');
    if (typeof v.identifier !== 'string' || !/^[0-9a-f]{32}$/.test(v.identifier)) throw bad(file, 'bad volume identifier');
    if (v.phase !== 'preparing' && v.phase !== 'ready') throw bad(file, 'bad volume phase');
    if (!Array.isArray(v.targets) || !v.targets.every((t) => typeof t?.path === 'string' && t.path.startsWith('/') && typeof t.readonly === 'boolean')) {
      throw bad(file, 'bad targets');
    }
    if (typeof v.adminUnlocked !== 'boolean' || typeof v.createdAt !== 'string') throw bad(file, 'bad volume fields');
    if (v.claimed !== undefined && typeof v.claimed !== 'boolean') throw bad(file, 'bad volume claim');
  }
  if (s.retiring !== undefined) {
    const r = s.retiring as Partial<RetiringRecord> | null;
    if (typeof r !== 'object' || r === null || !Number.isSafeInteger(r.generation) || r.generation! >= s.nextGeneration!) throw bad(file, 'bad retiring generation');
    if (typeof r.name !== 'string' || !VOLUME_NAME_PATTERN.test(r.name) || parseVolumeName(r.name) !== r.generation) throw bad(file, 'bad retiring name');
    if (typeof r.identifier !== 'string' || !/^[0-9a-f]{32}$/.test(r.identifier)) throw bad(file, 'bad retiring identifier');
  }
  if (s.lastErased !== undefined) {
    const e = s.lastErased as Partial<ErasedRecord> | null;
    if (typeof e !== 'object' || e === null || !Number.isSafeInteger(e.generation) || e.generation! < 1 || e.generation! >= s.nextGeneration!) throw bad(file, 'bad lastErased generation');
    if (typeof e.identifier !== 'string' || !/^[0-9a-f]{32}$/.test(e.identifier)) throw bad(file, 'bad lastErased identifier');
  }
  return s as SlotState;
}

/**
 * Writes the state atomically and durably: into the half not in force, then
 * fdatasync. The first write creates the file (temp file, fsync, rename,
 * fsync the directory), with both halves allocated.
 */
export async function writeSlotState(root: string, state: SlotState): Promise<void> {
  const { stateFile } = slotPaths(root);
  let opened: FileHandle;
  try {
    opened = await openStateFile(stateFile, constants.O_RDWR);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    await createStateFile(stateFile, state);
    return;
  }
  await withHandle(opened, async (handle) => {
    // Into the half not in force: a damaged newest half is overwritten, which
    // is how reconcile --use-previous-state repairs the file.
    const { current, highest } = inForce(await readHalves(handle));
    const sequence = highest + 1n;
    // Only a forged or corrupt file gets here (no writer reaches 2^64 writes); without this check the
    // encoder's RangeError would escape the hook untyped (found by test/fuzz/state.test.ts).
    if (sequence > MAX_SEQUENCE) throw bad(stateFile, `a copy claims sequence number ${highest}, the largest there is`);
    const index = current?.index === 0 ? 1 : 0;
    await writeFully(handle, encodeHalf(sequence, state, stateFile), index * HALF_SIZE);
    await handle.datasync();
  });
}

async function createStateFile(stateFile: string, state: SlotState): Promise<void> {
  const temp = `${stateFile}.tmp`;
  const bytes = Buffer.alloc(2 * HALF_SIZE);
  // The state in both halves (sequence 2 in force, 1 its copy): no half of
  // the file is ever empty after this, which is how the reader tells a half
  // lost to zeros from one never written (see inForce).
  encodeHalf(2n, state, stateFile).copy(bytes, 0);
  encodeHalf(1n, state, stateFile).copy(bytes, HALF_SIZE);
  await withHandle(await open(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW, 0o600), async (handle) => {
    await writeFully(handle, bytes, 0);
    await handle.sync();
  });
  await rename(temp, stateFile);
  await fsyncDirectory(dirname(stateFile));
}

/** Removes a temp file an interrupted write left behind (it holds no secret). */
export async function removeStaleStateTemp(root: string): Promise<boolean> {
  try {
    await unlink(`${slotPaths(root).stateFile}.tmp`);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw error;
  }
}
