// open(2) flags that Node's fs.constants lacks. Their values differ between
// architectures (O_PATH is 0o10000000 on x86-64 and arm64 but 0o20000000 on
// parisc, 0o40000000 on alpha), so they come from the addon, which has the C
// library's <fcntl.h>, rather than being written out here.
import { native } from './binding.js';

export interface OpenFlags {
  /**
   * Open a name without opening the file: no ENOKEY on a locked encrypted
   * file, no blocking on a FIFO, no device open. The fd serves fstat,
   * /proc/self/fd and /proc/self/fdinfo, not read() or ioctl().
   */
  readonly O_PATH: number;
}

/**
 * This platform's values, read from the addon on first use (so importing the
 * package does not load the addon).
 */
export const OPEN_FLAGS: OpenFlags = Object.freeze({
  get O_PATH(): number {
    return native().constants.O_PATH;
  },
});
