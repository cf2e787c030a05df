// Which directories are slots, by the upstream provisioner's rules: the
// first-level entries of a class's mountDir whose names match its
// namePattern and that are mount points. A plain directory never is: an
// unmounted disk must not become a volume on the root filesystem, and a
// mount point is the operator's "this one is ready" (upstream's FAQ).
//
// Unlike upstream, an entry that is not a mount point (lost+found, a disk not
// yet mounted) is reported once per pass as skipped, not as an error on
// every pass; symbolic links are skipped too (a slot is resolved only as the
// directory it is, DESIGN invariant 7).
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { isMountPoint } from '../../volume/index.js';

export interface DiscoveryClass {
  className: string;
  mountDir: string;
  matches(name: string): boolean;
}

export interface DiscoveredSlot {
  className: string;
  /** The entry's name under mountDir (and hostDir). */
  name: string;
  /** The slot root as the agent sees it: mountDir/name. */
  root: string;
}

export interface SkippedEntry {
  className: string;
  name: string;
  why: string;
}

export interface DiscoveryResult {
  slots: DiscoveredSlot[];
  skipped: SkippedEntry[];
  /** Classes whose mountDir could not be listed, with why. */
  failed: { className: string; why: string }[];
}

export async function discoverSlots(classes: readonly DiscoveryClass[]): Promise<DiscoveryResult> {
  const result: DiscoveryResult = { slots: [], skipped: [], failed: [] };
  await Promise.all(
    classes.map(async (c) => {
      let entries;
      try {
        entries = await readdir(c.mountDir, { withFileTypes: true });
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        result.failed.push({
          className: c.className,
          why: code === 'ENOENT' ? `${c.mountDir} does not exist (is the class's hostDir mounted into the agent's container?)` : `cannot list ${c.mountDir}: ${(error as Error).message}`,
        });
        return;
      }
      await Promise.all(
        entries
          .filter((entry) => c.matches(entry.name))
          .map(async (entry) => {
            const root = join(c.mountDir, entry.name);
            if (entry.isSymbolicLink()) return void result.skipped.push({ className: c.className, name: entry.name, why: 'a symbolic link (a slot must be a mount point itself)' });
            if (!entry.isDirectory()) return void result.skipped.push({ className: c.className, name: entry.name, why: 'not a directory' });
            const mounted = await isMountPoint(root).catch(() => false);
            if (!mounted) return void result.skipped.push({ className: c.className, name: entry.name, why: 'not a mount point (mount a filesystem or bind-mount a directory there)' });
            result.slots.push({ className: c.className, name: entry.name, root });
          }),
      );
    }),
  );
  const order = (a: { className: string; name: string }, b: { className: string; name: string }) => a.className.localeCompare(b.className) || a.name.localeCompare(b.name);
  result.slots.sort(order);
  result.skipped.sort(order);
  return result;
}
