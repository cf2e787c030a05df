// The `passphrase` key source: a passphrase read from a file, stretched with
// Argon2id into the KEK of a `custom_passphrase` protector. The costs are
// chosen here, explicitly, and stored in the protector, so every later open
// pays exactly what the creator chose: fscrypt's own calibration (about 1 s
// and up to 128 MiB, or RAM/8) ignores cgroup limits and has OOM-killed pods.
import { randomFillSync } from 'node:crypto';
import { FscryptError } from '../../kernel/index.js';
import type { Argon2Costs } from '../key-source.js';
import { ARGON2_LIMITS, type ProtectorData } from '../metadata-format.js';
import { copySecret, readSecretFile, wipe } from '../secret.js';
import type { KeysWarningHandler } from '../warnings.js';
import { SALT_SIZE, unwrapKey, WRAPPING_KEY_SIZE, wrapKey } from '../wrap.js';
import type { KeySourceProvider, ProtectorRecord } from './provider.js';

/**
 * Default Argon2id costs: 64 MiB, 12 passes, 1 lane. About 0.2-0.4 s on the
 * 2-core development VM (see bench/keys), and peak memory of the process
 * grows by 64 MiB (+ a few MiB): it fits a 256 MiB container limit with room
 * for Node itself. One lane keeps a CPU-limited container from being
 * throttled. docs/keys.md explains the choice.
 */
export const DEFAULT_ARGON2_COSTS: Readonly<Argon2Costs> = Object.freeze({ time: 12, memory: 64 * 1024, parallelism: 1 });

/** Longest passphrase accepted (fscrypt's own reader takes up to a page). */
export const MAX_PASSPHRASE_BYTES = 1024;

/** Checks costs against fscrypt's rules and our limits. */
export function checkArgon2Costs(costs: unknown): Argon2Costs {
  const c = (typeof costs === 'object' && costs !== null ? costs : {}) as Record<string, unknown>;
  const int = (v: unknown, min: number, max: number, what: string): number => {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
      throw FscryptError.invalidArgument(`Argon2 ${what} must be an integer from ${min} to ${max}, got ${typeof v === 'number' ? v : typeof v}`);
    }
    return v;
  };
  const parallelism = int(c.parallelism, 1, ARGON2_LIMITS.maxParallelism, 'parallelism');
  return {
    time: int(c.time, 1, ARGON2_LIMITS.maxTime, 'time'),
    memory: int(c.memory, 8 * parallelism, ARGON2_LIMITS.maxMemoryKiB, 'memory (KiB)'),
    parallelism,
  };
}

/**
 * Reads a passphrase file. One trailing newline ("\n" or "\r\n") is removed,
 * as `fscrypt` stops reading a passphrase at the first newline; the rest must
 * be something the stock tool could be given on stdin (no CR, LF, ^C, ^D,
 * backspace or DEL), so that break-glass recovery with it stays possible.
 */
export async function readPassphraseFile(path: string, warn?: KeysWarningHandler): Promise<Buffer> {
  const raw = await readSecretFile(path, { what: 'passphrase file', maxBytes: MAX_PASSPHRASE_BYTES + 2 }, warn);
  try {
    let end = raw.length;
    if (end > 0 && raw[end - 1] === 0x0a) end--;
    if (end > 0 && raw[end - 1] === 0x0d && end < raw.length) end--;
    const problem =
      end === 0
        ? 'is empty'
        : end > MAX_PASSPHRASE_BYTES
          ? `holds more than ${MAX_PASSPHRASE_BYTES} bytes`
          : raw.subarray(0, end).some((b) => b === 0x0a || b === 0x0d || b === 0x03 || b === 0x04 || b === 0x08 || b === 0x7f)
            ? 'contains a line break or a control character (^C, ^D, backspace, DEL) that the fscrypt tool cannot read from a terminal'
            : undefined;
    if (problem !== undefined) {
      throw new FscryptError(`the passphrase file '${path}' ${problem}`, { code: 'ERR_KEY_SOURCE', path });
    }
    return copySecret(raw.subarray(0, end));
  } finally {
    wipe(raw);
  }
}

