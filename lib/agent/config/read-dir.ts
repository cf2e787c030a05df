// The config directory, read as upstream reads it: every entry that is not
// a directory and not `..data` is one ConfigMap key, its name the key and
// its content the value; symlinks are followed. That is the layout kubelet
// gives a mounted ConfigMap:
//
//   ..2026_05_01_10_00_00.123456789/   the current generation (a directory)
//   ..data -> ..2026_05_01_10_00_00.123456789
//   storageClassMap -> ..data/storageClassMap
//
// kubelet updates it by writing a new generation and renaming a new `..data`
// link over the old one, so a read that straddles the swap could mix two
// generations: the `..data` link is read before and after, and the whole
// directory read again if it moved. Names starting with `..` are kubelet's
// (a ConfigMap key cannot start with `..`) and skipped, like `..data_tmp`
// during a swap. Where upstream would crash (a FIFO, a link to a
// directory, a key removed mid-read) the entry is skipped with a warning.
import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { open, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { ConfigError } from './config-error.js';
import type { ConfigWarning } from './types.js';

/** A ConfigMap holds at most 1 MiB in all: a bigger file is not a ConfigMap key. */
export const MAX_FILE_BYTES = 1024 * 1024;
const SWAP_RETRIES = 5;

export interface ConfigFile {
  name: string;
  text: string;
}

export interface ConfigSnapshot {
  dir: string;
  /** Sorted by name. */
  files: ConfigFile[];
  /** sha256 of the names and contents. */
  digest: string;
  warnings: ConfigWarning[];
}

function errnoOf(error: unknown): string {
  return (error as NodeJS.ErrnoException | null)?.code ?? 'EIO';
}

function directoryProblem(dir: string, error: unknown): ConfigError {
  const code = errnoOf(error);
  const remedy = 'mount the ConfigMap there, or pass --config DIR (env FSCRYPT_LOCAL_CONFIG)';
  const why =
    code === 'ENOENT'
      ? `the config directory does not exist: ${remedy}`
      : code === 'ENOTDIR'
        ? `the config path is not a directory: ${remedy}`
        : code === 'EACCES' || code === 'EPERM'
          ? 'the config directory cannot be read (permission denied): run the agent as root, or fix the mount'
          : `the config directory cannot be read (${code})`;
  return new ConfigError([{ file: dir, key: '', why }]);
}

async function dataLink(dir: string): Promise<string | undefined> {
  try {
    return await readlink(join(dir, '..data'));
  } catch {
    return undefined;
  }
}

type Read = { file: ConfigFile } | { warning: ConfigWarning } | { skip: true };

async function readEntry(dir: string, name: string): Promise<Read> {
  let handle;
  try {
    // O_NONBLOCK: a FIFO put here must not hang the agent's reload.
    handle = await open(join(dir, name), constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
  } catch (error) {
    const code = errnoOf(error);
    if (code === 'ENOENT') {
      return { warning: { file: name, key: '', message: 'gone or a symbolic link to nothing (a key being removed by an update?): skipped' } };
    }
    throw new ConfigError([{ file: name, key: '', why: `cannot be read (${code})` }]);
  }
  try {
    const stat = await handle.stat();
    if (stat.isDirectory()) return { warning: { file: name, key: '', message: 'a link to a directory: skipped (only files are keys; upstream would fail on it)' } };
    if (!stat.isFile()) return { warning: { file: name, key: '', message: 'not a regular file: skipped' } };
    if (stat.size > MAX_FILE_BYTES) throw new ConfigError([{ file: name, key: '', why: `is larger than ${MAX_FILE_BYTES} bytes, more than a whole ConfigMap may hold` }]);
    const buffer = Buffer.alloc(Math.min(stat.size, MAX_FILE_BYTES) + 1);
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0);
    if (bytesRead > MAX_FILE_BYTES) throw new ConfigError([{ file: name, key: '', why: `is larger than ${MAX_FILE_BYTES} bytes, more than a whole ConfigMap may hold` }]);
    return { file: { name, text: buffer.subarray(0, bytesRead).toString('utf8') } };
  } catch (error) {
    if (error instanceof ConfigError) throw error;
    throw new ConfigError([{ file: name, key: '', why: `cannot be read (${errnoOf(error)})` }]);
  } finally {
    await handle.close();
  }
}

async function readOnce(dir: string): Promise<Omit<ConfigSnapshot, 'digest' | 'dir'>> {
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch (error) {
    throw directoryProblem(dir, error);
  }
  const files: ConfigFile[] = [];
  const warnings: ConfigWarning[] = [];
  for (const entry of entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    if (entry.isDirectory() || entry.name.startsWith('..')) continue;
    const read = await readEntry(dir, entry.name);
    if ('file' in read) files.push(read.file);
    else if ('warning' in read) warnings.push(read.warning);
  }
  return { files, warnings };
}

export function digestOf(files: readonly ConfigFile[]): string {
  const hash = createHash('sha256');
  for (const file of files) {
    const name = Buffer.from(file.name, 'utf8');
    const text = Buffer.from(file.text, 'utf8');
    // Lengths first, so no two different sets of files hash alike.
    hash.update(`${name.length}:${text.length}:`).update(name).update(text);
  }
  return hash.digest('hex');
}

/** One consistent read of the directory; ConfigError if it or a file cannot be read. */
export async function readConfigDir(dir: string): Promise<ConfigSnapshot> {
  for (let attempt = 0; ; attempt++) {
    const before = await dataLink(dir);
    const read = await readOnce(dir);
    const after = await dataLink(dir);
    if (before === after || attempt >= SWAP_RETRIES) return { dir, ...read, digest: digestOf(read.files) };
  }
}
