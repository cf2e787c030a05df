// A slot's capacity as the upstream provisioner states it: the statfs size
// of its filesystem, rounded down to whole GiB from 10 GiB up, to whole MiB
// from 10 MiB up, else in bytes, so a PV moved between the two provisioners
// states the same size.
import { statfs } from 'node:fs/promises';

const MIB = 1024 ** 2;
const GIB = 1024 ** 3;

/** A Kubernetes quantity for a size in bytes, with the upstream rounding. */
export function capacityQuantity(bytes: number): string {
  if (!Number.isSafeInteger(bytes) || bytes < 0) throw new TypeError(`a capacity is a whole number of bytes, got ${String(bytes)}`);
  if (bytes >= 10 * GIB) return `${Math.floor(bytes / GIB)}Gi`;
  if (bytes >= 10 * MIB) return `${Math.floor(bytes / MIB)}Mi`;
  return String(bytes);
}

/** The total size of the filesystem holding `path`, in bytes. */
export async function filesystemBytes(path: string): Promise<number> {
  const stats = await statfs(path);
  return stats.blocks * stats.bsize;
}
