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
import { constants, type Stats } from 'node:fs';
import { chmod, link, lstat, mkdir, open, readdir, rename, unlink, type FileHandle } from 'node:fs/promises';
import { fsyncDirectory, readUpTo, withHandle, writeFully } from '../durable-fs.js';
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

/** A metadata entry skipped because it is not ours, and why. */
export interface IgnoredEntry {
  path: string;
  reason: string;
}

/**
 * Why an entry of a metadata directory is not ours, or undefined when it may
 * be. `fscrypt setup --all-users` makes .fscrypt/protectors and policies
 * 01777, so any local user can put anything there: a file, a FIFO, a
 * symlink, a hard link to someone else's file. Such an entry must neither
 * block us (one bad file used to fail every listing, and so init-slot) nor
 * ever be read as ours, so it is judged by lstat before anything opens it.
 * A file we made is a regular file owned by root (or this process's user);
 * nobody else can create one, and the sticky bit stops others from renaming
 * or deleting ours.
 */
function foreignEntry(stat: Stats): string | undefined {
  if (stat.isSymbolicLink()) return `it is a symbolic link owned by uid ${stat.uid}`;
  if (!stat.isFile()) return `it is not a regular file (owned by uid ${stat.uid})`;
  if (!trustedOwner(stat.uid)) return `it is owned by uid ${stat.uid}, not root`;
  return undefined;
}

// Every call goes through the thread pool, never the event loop: see
// durable-fs.ts.

/** lstat, with a missing path as null. */
async function lstatOrNull(path: string): Promise<Stats | null> {
  try {
    return await lstat(path);
  } catch (error) {
    if (errnoCode(error) === 'ENOENT') return null;
    throw error;
  }
}

/** What a parallel lstat found: a stat, null (ENOENT), or the error it met, for whoever uses the result. */
type Lookup = Stats | null | { error: unknown };

/** The result of a lookup, its error thrown only now that it is used. */
function found(lookup: Lookup): Stats | null {
  if (lookup !== null && 'error' in lookup) throw lookup.error;
  return lookup;
}

/** Judges what lstat found at `path` as a metadata directory; false when nothing is there. */
function judgedDirectory(path: string, lookup: Lookup): boolean {
  const stat = found(lookup);
  if (stat === null) return false;
  judgeDirectory(path, stat);
  return true;
}

async function checkDirectory(path: string): Promise<boolean> {
  return judgedDirectory(path, await lstatOrNull(path));
}

