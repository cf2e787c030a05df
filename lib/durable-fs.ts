// File I/O for the small metadata files the hooks keep (key metadata, slot
// state, the slot lock): how it is done, and when it is durable.
//
// The rule: nothing that can wait for a slot's disk runs on the event loop
// (DESIGN invariant 9). Every call on a slot's filesystem (open, lstat,
// reads, writes, ftruncate, rename, link, unlink, mkdir, chmod, close, and
// the flushes) goes through libuv's thread pool (node:fs/promises), never a
// *Sync call. Even a call that usually only touches the page, inode and
// dentry caches can wait indefinitely: on a frozen filesystem (fsfreeze -f)
// every open for writing, write, ftruncate, mkdir, rename, link, unlink and
// chmod blocks until the thaw, and on a hung disk so does every read of
// uncached data. Made on the event loop, one such call would stall every
// other slot, the gRPC server and the health checks; made on the pool, it
// only holds one pool thread, and the hooks of the other slots go on (the
// thread-pool budget is in volume/thread-pool.ts).
//
// The cost is one pool round trip per call (20-150 µs here, where the same
// call made synchronously takes a few µs), and a hook makes dozens: a few
// milliseconds against the device flushes a hook waits for anyway. Calls
// that do not depend on each other are overlapped (Promise.all) where their
// order does not matter for crash safety; each such place says why.
//
// Calls on procfs (/proc/self/fdinfo, /proc/self/mountinfo, /proc/<pid>)
// may stay synchronous: procfs never waits for a disk.
//
// Secrets: reads go into a Buffer the caller allocated (FileHandle.read),
// never into one Node allocates or pools (fs.promises.readFile).
import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';

export type { FileHandle };

/** A rename or a new name is only durable once its directory is fsynced. */
export async function fsyncDirectory(path: string): Promise<void> {
  const handle = await open(path, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Runs `fn` with `handle`, then closes it whatever happened. */
export async function withHandle<T>(handle: FileHandle, fn: (handle: FileHandle) => Promise<T>): Promise<T> {
  try {
    return await fn(handle);
  } finally {
    await handle.close();
  }
}

/** Writes all of `bytes` at `position` (a write may be short). */
export async function writeFully(handle: FileHandle, bytes: Uint8Array, position: number): Promise<void> {
  for (let done = 0; done < bytes.length; ) done += (await handle.write(bytes, done, bytes.length - done, position + done)).bytesWritten;
}

/** Reads from `position` until `buffer` is full or the file ends; returns the length read. */
export async function readUpTo(handle: FileHandle, buffer: Buffer, position: number): Promise<number> {
  let length = 0;
  for (let n; length < buffer.length && (n = (await handle.read(buffer, length, buffer.length - length, position + length)).bytesRead) > 0; ) length += n;
  return length;
}
