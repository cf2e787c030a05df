// Checking a slot's key metadata without its key source: do the protector
// and policy files a slot's state names exist, parse, and fit together? For
// `status` and `reconcile`, so that a slot whose volumes cannot be unlocked
// is reported as such instead of looking healthy. Reads only; changes
// nothing; needs no KEK, passphrase or KMS. What it cannot see without the
// key: whether a wrapped key authenticates (a flipped bit in one is found by
// the first unlock, as ERR_WRONG_KEY or ERR_BAD_METADATA).
import { FscryptError } from '../kernel/index.js';
import { POLICY_OPTIONS } from './open-protector.js';
import { sourceOf, type SlotRecords } from './slot-records.js';

/** One reason a slot's metadata would not let it be unlocked. Never holds key material. */
export interface MetadataProblem {
  /**
   * As an error of the same cause would have it: 'ENOENT' (a file is
   * missing), 'ERR_BAD_METADATA' (damaged, altered, not ours),
   * 'ERR_UNSAFE_PATH' (a metadata directory is a symlink, foreign-owned or
   * writable by others), 'ERR_WRONG_KEY' (a policy is not wrapped under the
   * protector), 'ERR_NOT_SUPPORTED' (a login protector), 'ERR_BAD_METADATA' (a
   * policy with options fscrypt-local does not make), or an errno code.
   */
  code: string;
  subject: 'protector' | 'policy';
  /** The protector's descriptor or the policy's identifier. */
  id: string;
  /** The file concerned. */
  path: string;
  /** What is wrong and what to do. */
  message: string;
}

/** A failure while reading, as a problem; anything else (a bug) is rethrown. */
function asProblem(error: unknown, subject: MetadataProblem['subject'], id: string, path: string): MetadataProblem {
  if (error instanceof FscryptError) return { code: error.code, subject, id, path: error.path ?? path, message: error.message };
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  if (typeof code === 'string') return { code, subject, id, path, message: `cannot read '${path}': ${code}` };
  throw error;
}

export async function checkSlotMetadata(records: SlotRecords, descriptor: string, identifiers: string[]): Promise<MetadataProblem[]> {
  const problems: MetadataProblem[] = [];
  const slot = records.root;

  // The protector: in .fscrypt (file, passphrase) or beside it (KMS); a
  // rotation between the two interrupted may leave one in each, which opens.
  let found = 0;
  for (const storage of ['fscrypt', 'kms'] as const) {
    const path = records.protectorPath(storage, descriptor);
    try {
      const record = await records.readProtector(storage, descriptor);
      if (record === null) continue;
      found++;
      if (sourceOf(record) === 'pam_passphrase') {
        problems.push({
          code: 'ERR_NOT_SUPPORTED',
          subject: 'protector',
          id: descriptor,
          path,
          message: `protector ${descriptor} of slot '${slot}' is a login (pam_passphrase) protector, which fscrypt-local does not open; the slot's state names the wrong protector`,
        });
      }
    } catch (error) {
      found++;
      problems.push(asProblem(error, 'protector', descriptor, path));
    }
  }
  if (found === 0) {
    const path = records.protectorPath('fscrypt', descriptor);
    problems.push({
      code: 'ENOENT',
      subject: 'protector',
      id: descriptor,
      path,
      message: `slot '${slot}' has no protector ${descriptor} (no '${path}', nor '${records.protectorPath('kms', descriptor)}'): none of its volumes can be unlocked. Restore the file from a backup`,
    });
  }

  for (const id of identifiers) {
    const path = records.policyPath(id);
    try {
      const data = await records.readPolicy(id);
      if (data === null) {
        problems.push({
          code: 'ENOENT',
          subject: 'policy',
          id,
          path,
          message: `slot '${slot}' has no policy ${id} (no '${path}'): the key of its volume is lost unless the file is restored from a backup`,
        });
        continue;
      }
      const o = data.options;
      if (o.policyVersion !== POLICY_OPTIONS.policyVersion || o.contents !== POLICY_OPTIONS.contents || o.filenames !== POLICY_OPTIONS.filenames || o.padding !== POLICY_OPTIONS.padding) {
        problems.push({
          code: 'ERR_BAD_METADATA',
          subject: 'policy',
          id,
          path,
          message: `policy ${id} of slot '${slot}' has options fscrypt-local does not make (v${o.policyVersion}, modes ${o.contents}/${o.filenames}, padding ${o.padding}): it is not a volume of this slot`,
        });
      }
      if (!data.wrappedPolicyKeys.some((w) => w.protectorDescriptor === descriptor)) {
        const holders = data.wrappedPolicyKeys.map((w) => w.protectorDescriptor).join(', ') || 'none';
        problems.push({
          code: 'ERR_WRONG_KEY',
          subject: 'policy',
          id,
          path,
          message: `policy ${id} of slot '${slot}' is not protected by the slot's protector ${descriptor} (its protectors: ${holders}): the slot's key source cannot unlock it`,
        });
      }
    } catch (error) {
      problems.push(asProblem(error, 'policy', id, path));
    }
  }
  // A refused metadata directory fails every read below it the same way: say it once.
  const seen = new Set<string>();
  return problems.filter((p) => {
    const key = `${p.code}\0${p.message}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}
