// What in a slot root is not the slot's own: files someone put there. A
// directory holding a tenant's or an admin's files must never be adopted as
// a slot by the agent: its files are plaintext, and a volume offered beside
// them would suggest they are protected. lost+found is the filesystem's own
// (mkfs makes it at the root of every ext4).
import { readdir } from 'node:fs/promises';
import { asHookError } from '../hooks/hook-lock.js';
import { STATE_DIR, VOLUME_NAME_PATTERN } from './slot-layout.js';

const OWN = new Set(['lost+found', '.fscrypt', STATE_DIR]);

/** Names in the slot root that belong to neither the filesystem nor the slot, sorted. */
export async function foreignEntries(root: string): Promise<string[]> {
  return asHookError(async () => (await readdir(root)).filter((name) => !OWN.has(name) && !VOLUME_NAME_PATTERN.test(name)).sort());
}
