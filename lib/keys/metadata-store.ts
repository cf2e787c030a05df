// Where a slot's key metadata lives on disk and how its files are read,
// written and destroyed. Knows paths, modes and durability; nothing about
// what the bytes mean.
//
//   <slot>/.fscrypt/                      0755, google/fscrypt's layout
//     policies/<identifier>               0600, PolicyData
//     protectors/<descriptor>             0600, ProtectorData (raw_key, custom_passphrase)
//   <slot>/.fscrypt-local/keys/           0700, ours (lib/volume owns the rest of .fscrypt-local)
//     protectors/<descriptor>             0600, KmsProtector: kept out of .fscrypt so
//                                         the stock tool never meets an unknown type
//     tmp/                                files being written (renamed into place)
//     erase/                              files being crypto-erased
//
// Writes are atomic and durable: a temp file in keys/tmp is written, fsynced,
// renamed over the target and the target's directory fsynced. Temp files
// live outside .fscrypt so a crash never leaves a stray file there for the
// stock tool to list as corrupt.
//
// Crypto-erase first moves (or hard-links) the file into keys/erase, which is
// atomic, then overwrites its blocks in place with random bytes, fsyncs,
// unlinks and fsyncs the directory. A crash half-way leaves either the
// intact file in place or a file in erase/ that the next sweep finishes;
// never a half-overwritten file where metadata is expected.
import { randomBytes, randomFillSync } from 'node:crypto';
import { constants, Stats } from 'node:fs';
import { chmod, link, lstat, mkdir, open, readdir, rename, unlink, type FileHandle } from 'node:fs/promises';
import { fsyncDirectory } from '../durable-fs.js';
import { dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { FscryptError } from '../kernel/index.js';
import { badMetadata } from './metadata-format.js';

export const FSCRYPT_DIR = '.fscrypt';
export const LOCAL_DIR = '.fscrypt-local';
const KEYS_SUBDIR = 'keys';

/** Names of metadata files: descriptors and identifiers, lower-case hex. */
export const PROTECTOR_FILE_NAME = /^[0-9a-f]{16}$/;
export const POLICY_FILE_NAME = /^(?:[0-9a-f]{16}|[0-9a-f]{32})$/;

export interface SlotLayout {
  root: string;
  fscryptDir: string;
  policiesDir: string;
  protectorsDir: string;
  localDir: string;
  keysDir: string;
  kmsProtectorsDir: string;
  tmpDir: string;
  eraseDir: string;
}

export function slotLayout(root: string): SlotLayout {
  const abs = resolve(root);
  const fscryptDir = join(abs, FSCRYPT_DIR);
  const localDir = join(abs, LOCAL_DIR);
  const keysDir = join(localDir, KEYS_SUBDIR);
  return {
    root: abs,
    fscryptDir,
    policiesDir: join(fscryptDir, 'policies'),
    protectorsDir: join(fscryptDir, 'protectors'),
    localDir,
    keysDir,
    kmsProtectorsDir: join(keysDir, 'protectors'),
    tmpDir: join(keysDir, 'tmp'),
    eraseDir: join(keysDir, 'erase'),
  };
}

const FILE_MODE = 0o600;
const FSCRYPT_DIR_MODE = 0o755; // what `fscrypt setup` makes (CheckSetup accepts it)
const LOCAL_DIR_MODE = 0o700;

function errnoCode(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code;
}

function unsafe(path: string, what: string): FscryptError {
  return new FscryptError(`refusing to use '${path}': ${what}. Metadata paths are never followed out of the slot; remove or fix it by hand`, {
    code: 'ERR_UNSAFE_PATH',
    path,
  });
}

function trustedOwner(uid: number): boolean {
  return uid === 0 || uid === process.geteuid?.();
}

/** A metadata directory must be a real directory that only its owner can change. */
function judgeDirectory(path: string, stat: Stats): void {
  if (stat.isSymbolicLink()) throw unsafe(path, 'it is a symbolic link');
  if (!stat.isDirectory()) throw unsafe(path, 'it is not a directory');
  if (!trustedOwner(stat.uid)) throw unsafe(path, `it is owned by uid ${stat.uid}, not root`);
  // fscrypt's --all-users setup makes the subdirectories 01777; the sticky
  // bit keeps other users from replacing our files there.
  if (stat.mode & 0o022 && !(stat.mode & 0o1000)) throw unsafe(path, 'it is writable by other users');
}

/** lstat, with a missing path as null and any other failure as the error itself (not thrown). */
async function lstatOrNull(path: string): Promise<Stats | null | Error> {
  try {
    return await lstat(path);
  } catch (error) {
    if (errnoCode(error) === 'ENOENT') return null;
    return error as Error;
  }
}

async function checkDirectory(path: string): Promise<boolean> {
  const stat = await lstatOrNull(path);
  if (stat === null) return false;
  if (stat instanceof Error) throw stat;
  judgeDirectory(path, stat);
  return true;
}

async function makeDirectory(path: string, mode: number): Promise<void> {
  if (await checkDirectory(path)) return;
  try {
    await mkdir(path, { mode });
  } catch (error) {
    if (errnoCode(error) !== 'EEXIST') throw error;
    await checkDirectory(path);
    return;
  }
  await chmod(path, mode); // the umask must not narrow what the stock tool expects
  await fsyncDirectory(join(path, '..'));
}

function tempName(tag: string): string {
  return `${tag}.${randomBytes(6).toString('hex')}.tmp`;
}

/** The file tag temp and erase files carry, so leftovers can be found by what they held. */
export function policyTag(identifier: string): string {
  return `policy.${identifier}`;
}
export function protectorTag(descriptor: string): string {
  return `protector.${descriptor}`;
}

export class MetadataStore {
  readonly layout: SlotLayout;

  constructor(root: string) {
    this.layout = slotLayout(root);
  }

  /** .fscrypt/{policies,protectors}, made as `fscrypt setup` makes them. */
  async ensureFscryptDirs(): Promise<void> {
    const { fscryptDir, policiesDir, protectorsDir } = this.layout;
    await this.ensureDirectories([fscryptDir, policiesDir, protectorsDir], FSCRYPT_DIR_MODE);
  }

  /** .fscrypt-local/keys/{protectors,tmp,erase}. */
  async ensureLocalDirs(): Promise<void> {
    const { localDir, keysDir, kmsProtectorsDir, tmpDir, eraseDir } = this.layout;
    await this.ensureDirectories([localDir, keysDir, kmsProtectorsDir, tmpDir, eraseDir], LOCAL_DIR_MODE);
  }

  /**
   * Makes each directory (parents first) that does not exist yet. Every
   * metadata write passes here, and the directories nearly always exist:
   * that case is one round of parallel lstats, each judged as checkChain
   * judges. Only a missing one is made, in order.
   */
  private async ensureDirectories(dirs: string[], mode: number): Promise<void> {
    const [root, ...stats] = await Promise.all([this.layout.root, ...dirs].map(lstatOrNull));
    if (root instanceof Stats && stats.every((stat) => stat instanceof Stats)) {
      if (!root.isDirectory()) throw unsafe(this.layout.root, 'a slot root must be a directory');
      for (const [i, dir] of dirs.entries()) judgeDirectory(dir, stats[i] as Stats);
      return;
    }
    await this.checkRoot();
    for (const dir of dirs) await makeDirectory(dir, mode);
  }

  /**
   * Checks every directory from the slot root down to `dir` (each a real,
   * root-owned directory others cannot write): a symlinked .fscrypt must not
   * lead reads or writes out of the slot. False when one does not exist.
   */
  async checkChain(dir: string): Promise<boolean> {
    const rel = relative(this.layout.root, dir);
    if (rel.startsWith('..') || isAbsolute(rel)) throw unsafe(dir, 'it is outside the slot');
    const dirs: string[] = [];
    let current = this.layout.root;
    for (const part of rel.split(sep).filter(Boolean)) dirs.push((current = join(current, part)));
    // All at once (this sits on the path of every volume unlock), judged in order.
    const stats = await Promise.all(dirs.map(lstatOrNull));
    for (const [i, stat] of stats.entries()) {
      if (stat === null) return false;
      if (stat instanceof Error) throw stat;
      judgeDirectory(dirs[i]!, stat);
    }
    return true;
  }

  private async checkRoot(): Promise<void> {
    let stat;
    try {
      stat = await lstat(this.layout.root);
    } catch (error) {
      throw new FscryptError(`slot '${this.layout.root}' does not exist (${errnoCode(error) ?? 'error'})`, {
        code: errnoCode(error) ?? 'ENOENT',
        path: this.layout.root,
        cause: error,
      });
    }
    if (!stat.isDirectory()) throw unsafe(this.layout.root, 'a slot root must be a directory');
  }

  /**
   * Names in a metadata directory that match `pattern`, sorted; [] when the
   * directory does not exist. Other names (fscrypt's .link files, its own
   * crashed temp files) are not ours to read and are skipped.
   */
  async list(dir: string, pattern: RegExp): Promise<string[]> {
    if (!(await this.checkChain(dir))) return [];
    const names = await readdir(dir);
    return names.filter((name) => pattern.test(name)).sort();
  }

  /** True when a metadata file exists (whatever it holds). */
  async exists(path: string): Promise<boolean> {
    if (!(await this.checkChain(dirname(path)))) return false;
    try {
      await lstat(path);
      return true;
    } catch (error) {
      if (errnoCode(error) === 'ENOENT') return false;
      throw error;
    }
  }

  /**
   * Reads a metadata file strictly: never through a symlink, only a regular
   * file owned by root (or us) that others cannot write, at most `maxBytes`.
   * Returns null when it does not exist.
   */
  async read(path: string, maxBytes: number): Promise<Buffer | null> {
    if (!(await this.checkChain(dirname(path)))) return null;
    let handle: FileHandle;
    try {
      // O_NONBLOCK: a FIFO planted here must not hang the reader.
      handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK | constants.O_NOCTTY);
    } catch (error) {
      const code = errnoCode(error);
      if (code === 'ENOENT') return null;
      if (code === 'ELOOP') throw badMetadata(path, 'it is a symbolic link');
      throw error;
    }
    try {
      // fstat and read together: one round trip to the thread pool instead
      // of two. The data is only used once the fstat checks have passed.
      const buffer = Buffer.alloc(maxBytes + 1);
      const [statResult, readResult] = await Promise.allSettled([handle.stat(), handle.read(buffer, 0, buffer.length, 0)]);
      if (statResult.status === 'rejected') throw statResult.reason;
      const stat = statResult.value;
      if (!stat.isFile()) throw badMetadata(path, 'it is not a regular file');
      if (!trustedOwner(stat.uid)) throw badMetadata(path, `it is owned by uid ${stat.uid}, not root`);
      if (stat.mode & 0o022) throw badMetadata(path, `it is writable by other users (mode ${(stat.mode & 0o7777).toString(8)})`);
      if (stat.size > maxBytes) throw badMetadata(path, `it is ${stat.size} bytes; metadata files are at most ${maxBytes}`);
      if (readResult.status === 'rejected') throw readResult.reason;
      // A regular file gives less than asked only at its end; a full buffer
      // means the file grew past the limit after the fstat.
      const length = readResult.value.bytesRead;
      if (length > maxBytes) throw badMetadata(path, `it is more than ${maxBytes} bytes`);
      return buffer.subarray(0, length);
    } finally {
      await handle.close();
    }
  }

  /** Writes `bytes` to a new temp file and makes it durable; returns its path. */
  async stage(tag: string, bytes: Uint8Array): Promise<string> {
    await this.ensureLocalDirs();
    const path = join(this.layout.tmpDir, tempName(tag));
    const handle = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, FILE_MODE);
    try {
      await handle.chmod(FILE_MODE);
      await handle.writeFile(bytes);
      await handle.sync();
    } catch (error) {
      await handle.close().catch(() => undefined);
      await unlink(path).catch(() => undefined);
      throw error;
    }
    await handle.close();
    return path;
  }

  /** Renames a staged file over `target` and makes the rename durable. */
  async commit(staged: string, target: string): Promise<void> {
    if (!(await this.checkChain(dirname(target)))) throw unsafe(dirname(target), 'it does not exist');
    await rename(staged, target);
    await fsyncDirectory(join(target, '..'));
  }

  /** stage() + commit(): an atomic, durable replacement of `target`. */
  async writeAtomic(target: string, tag: string, bytes: Uint8Array): Promise<void> {
    const staged = await this.stage(tag, bytes);
    try {
      await this.commit(staged, target);
    } catch (error) {
      await unlink(staged).catch(() => undefined);
      throw error;
    }
  }

  /**
   * Moves `path` into erase/ (atomically: it is gone from its directory, or
   * still there intact). Returns false when there was nothing to move.
   */
  async moveToErase(path: string, tag: string): Promise<boolean> {
    const [inChain, stat] = await Promise.all([this.checkChain(dirname(path)), lstatOrNull(path), this.ensureLocalDirs()]);
    if (!inChain || stat === null) return false;
    if (stat instanceof Error) throw stat;
    // Only files are metadata; erase/ must never receive a directory tree.
    if (stat.isDirectory()) throw badMetadata(path, 'it is a directory');
    try {
      await rename(path, join(this.layout.eraseDir, `${tag}.${randomBytes(6).toString('hex')}`));
    } catch (error) {
      if (errnoCode(error) === 'ENOENT') return false;
      throw error;
    }
    // One journal commit holds both directories' changes: the two fsyncs share it.
    await Promise.all([fsyncDirectory(dirname(path)), fsyncDirectory(this.layout.eraseDir)]);
    return true;
  }

  /**
   * Adds a second name for `path` in erase/, so that once `path` is replaced
   * by a rename the old blocks can still be overwritten.
   */
  async linkToErase(path: string, tag: string): Promise<void> {
    if (!(await this.checkChain(dirname(path)))) throw unsafe(dirname(path), 'it does not exist');
    await this.ensureLocalDirs();
    await link(path, join(this.layout.eraseDir, `${tag}.${randomBytes(6).toString('hex')}`));
    await fsyncDirectory(this.layout.eraseDir);
  }

  /**
   * Crypto-erases the leftovers of one metadata file (`tag`): its files in
   * erase/, and its temp files (a crashed write). Only its own: a sweep must
   * not erase a file another call, holding another file's lock, has just
   * linked into erase/ and is about to rename over.
   */
  async sweep(tag: string): Promise<number> {
    const leftovers = async (dir: string) => (await this.list(dir, /^[^.]/)).filter((name) => name.startsWith(`${tag}.`)).map((name) => join(dir, name));
    const paths = (await Promise.all([leftovers(this.layout.eraseDir), leftovers(this.layout.tmpDir)])).flat();
    // A file with a second name in erase/ is only unlinked by eraseFile (its
    // blocks are still in use); erasing names in order leaves the last name
    // of such a pair to be overwritten.
    let erased = 0;
    for (const path of paths) if (await eraseFile(path)) erased++;
    return erased;
  }
}

