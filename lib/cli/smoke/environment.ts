// The node-level checks before any lifecycle: privileges, kernel support,
// tools, the filesystem's encrypt feature, and keyring quota headroom.
import { access, readFile } from 'node:fs/promises';
import { release } from 'node:os';
import { probe } from '../../kernel/index.js';
import { CheckFailure, type CheckOutcome } from './checklist.js';
import { findTool } from './tools.js';

export async function checkRoot(): Promise<CheckOutcome> {
  const uid = process.geteuid?.() ?? -1;
  if (uid === 0) return 'running as root (uid 0)';
  throw new CheckFailure(
    `running as uid ${uid}: adding keys for all users, mounting and reading devices need root`,
    'run it as root (`sudo fscrypt-local smoke`), or on a Kubernetes node with the privileged Job in deploy/smoke-job.yaml',
  );
}

const KERNEL_FEATURE = '/sys/fs/ext4/features/encryption';

export async function checkKernel(): Promise<CheckOutcome> {
  const has = await access(KERNEL_FEATURE).then(
    () => true,
    () => false,
  );
  if (has) return `kernel ${release()} supports ext4 encryption (${KERNEL_FEATURE})`;
  throw new CheckFailure(
    `kernel ${release()} has no ${KERNEL_FEATURE}: it was built without ext4 encryption (CONFIG_FS_ENCRYPTION), or ext4 is not loaded`,
    'boot a kernel built with CONFIG_FS_ENCRYPTION=y (any distribution kernel since Linux 5.4 has it), or `modprobe ext4`',
  );
}

export async function checkTools(required: string[], optional: string[]): Promise<CheckOutcome> {
  const missing = required.filter((t) => findTool(t) === undefined);
  if (missing.length > 0) {
    throw new CheckFailure(`not found: ${missing.join(', ')}`, 'install them: `apt-get install e2fsprogs util-linux mount coreutils` (Debian/Ubuntu), `dnf install e2fsprogs util-linux coreutils` (Fedora/RHEL)');
  }
  const absent = optional.filter((t) => findTool(t) === undefined);
  const found = [...required, ...optional.filter((t) => !absent.includes(t))];
  return absent.length === 0
    ? `found ${found.join(', ')}`
    : `found ${found.join(', ')}; not found: ${absent.join(', ')} (install e2fsprogs and coreutils; the raw-device check will be skipped)`;
}

export async function checkEncryptFeature(path: string): Promise<CheckOutcome> {
  const result = await probe(path);
  if (result.supported) return `${result.filesystem} at ${path} supports fscrypt (the kernel accepts FS_IOC_ADD_ENCRYPTION_KEY there)`;
  // ext4 and f2fs: probe names the exact command for this device. Anything
  // else cannot be fixed in place: say where the pool must go instead.
  const remedy =
    result.filesystem.startsWith('ext') || result.filesystem === 'f2fs'
      ? result.remedy
      : `put the pool on ext4 with the encrypt feature: \`mkfs.ext4 -O encrypt <device>\` for a new filesystem, or \`tune2fs -O encrypt <device>\` for an existing ext4 one (${result.filesystem} cannot be encrypted)`;
  throw new CheckFailure(`${result.reason ?? `${result.filesystem} cannot use fscrypt`} (path ${path})`, remedy);
}

/** Keys and bytes smoke (and a few volumes after it) need in the user's key quota. */
const NEEDED_KEYS = 8;
const NEEDED_BYTES = 8 * 1024;

export interface KeyQuota {
  keys: number;
  maxKeys: number;
  bytes: number;
  maxBytes: number;
}

/** This user's key quota: usage from /proc/key-users, limits from /proc/sys/kernel/keys. */
export async function readKeyQuota(uid = process.geteuid?.() ?? 0): Promise<KeyQuota> {
  const prefix = uid === 0 ? 'root_' : '';
  const limit = async (name: string): Promise<number> => Number((await readFile(`/proc/sys/kernel/keys/${prefix}${name}`, 'utf8')).trim());
  const [maxKeys, maxBytes, users] = await Promise.all([limit('maxkeys'), limit('maxbytes'), readFile('/proc/key-users', 'utf8')]);
  // "  uid: usage nkeys/nikeys qnkeys/maxkeys qnbytes/maxbytes" (see keyrings(7))
  for (const line of users.split('\n')) {
    const m = /^\s*(\d+):\s+\d+\s+\d+\/\d+\s+(\d+)\/\d+\s+(\d+)\/\d+/.exec(line);
    if (m && Number(m[1]) === uid) return { keys: Number(m[2]), maxKeys, bytes: Number(m[3]), maxBytes };
  }
  return { keys: 0, maxKeys, bytes: 0, maxBytes };
}

export async function checkKeyQuota(): Promise<CheckOutcome> {
  const q = await readKeyQuota();
  const detail = `${q.keys} of ${q.maxKeys} keys, ${q.bytes} of ${q.maxBytes} bytes in use`;
  if (q.maxKeys - q.keys >= NEEDED_KEYS && q.maxBytes - q.bytes >= NEEDED_BYTES) return `${detail}: enough headroom`;
  const uid = process.geteuid?.() ?? 0;
  const sysctl = uid === 0 ? 'kernel.keys.root_maxkeys / kernel.keys.root_maxbytes' : 'kernel.keys.maxkeys / kernel.keys.maxbytes';
  throw new CheckFailure(
    `${detail}: fewer than ${NEEDED_KEYS} keys or ${NEEDED_BYTES} bytes left; adding volume keys would fail with EDQUOT`,
    `raise ${sysctl} (e.g. \`sysctl -w ${uid === 0 ? 'kernel.keys.root_maxkeys=1000000 kernel.keys.root_maxbytes=25000000' : 'kernel.keys.maxkeys=2000 kernel.keys.maxbytes=200000'}\`), or find and unlink unused keys (\`keyctl show\`, \`cat /proc/keys\`)`,
  );
}
