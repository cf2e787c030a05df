// Where things live inside a slot, and the names that may appear there.
//
//   <slot>/.fscrypt/                 key metadata, google/fscrypt's format (lib/keys)
//   <slot>/.fscrypt-local/slot.state this slot's lifecycle state (slot-state.ts)
//   <slot>/.fscrypt-local/lock       held while a hook runs (slot-lock.ts)
//   <slot>/.fscrypt-local/trash/     retired generations being deleted
//   <slot>/vol-<generation>/         the encrypted volume directory (the PV path)
//
// Every path is built from the slot root and a name checked here, so nothing
// a tenant or a caller controls (a volume id with '..', a symlink) can point a
// hook outside the slot (DESIGN invariant 7).
import { join } from 'node:path';
import { FscryptError } from '../../kernel/index.js';

export const STATE_DIR = '.fscrypt-local';
export const VOLUME_NAME_PATTERN = /^vol-([1-9][0-9]{0,15})$/;

export interface SlotPaths {
  root: string;
  stateDir: string;
  stateFile: string;
  lockFile: string;
  trashDir: string;
}

export function slotPaths(root: string): SlotPaths {
  const stateDir = join(root, STATE_DIR);
  return {
    root,
    stateDir,
    stateFile: join(stateDir, 'slot.state'),
    lockFile: join(stateDir, 'lock'),
    trashDir: join(stateDir, 'trash'),
  };
}

export function volumeName(generation: number): string {
  return `vol-${generation}`;
}

/** The generation of a volume directory name, or an error for anything else. */
export function parseVolumeName(name: string): number {
  const match = VOLUME_NAME_PATTERN.exec(name);
  if (!match) {
    throw new FscryptError(`'${name}' is not a volume name (vol-<generation>)`, { code: 'ERR_UNSAFE_PATH' });
  }
  return Number(match[1]);
}

export function volumePath(root: string, generation: number): string {
  return join(root, volumeName(generation));
}
