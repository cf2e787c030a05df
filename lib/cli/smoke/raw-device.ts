// Looking at what is really on the disk: scanning a whole image file, or
// the blocks of one file read straight from the block device (their
// physical extents from FIEMAP, via `filefrag -e -v`, read with O_DIRECT
// so the page cache cannot answer instead of the disk).
import { open, readFile, stat } from 'node:fs/promises';
import { findMount } from '../../kernel/index.js';
import { runTool } from './tools.js';

const CHUNK = 4 * 1024 * 1024;

/** Which of `needles` occur anywhere in the file (streamed; a needle may straddle chunks). */
export async function scanFile(path: string, needles: Buffer[]): Promise<boolean[]> {
  const found = needles.map(() => false);
  const overlap = Math.max(...needles.map((n) => n.length)) - 1;
  const handle = await open(path, 'r');
  try {
    const buffer = Buffer.alloc(CHUNK + overlap);
    let carried = 0;
    let position = 0;
    for (;;) {
      const { bytesRead } = await handle.read(buffer, carried, CHUNK, position);
      if (bytesRead === 0) break;
      position += bytesRead;
      const window = buffer.subarray(0, carried + bytesRead);
      needles.forEach((needle, i) => {
        if (!found[i] && window.includes(needle)) found[i] = true;
      });
      carried = Math.min(overlap, window.length);
      window.copyWithin(0, window.length - carried);
    }
  } finally {
    await handle.close();
  }
  return found;
}

export interface Extent {
  /** First physical block. */
  physical: number;
  /** Blocks. */
  length: number;
}

/** A file's physical extents in filesystem blocks, from FIEMAP. */
export async function fileExtents(path: string): Promise<{ blockSize: number; extents: Extent[] }> {
  const { stdout } = await runTool('filefrag', ['-e', '-v', path]);
  const size = /blocks? of (\d+) bytes/.exec(stdout);
  const blockSize = size ? Number(size[1]) : 4096;
  const extents: Extent[] = [];
  for (const line of stdout.split('\n')) {
    const m = /^\s*\d+:\s*\d+\.\.\s*\d+:\s*(\d+)\.\.\s*(\d+):\s*(\d+):(.*)$/.exec(line);
    if (!m) continue;
    if (/unknown_loc|delalloc|inline|encoded/.test(m[4] ?? '')) {
      throw new Error(`the extents of ${path} have no plain physical location (${(m[4] ?? '').trim()})`);
    }
    extents.push({ physical: Number(m[1]), length: Number(m[3]) });
  }
  return { blockSize, extents };
}

/** The block device a path's filesystem is on, from its mount's major:minor (works for /dev/root too). */
export async function blockDeviceOf(path: string): Promise<string | undefined> {
  const mount = await findMount(path);
  if (!mount) return undefined;
  const uevent = await readFile(`/sys/dev/block/${mount.device}/uevent`, 'utf8').catch(() => '');
  const name = /^DEVNAME=(.+)$/m.exec(uevent)?.[1];
  if (name === undefined) return undefined;
  const device = `/dev/${name}`;
  const info = await stat(device).catch(() => undefined);
  return info?.isBlockDevice() ? device : undefined;
}

/** The bytes of some extents, read from the device with O_DIRECT (dd iflag=direct). */
export async function readExtents(device: string, blockSize: number, extents: Extent[]): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (const extent of extents) {
    const { stdoutBytes } = await runTool(
      'dd',
      [`if=${device}`, 'iflag=direct', `bs=${blockSize}`, `skip=${extent.physical}`, `count=${extent.length}`, 'status=none'],
      { encoding: 'buffer' },
    );
    parts.push(stdoutBytes ?? Buffer.alloc(0));
  }
  return Buffer.concat(parts);
}
