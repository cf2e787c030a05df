// Is the volume directory exactly the encrypted volume the metadata
// describes? Asked every time a volume is handed out (prepare's answer,
// unlock) and shown by status and reconcile: a deleted, replaced or
// unencrypted directory must never pass for a volume (DESIGN invariant 1),
// or a pod would get plaintext storage.
import { lstat } from 'node:fs/promises';
import { defaultPolicy, FscryptError, getPolicy, samePolicy } from '../../kernel/index.js';
import type { Volume } from '../hooks/hook-options.js';
import { asHookError } from '../hooks/hook-lock.js';

/** What is wrong with the volume directory, or undefined if it is the verified volume. */
export async function volumeDirectoryProblem(volume: Pick<Volume, 'path' | 'identifier'>): Promise<string | undefined> {
  const stat = await lstat(volume.path).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return undefined;
    throw error;
  });
  if (stat === undefined) return 'it is missing';
  if (!stat.isDirectory()) return 'it is not a directory (a symlink?)';
  const policy = await getPolicy(volume.path, { noFollow: true });
  if (policy === null) return 'it is not encrypted (its encryption policy is missing)';
  if (!samePolicy(policy, defaultPolicy(volume.identifier))) return 'its encryption policy is not the one the metadata records';
  return undefined;
}

/** Throws ERR_UNSAFE_PATH unless the volume directory is the verified volume. */
export async function verifyVolumeDirectory(volume: Pick<Volume, 'path' | 'identifier'>, what: string): Promise<void> {
  const problem = await volumeDirectoryProblem(volume);
  if (problem === undefined) return;
  throw new FscryptError(`refusing to ${what} ${volume.path}: ${problem}. Is the slot's disk mounted? Run \`fscrypt-local status\` on the slot`, {
    code: 'ERR_UNSAFE_PATH',
    path: volume.path,
  });
}

/** The encryption evidence of a verified volume: what the kernel reports of its policy (no key material). */
export interface VolumeEvidence {
  policyVersion: 2;
  contents: string;
  filenames: string;
  padding: number;
  identifier: string;
}

/**
 * Verifies the volume directory against its metadata (GET_POLICY_EX, now)
 * and returns the policy as the kernel reports it: the agent puts this on a
 * PV only from this call, so a PV's evidence is never a copy of what the
 * metadata merely says (DESIGN invariant 1).
 */
export async function verifiedEvidence(volume: Pick<Volume, 'path' | 'identifier'>): Promise<VolumeEvidence> {
  return asHookError(async () => {
    await verifyVolumeDirectory(volume, 'offer');
    const policy = await getPolicy(volume.path, { noFollow: true });
    if (policy === null || policy.version !== 2) throw new FscryptError(`${volume.path} lost its encryption policy while it was verified`, { code: 'ERR_UNSAFE_PATH', path: volume.path });
    return { policyVersion: 2, contents: String(policy.contents), filenames: String(policy.filenames), padding: policy.padding, identifier: policy.identifier };
  });
}
