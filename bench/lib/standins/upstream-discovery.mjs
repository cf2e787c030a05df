// A model of the upstream provisioner's discovery pass
// (sig-storage-local-static-provisioner, pkg/discovery; see
// /work/shared/reference/local-static-provisioner.md §1), as the anchor the
// node agent's cold start is read against. It does what one pass does for a
// Filesystem class, in the same order, one entry after another:
//
//   the StorageClass read (reclaim policy, mount options), the mount table
//   read once, mountDir listed (first level); then for each entry: the name
//   pattern, a stat (directory or block device), the PV name (local-pv-<FNV-1a
//   32 of name + node + class>), the cache check, the mount-point check
//   against the table, statfs for the capacity (rounded as upstream), and
//   the PV created, awaiting each create before the next.
//
// It uses the same client as the agent (@kubernetes/client-node) against the
// same fake API server, so the two differ by what they do, not by their
// HTTP stacks. What it leaves out is what upstream's Go client adds, above
// all client-go's default client-side rate limit (5 requests/s, burst 10),
// which upstream's client setup does not raise: the caller can state what that
// would add (rateLimitedSeconds), it is not slept here.
import { readdir, readFile, stat, statfs } from 'node:fs/promises';
import { join } from 'node:path';

/** Upstream's default --discovery-period: a pass, then a sleep this long, then the next pass. */
export const UPSTREAM_DISCOVERY_PERIOD_MS = 10_000;
/** client-go's rest.DefaultQPS and rest.DefaultBurst. */
export const CLIENT_GO_DEFAULT_QPS = 5;
export const CLIENT_GO_DEFAULT_BURST = 10;

const MIB = 1024 ** 2;
const GIB = 1024 ** 3;

function fnv1a32(text) {
  let hash = 0x811c9dc5;
  for (const byte of Buffer.from(text, 'utf8')) {
    hash ^= byte;
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash;
}

/** Upstream's capacity rounding: whole GiB from 10 GiB, whole MiB from 10 MiB, else bytes. */
function roundedCapacity(bytes) {
  if (bytes >= 10 * GIB) return `${Math.floor(bytes / GIB)}Gi`;
  if (bytes >= 10 * MIB) return `${Math.floor(bytes / MIB)}Mi`;
  return String(bytes);
}

/** Mount points in this process's mount table (octal escapes of mountinfo decoded). */
async function mountPoints() {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  const points = new Set();
  for (const line of text.split('\n')) {
    const field = line.split(' ')[4];
    if (field) points.add(field.replace(/\\([0-7]{3})/g, (_, octal) => String.fromCharCode(parseInt(octal, 8))));
  }
  return points;
}

/**
 * Seconds that client-go's default rate limiter would hold `requests`
 * requests made back to back (a token bucket of BURST, refilled at QPS).
 */
export function rateLimitedSeconds(requests) {
  return Math.max(0, requests - CLIENT_GO_DEFAULT_BURST) / CLIENT_GO_DEFAULT_QPS;
}

/**
 * One discovery pass over `mountDir` for `className`. `core` and `storage`
 * are client-node CoreV1Api and StorageV1Api clients. Returns
 * { created, skipped, requests, ms } (ms from the StorageClass read to the
 * last create's answer).
 */
export async function upstreamDiscoveryPass({ core, storage, nodeName, nodeUid, className, hostDir, mountDir, cache = new Set() }) {
  const start = process.hrtime.bigint();
  let requests = 0;
  const sc = await storage.readStorageClass({ name: className });
  requests++;
  const reclaimPolicy = sc.reclaimPolicy ?? 'Delete';
  const table = await mountPoints();
  const entries = await readdir(mountDir);
  const provisioner = `local-volume-provisioner-${nodeName}-${nodeUid}`;
  let created = 0;
  const skipped = [];
  for (const name of entries) {
    // namePattern '*' (the default) matches every name, .fscrypt and lost+found included.
    const path = join(mountDir, name);
    const info = await stat(path);
    if (!info.isDirectory() && !info.isBlockDevice()) {
      skipped.push(`${name}: not a directory nor block device`);
      continue;
    }
    const pvName = `local-pv-${fnv1a32(name + nodeName + className).toString(16)}`;
    if (cache.has(pvName)) continue;
    if (!table.has(path)) {
      skipped.push(`${name}: is not a valid mount point`);
      continue;
    }
    const fs = await statfs(path);
    await core.createPersistentVolume({
      body: {
        apiVersion: 'v1',
        kind: 'PersistentVolume',
        metadata: { name: pvName, labels: { 'bench.fscrypt-local.github.io/model': 'upstream' }, annotations: { 'pv.kubernetes.io/provisioned-by': provisioner } },
        spec: {
          capacity: { storage: roundedCapacity(fs.blocks * fs.bsize) },
          local: { path: join(hostDir, name) },
          accessModes: ['ReadWriteOnce'],
          persistentVolumeReclaimPolicy: reclaimPolicy,
          storageClassName: className,
          volumeMode: 'Filesystem',
          ...(sc.mountOptions?.length ? { mountOptions: sc.mountOptions } : {}),
          nodeAffinity: { required: { nodeSelectorTerms: [{ matchExpressions: [{ key: 'kubernetes.io/hostname', operator: 'In', values: [nodeName] }] }] } },
        },
      },
    });
    requests++;
    cache.add(pvName);
    created++;
  }
  return { created, skipped, requests, ms: Number(process.hrtime.bigint() - start) / 1e6 };
}