/**
 * Overwrites a file's blocks in place with random bytes, fsyncs, unlinks it
 * and fsyncs its directory. A file that still has another name (the live
 * copy of a rename not yet done) is only unlinked: its data is still in use.
 * Returns false when the file was already gone.
 */
export async function eraseFile(path: string): Promise<boolean> {
  let handle: FileHandle;
  try {
    handle = await open(path, constants.O_WRONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (error) {
    if (errnoCode(error) === 'ENOENT') return false;
    if (errnoCode(error) === 'ELOOP') {
      await unlink(path);
      return true;
    }
    throw error;
  }
  try {
    const stat = await handle.stat();
    if (stat.isFile() && stat.nlink === 1 && stat.size > 0) {
      const noise = randomFillSync(Buffer.alloc(stat.size));
      await handle.write(noise, 0, noise.length, 0);
      // The same blocks, the same size: fdatasync puts the noise on the disk
      // without a journal commit for the mtime, which nothing needs.
      await handle.datasync();
    }
  } finally {
    await handle.close();
  }
  try {
    await unlink(path);
  } catch (error) {
    if (errnoCode(error) === 'ENOENT') return false;
    throw error;
  }
  await fsyncDirectory(join(path, '..'));
  return true;
}

// One writer at a time per metadata file of a slot within this process:
// updates are read-modify-write, and a file's sweep must not erase what
// another call on the same file is about to rename. Different files go
// ahead together (a recycle destroys one policy while committing another);
// sweeps only ever touch their own file's leftovers. (Across processes,
// lib/volume holds its slot lock.)
const fileQueues = new Map<string, Promise<unknown>>();

/** The lock every protector operation takes (creating one must see all the others). */
export const PROTECTORS_LOCK = 'protectors';

export async function withMetadataLock<T>(root: string, tag: string, fn: () => Promise<T>): Promise<T> {
  const key = `${resolve(root)}\0${tag}`;
  const previous = fileQueues.get(key) ?? Promise.resolve();
  const run = previous.then(fn, fn);
  const tail = run.catch(() => undefined);
  fileQueues.set(key, tail);
  try {
    return await run;
  } finally {
    if (fileQueues.get(key) === tail) fileQueues.delete(key);
  }
}
