// The lifecycle state of one slot, persisted in the slot itself so that every
// hook is idempotent and resumable after a crash: a hook records what it is
// about to do (an intent: a generation `preparing`, one `retiring`, a target
// about to be mounted) before doing it, and `reconcile` finishes or rolls back from that
// record plus what the kernel says, never from memory.
//
// The file holds no secret: key identifiers are public (they are also in the
// directory's encryption policy).
import { open, rename, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { fsyncDirectory } from '../durable-fs.js';
import { FscryptError } from '../kernel/index.js';
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

export interface SlotState {
  version: 1;
  /** Descriptor of the slot's protector in .fscrypt/protectors. */
  protector: string;
  /** Generations are never reused, so neither are directory names. */
  nextGeneration: number;
  volume: VolumeRecord | null;
  retiring?: RetiringRecord;
}

const MAX_STATE_BYTES = 256 * 1024;

export async function readSlotState(root: string): Promise<SlotState> {
  const { stateFile } = slotPaths(root);
  let text: string;
  try {
    const handle = await open(stateFile, 'r');
    try {
      const { size } = await handle.stat();
      if (size > MAX_STATE_BYTES) throw bad(stateFile, `larger than ${MAX_STATE_BYTES} bytes`);
      text = await handle.readFile('utf8');
    } finally {
      await handle.close();
    }
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new FscryptError(`'${root}' is not an initialized slot (no ${stateFile}). To fix: run \`fscrypt-local init-slot ${root} --key-source ...\``, {
        code: 'ERR_STATE',
        path: root,
      });
    }
    throw error;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw bad(stateFile, 'not valid JSON');
  }
  return checkState(parsed, stateFile);
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
  }
  if (s.retiring !== undefined) {
    const r = s.retiring as Partial<RetiringRecord> | null;
    if (typeof r !== 'object' || r === null || !Number.isSafeInteger(r.generation) || r.generation! >= s.nextGeneration!) throw bad(file, 'bad retiring generation');
    if (typeof r.name !== 'string' || !VOLUME_NAME_PATTERN.test(r.name) || parseVolumeName(r.name) !== r.generation) throw bad(file, 'bad retiring name');
    if (typeof r.identifier !== 'string' || !/^[0-9a-f]{32}$/.test(r.identifier)) throw bad(file, 'bad retiring identifier');
  }
  return s as SlotState;
}

/** Writes the state atomically and durably: temp file, fsync, rename, fsync the directory. */
export async function writeSlotState(root: string, state: SlotState): Promise<void> {
  const { stateFile } = slotPaths(root);
  const temp = `${stateFile}.tmp`;
  const handle = await open(temp, 'w', 0o600);
  try {
    await handle.writeFile(`${JSON.stringify(state, null, 2)}\n`);
    await handle.sync();
  } finally {
    await handle.close();
  }
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
