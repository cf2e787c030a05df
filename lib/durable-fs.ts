// File I/O for the small metadata files the hooks keep (key metadata, slot
// state, the slot lock): how it is done, and when it is durable.
//
// A hook touches these files dozens of times in a row, on its critical path.
// Calls that only work in the page, inode and dentry caches (open, lstat,
// reads and writes of a few KB, rename, link, unlink, mkdir) are made
// synchronously: each costs a few microseconds, where a round trip through
// libuv's thread pool costs 20-150 µs. Calls that wait for the device (fsync,
// fdatasync) always go through the pool, so the event loop never waits for a
// flush. On a cold cache a synchronous call waits for a device read, so hooks
// on a volume first look their paths up through the pool, in parallel
// (volume/warm-cache.ts). Bulk or tenant-controlled trees (the tree remover,
// the blocker scan) stay fully asynchronous.
import { closeSync, constants, fdatasync, fsync, openSync, readSync, writeSync } from 'node:fs';
import { promisify } from 'node:util';

/** fsync(2) of an open descriptor, off the event loop. */
export const flushFile: (fd: number) => Promise<void> = promisify(fsync);

/** fdatasync(2) of an open descriptor, off the event loop. */
export const flushFileData: (fd: number) => Promise<void> = promisify(fdatasync);

/** A rename or a new name is only durable once its directory is fsynced. */
export async function fsyncDirectory(path: string): Promise<void> {
  const fd = openSync(path, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await flushFile(fd);
  } finally {
    closeSync(fd);
  }
}

/** Writes all of `bytes` at `position` (a write may be short). */
export function writeFully(fd: number, bytes: Uint8Array, position: number): void {
  for (let done = 0; done < bytes.length; ) done += writeSync(fd, bytes, done, bytes.length - done, position + done);
}

/** Reads from `position` until `buffer` is full or the file ends; returns the length read. */
export function readUpTo(fd: number, buffer: Buffer, position: number): number {
  let length = 0;
  for (let n; length < buffer.length && (n = readSync(fd, buffer, length, buffer.length - length, position + length)) > 0; ) length += n;
  return length;
}
