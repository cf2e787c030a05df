// /etc/fscrypt.conf, which the stock `fscrypt` tool refuses to run without
// (even for `unlock`). Written so that break-glass recovery with the stock
// tool works on any node, and so that a passphrase protector the stock tool
// creates there costs what our defaults cost, not what its calibration picks.
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { copyFile, open, readFile, rename, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { FscryptError } from '../kernel/index.js';
import { fsyncDirectory } from '../durable-fs.js';
import type { Argon2Costs } from './key-source.js';
import { checkArgon2Costs, DEFAULT_ARGON2_COSTS } from './sources/passphrase.js';

export const FSCRYPT_CONF_PATH = '/etc/fscrypt.conf';

export interface FscryptConfOptions {
  /** Argon2id costs for passphrase protectors the stock tool creates (default: ours). */
  hashCosts?: Argon2Costs;
  /** The stock tool's default protector source (default custom_passphrase, as `fscrypt setup`). */
  source?: 'custom_passphrase' | 'raw_key';
  /** Replace a valid existing file too (it is backed up first). */
  force?: boolean;
}

export interface FscryptConfResult {
  path: string;
  /** written: there was none; kept: a valid one was left alone; replaced: an invalid one (or force). */
  action: 'written' | 'kept' | 'replaced';
  /** Where the replaced file was saved. */
  backup?: string;
  /** Why an existing file was replaced. */
  reason?: string;
}

/** The config text, in the layout `fscrypt setup` writes (protojson, int64 as strings). */
export function renderFscryptConf(options: Omit<FscryptConfOptions, 'force'> = {}): string {
  const costs = checkArgon2Costs(options.hashCosts ?? DEFAULT_ARGON2_COSTS);
  const source = options.source ?? 'custom_passphrase';
  if (source !== 'custom_passphrase' && source !== 'raw_key') throw FscryptError.invalidArgument('source must be custom_passphrase or raw_key');
  const config = {
    source,
    hash_costs: { time: String(costs.time), memory: String(costs.memory), parallelism: String(costs.parallelism) },
    options: { padding: '32', contents: 'AES_256_XTS', filenames: 'AES_256_CTS', policy_version: '2' },
    use_fs_keyring_for_v1_policies: false,
    allow_cross_user_metadata: false,
  };
  return `${JSON.stringify(config, null, '\t')}\n`;
}

const SOURCES = new Set(['pam_passphrase', 'custom_passphrase', 'raw_key', 1, 2, 3]);
const MODES = new Set(['AES_256_XTS', 'AES_256_CTS', 'AES_128_CBC', 'AES_128_CTS', 'Adiantum', 'AES_256_HCTR2', 1, 4, 5, 6, 9, 10]);

function int(value: unknown): number | undefined {
  const n = typeof value === 'string' && /^-?[0-9]+$/.test(value) ? Number(value) : value;
  return typeof n === 'number' && Number.isSafeInteger(n) ? n : undefined;
}

/**
 * Why the stock tool would refuse a config (its Config.CheckValidity), or
 * undefined when it is valid. Unknown keys are tolerated: a newer fscrypt
 * may have written them.
 */
export function fscryptConfProblem(text: string): string | undefined {
  let config: unknown;
  try {
    config = JSON.parse(text);
  } catch {
    return 'it is not valid JSON';
  }
  if (typeof config !== 'object' || config === null || Array.isArray(config)) return 'it is not a JSON object';
  const c = config as Record<string, unknown>;
  if (!SOURCES.has(c.source as string)) return 'its "source" is missing or unknown';
  if (c.source !== 'raw_key' && c.source !== 3) {
    const h = c.hash_costs as Record<string, unknown> | undefined;
    const time = int(h?.time);
    const memory = int(h?.memory);
    const parallelism = int(h?.parallelism);
    if (time === undefined || memory === undefined || parallelism === undefined || time < 1 || parallelism < 1 || memory < 8 * parallelism) {
      return 'its "hash_costs" are missing or invalid';
    }
  }
  const o = c.options as Record<string, unknown> | undefined;
  if (typeof o !== 'object' || o === null) return 'its "options" are missing';
  if (![4, 8, 16, 32].includes(int(o.padding) ?? -1)) return 'its "options.padding" is not 4, 8, 16 or 32';
  if (!MODES.has(o.contents as string) || !MODES.has(o.filenames as string)) return 'its "options" name unknown encryption modes';
  if (o.policy_version !== undefined && ![1, 2].includes(int(o.policy_version) ?? -1)) return 'its "options.policy_version" is not 1 or 2';
  return undefined;
}

/**
 * Writes the stock tool's config (default /etc/fscrypt.conf), atomically and
 * durably, mode 0644. A valid existing file is kept unless `force`; an
 * invalid one is saved as <path>.invalid-<time> and replaced.
 */
export async function writeFscryptConf(path: string = FSCRYPT_CONF_PATH, options: FscryptConfOptions = {}): Promise<FscryptConfResult> {
  const text = renderFscryptConf(options);
  let existing: string | undefined;
  try {
    existing = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  let reason: string | undefined;
  let backup: string | undefined;
  if (existing !== undefined) {
    reason = fscryptConfProblem(existing);
    if (reason === undefined && options.force !== true) return { path, action: 'kept' };
    reason ??= 'replacement was forced';
    backup = `${path}.invalid-${new Date().toISOString().replace(/[:.]/g, '-')}`;
    await copyFile(path, backup, constants.COPYFILE_EXCL);
  }
  const temp = `${path}.tmp-${randomBytes(6).toString('hex')}`;
  const handle = await open(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o644);
  try {
    await handle.chmod(0o644);
    await handle.writeFile(text);
    await handle.sync();
    await handle.close();
    await rename(temp, path);
  } catch (error) {
    await handle.close().catch(() => undefined);
    await unlink(temp).catch(() => undefined);
    throw error;
  }
  await fsyncDirectory(dirname(path));
  if (existing === undefined) return { path, action: 'written' };
  const result: FscryptConfResult = { path, action: 'replaced' };
  if (backup !== undefined) result.backup = backup;
  if (reason !== undefined) result.reason = reason;
  return result;
}