/** Makes `path` unless `lookup` (its lstat) shows it exists, which is then judged. */
async function makeDirectory(path: string, mode: number, lookup: Lookup): Promise<void> {
  if (judgedDirectory(path, lookup)) return;
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

/**
 * lstat of every path at once: one pool round instead of one per path.
 * Only lookups (no open, no change), so their order does not matter. The
 * results are then judged in order, as the calls one by one were: a path
 * under a directory that turns out to be bad is looked up through it, but
 * its result (or its error: ENOTDIR, ELOOP) is never used.
 */
function lstatAll(paths: string[]): Promise<Lookup[]> {
  return Promise.all(paths.map((path) => lstatOrNull(path).catch((error: unknown) => ({ error }))));
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

  /** `onIgnored` hears of every entry skipped as not ours (list, owns, moveToErase). */
  constructor(
    root: string,
    private readonly onIgnored: (entry: IgnoredEntry) => void = () => {},
  ) {
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
   * Makes each directory (parents first) that does not exist yet, and
   * judges each that does as checkChain does.
   */
  private async ensureDirectories(dirs: string[], mode: number): Promise<void> {
    // Looked up together with the root (usually they all exist: one round);
    // then judged, or made, one by one, parents first, as before.
    const [lookups] = await Promise.all([lstatAll(dirs), this.checkRoot()]);
    for (const [i, dir] of dirs.entries()) await makeDirectory(dir, mode, lookups[i]!);
  }

  /**
   * Checks every directory from the slot root down to `dir` (each a real,
   * root-owned directory others cannot write): a symlinked .fscrypt must not
   * lead reads or writes out of the slot. False when one does not exist.
   */
  private async checkChain(dir: string): Promise<boolean> {
    return this.judgeChain(dir, await lstatAll(this.chain(dir)));
  }

  /** The directories from the slot root (exclusive) down to `dir`. */
  private chain(dir: string): string[] {
    const rel = relative(this.layout.root, dir);
    if (rel.startsWith('..') || isAbsolute(rel)) throw unsafe(dir, 'it is outside the slot');
    const dirs: string[] = [];
    let current = this.layout.root;
    for (const part of rel.split(sep).filter(Boolean)) dirs.push((current = join(current, part)));
    return dirs;
  }

  /** checkChain on lstat results already in hand, judged from the top down. */
  private judgeChain(dir: string, lookups: Lookup[]): boolean {
    const dirs = this.chain(dir);
    for (const [i, path] of dirs.entries()) if (!judgedDirectory(path, lookups[i]!)) return false;
    return true;
  }

  /**
   * checkChain(dirname(path)) and lstat(path) in one pool round (lookups
   * only: see lstatAll); the entry is null when the chain is incomplete.
   */
  private async chainAndEntry(path: string): Promise<{ chain: boolean; entry: Stats | null }> {
    const dirs = this.chain(dirname(path));
    const lookups = await lstatAll([...dirs, path]);
    const chain = this.judgeChain(dirname(path), lookups.slice(0, dirs.length));
    return { chain, entry: chain ? found(lookups[dirs.length]!) : null };
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

  /**
   * The entries of a shared metadata directory (.fscrypt/protectors,
   * .fscrypt/policies, keys/protectors) matching `pattern` that may be ours,
   * sorted, and those skipped (foreignEntry), each also told to onIgnored.
   * A regular file of ours with more than one link is skipped too (a hard
   * link makes another file, maybe root's, appear under a metadata name),
   * unless every other link is in keys/erase/: those are ours, made while a
   * rotation or a policy rewrite is under way or was interrupted.
   */
  async listOwned(dir: string, pattern: RegExp): Promise<{ names: string[]; ignored: IgnoredEntry[] }> {
    const names: string[] = [];
    const ignored: IgnoredEntry[] = [];
    let eraseLinks: Map<string, number> | undefined;
    const listed = await this.list(dir, pattern);
    // Lookups only, judged in order below: see lstatAll.
    const lookups = await lstatAll(listed.map((name) => join(dir, name)));
    for (const [i, name] of listed.entries()) {
      const path = join(dir, name);
      const stat = found(lookups[i]!);
      if (stat === null) continue; // gone meanwhile
      let reason = foreignEntry(stat);
      if (reason === undefined && stat.nlink > 1) {
        eraseLinks ??= await this.eraseLinkCounts();
        if (stat.nlink - 1 > (eraseLinks.get(`${stat.dev}:${stat.ino}`) ?? 0)) reason = `it has ${stat.nlink} hard links (another name elsewhere)`;
      }
      if (reason === undefined) {
        names.push(name);
      } else {
        const entry = { path, reason };
        ignored.push(entry);
        this.onIgnored(entry);
      }
    }
    return { names, ignored };
  }

  /** How many names in keys/erase/ each inode has. */
  private async eraseLinkCounts(): Promise<Map<string, number>> {
    const counts = new Map<string, number>();
    if (!(await this.checkChain(this.layout.eraseDir))) return counts;
    const names = await readdir(this.layout.eraseDir);
    const lookups = await lstatAll(names.map((name) => join(this.layout.eraseDir, name)));
    for (const lookup of lookups) {
      const stat = found(lookup);
      if (stat === null || !stat.isFile()) continue;
      const key = `${stat.dev}:${stat.ino}`;
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
    return counts;
  }

  /** True when a metadata file exists (whatever it holds, whoever made it): a name taken. */
  async exists(path: string): Promise<boolean> {
    const { chain, entry } = await this.chainAndEntry(path);
    return chain && entry !== null;
  }

  /** True when `path` is a file that may be ours (foreignEntry); another user's entry there is reported and is not. */
  async owns(path: string): Promise<boolean> {
    const { chain, entry: stat } = await this.chainAndEntry(path);
    if (!chain || stat === null) return false;
    const reason = foreignEntry(stat);
    if (reason !== undefined) this.onIgnored({ path, reason });
    return reason === undefined;
  }

  /**
   * Reads a metadata file strictly: never through a symlink, only a regular
   * file owned by root (or us) that others cannot write, at most `maxBytes`.
   * Returns null when it does not exist.
   */
  async read(path: string, maxBytes: number): Promise<Buffer | null> {
    // Judged before it is opened: another user's entry is never opened at all.
    const { chain, entry } = await this.chainAndEntry(path);
    if (!chain || entry === null) return null;
    const foreign = foreignEntry(entry);
    if (foreign !== undefined) throw badMetadata(path, foreign);
    let opened: FileHandle;
    try {
      // O_NONBLOCK: a FIFO planted here must not hang the reader (nor hold a pool thread for good).
      opened = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK | constants.O_NOCTTY);
    } catch (error) {
      const code = errnoCode(error);
      if (code === 'ENOENT') return null;
      if (code === 'ELOOP') throw badMetadata(path, 'it is a symbolic link');
      throw error;
    }
    return withHandle(opened, async (handle) => {
      const stat = await handle.stat();
      if (!stat.isFile()) throw badMetadata(path, 'it is not a regular file');
      if (!trustedOwner(stat.uid)) throw badMetadata(path, `it is owned by uid ${stat.uid}, not root`);
      if (stat.mode & 0o022) throw badMetadata(path, `it is writable by other users (mode ${(stat.mode & 0o7777).toString(8)})`);
      if (stat.size > maxBytes) throw badMetadata(path, `it is ${stat.size} bytes; metadata files are at most ${maxBytes}`);
      // A regular file gives less than asked only at its end; a full buffer
      // means the file grew past the limit after the fstat.
      const buffer = Buffer.alloc(maxBytes + 1);
      const length = await readUpTo(handle, buffer, 0);
      if (length > maxBytes) throw badMetadata(path, `it is more than ${maxBytes} bytes`);
      return buffer.subarray(0, length);
    });
  }

  /** Writes `bytes` to a new temp file and makes it durable; returns its path. */
  async stage(tag: string, bytes: Uint8Array): Promise<string> {
    await this.ensureLocalDirs();
    const path = join(this.layout.tmpDir, tempName(tag));
    const opened = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, FILE_MODE);
    try {
      await withHandle(opened, async (handle) => {
        // The mode and the bytes in one round: a temp file counts only once
        // fsynced, so their order does not matter.
        await Promise.all([handle.chmod(FILE_MODE), writeFully(handle, bytes, 0)]);
        await handle.sync();
      });
    } catch (error) {
      await unlink(path).catch(() => undefined); // or already gone
      throw error;
    }
    return path;
  }

  /** Renames a staged file over `target` and makes the rename durable. */
  async commit(staged: string, target: string): Promise<void> {
    if (!(await this.checkChain(dirname(target)))) throw unsafe(dirname(target), 'it does not exist');
    await rename(staged, target);
    await fsyncDirectory(dirname(target));
  }

  /** stage() + commit(): an atomic, durable replacement of `target`. */
  async writeAtomic(target: string, tag: string, bytes: Uint8Array): Promise<void> {
    const staged = await this.stage(tag, bytes);
    try {
      await this.commit(staged, target);
    } catch (error) {
      await unlink(staged).catch(() => undefined); // committed after all, or already gone
      throw error;
    }
  }

  /**
   * Moves `path` into erase/ (atomically: it is gone from its directory, or
   * still there intact). Returns false when there was nothing to move.
   */
  async moveToErase(path: string, tag: string): Promise<boolean> {
    const { chain, entry: stat } = await this.chainAndEntry(path);
    if (!chain || stat === null) return false;
    // Another user's entry under the name (a policy's name is public once
    // listed, so one can be planted after it is destroyed) is not ours to
    // move or overwrite, and must not make the erase fail: left alone.
    const foreign = foreignEntry(stat);
    if (foreign !== undefined && !trustedOwner(stat.uid)) {
      this.onIgnored({ path, reason: foreign });
      return false;
    }
    // Only files are metadata; erase/ must never receive a directory tree.
    if (stat.isDirectory()) throw badMetadata(path, 'it is a directory');
    await this.ensureLocalDirs();
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
   * The tags of the files in keys/tmp or keys/erase (names are
   * `<kind>.<id>.<random>[.tmp]`, tag `<kind>.<id>`), each once.
   */
  async leftoverTags(which: 'tmp' | 'erase'): Promise<{ tag: string; id: string }[]> {
    const dir = which === 'tmp' ? this.layout.tmpDir : this.layout.eraseDir;
    const seen = new Map<string, string>();
    for (const name of await this.list(dir, /^(?:policy|protector)\.[0-9a-f]+\./)) {
      const [kind, id] = name.split('.') as [string, string];
      seen.set(`${kind}.${id}`, id);
    }
    return [...seen].map(([tag, id]) => ({ tag, id }));
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
  let opened: FileHandle;
  try {
    opened = await open(path, constants.O_WRONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (error) {
    if (errnoCode(error) === 'ENOENT') return false;
    if (errnoCode(error) === 'ELOOP') {
      await unlink(path);
      return true;
    }
    throw error;
  }
  await withHandle(opened, async (handle) => {
    const stat = await handle.stat();
    if (stat.isFile() && stat.nlink === 1 && stat.size > 0) {
      await writeFully(handle, randomFillSync(Buffer.alloc(stat.size)), 0);
      // The same blocks, the same size: fdatasync puts the noise on the disk
      // without a journal commit for the mtime, which nothing needs.
      await handle.datasync();
    }
  });
  try {
    await unlink(path);
  } catch (error) {
    if (errnoCode(error) === 'ENOENT') return false;
    throw error;
  }
  await fsyncDirectory(dirname(path));
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