// Argon2 runs one at a time in this process: each run holds `memory` KiB, and
// a burst of volume unlocks must not multiply that past the container limit.
let argon2Queue: Promise<unknown> = Promise.resolve();

type HashRaw = (typeof import('@node-rs/argon2'))['hashRaw'];
let hashRawFn: HashRaw | undefined;

// Loaded on first use: the package's native binary is an optional dependency,
// and slots protected by a KEK file or a KMS must work without it.
async function argon2(): Promise<HashRaw> {
  if (hashRawFn === undefined) {
    try {
      hashRawFn = (await import('@node-rs/argon2')).hashRaw;
    } catch (error) {
      throw new FscryptError(
        'Argon2id is unavailable: @node-rs/argon2 could not load its native binary (was the package installed with --omit=optional, or on another OS?). Reinstall with `npm ci`',
        { code: 'ERR_NOT_SUPPORTED', cause: error },
      );
    }
  }
  return hashRawFn;
}

/** Argon2id(passphrase, salt, t, m, p) -> 32 bytes, exactly as fscrypt derives a KEK. */
export async function deriveKek(passphrase: Uint8Array, salt: Uint8Array, costs: Argon2Costs): Promise<Buffer> {
  const hashRaw = await argon2();
  const run = argon2Queue.then(async () => {
    const raw = await hashRaw(passphrase, {
      salt,
      timeCost: costs.time,
      memoryCost: costs.memory,
      parallelism: costs.parallelism,
      outputLen: WRAPPING_KEY_SIZE,
      algorithm: 2, // Argon2id; the package's Algorithm enum is a const enum
    });
    try {
      return copySecret(raw);
    } finally {
      wipe(raw);
    }
  });
  argon2Queue = run.catch(() => undefined);
  return run;
}

export class PassphraseKeySource implements KeySourceProvider {
  readonly kind = 'passphrase';
  readonly source = 'custom_passphrase';
  readonly description: string;
  readonly costs: Argon2Costs;

  constructor(
    readonly path: string,
    costs?: Argon2Costs,
    private readonly warn?: KeysWarningHandler,
  ) {
    this.description = `the passphrase in '${path}'`;
    this.costs = checkArgon2Costs(costs ?? DEFAULT_ARGON2_COSTS);
  }

  async seal(protectorKey: Buffer, meta: { descriptor: string; name: string }): Promise<ProtectorRecord> {
    const salt = randomFillSync(Buffer.alloc(SALT_SIZE));
    const kek = await this.kek(salt, this.costs);
    try {
      const data: ProtectorData = {
        descriptor: meta.descriptor,
        source: 'custom_passphrase',
        name: meta.name,
        costs: { ...this.costs, truncationFixed: false },
        salt,
        uid: 0,
        wrappedKey: wrapKey(kek, protectorKey),
      };
      return { storage: 'fscrypt', data };
    } finally {
      wipe(kek);
    }
  }

  async unseal(record: ProtectorRecord): Promise<Buffer | null> {
    if (record.storage !== 'fscrypt' || record.data.source !== 'custom_passphrase') return null;
    const { costs, salt } = record.data;
    if (costs === undefined || salt === undefined) return null;
    const kek = await this.kek(salt, costs);
    try {
      return unwrapKey(kek, record.data.wrappedKey);
    } finally {
      wipe(kek);
    }
  }

  private async kek(salt: Uint8Array, costs: Argon2Costs): Promise<Buffer> {
    const passphrase = await readPassphraseFile(this.path, this.warn);
    try {
      return await deriveKek(passphrase, salt, costs);
    } finally {
      wipe(passphrase);
    }
  }

  close(): void {}
}
