// The raw native binding, typed in one place (the node-pty pattern). Only
// lib/kernel talks to it; everything above uses the validated API in
// ./api.ts.
import { createRequire } from 'node:module';
import { isAbsolute } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FscryptError } from './errors.js';

export interface RawPolicy {
  /** Kernel version byte: 0 for v1, 2 for v2. */
  version: number;
  contents: number;
  filenames: number;
  flags: number;
  log2DataUnitSize: number;
  /** Descriptor (8 bytes, v1) or identifier (16 bytes, v2). */
  key: Buffer;
}

export interface RawKeyStatus {
  status: number;
  statusFlags: number;
  userCount: number;
}

export interface RawProbe {
  /** Negative errno of ADD_ENCRYPTION_KEY(NULL): EFAULT means supported. */
  addKeyErrno: number;
  /** statfs f_type */
  fsType: number;
}

/** Key specifier type then bytes; identifier bytes omitted when the kernel fills them. */
export type RawKeySpec = [type: number, bytes: Uint8Array | undefined];

/** Constants of this platform that Node's fs.constants lacks, from the C library's headers. */
export interface NativeConstants {
  readonly O_PATH: number;
  readonly LOCK_EX: number;
  readonly LOCK_NB: number;
}

export interface NativeBinding {
  readonly constants: NativeConstants;
  setErrorClass(errorClass: typeof FscryptError): void;
  setPolicy(
    dir: string,
    version: number,
    contents: number,
    filenames: number,
    flags: number,
    log2DataUnitSize: number,
    key: Uint8Array,
    /** Open with O_NOFOLLOW: a symlink as the last component fails with ELOOP. */
    noFollow: boolean,
  ): Promise<void>;
  getPolicy(path: string, noFollow: boolean): Promise<RawPolicy>;
  addKey(mountpoint: string, specType: number, specBytes: Uint8Array | undefined, raw: Uint8Array | null, keyId: number): Promise<Buffer>;
  removeKey(mountpoint: string, specType: number, specBytes: Uint8Array, allUsers: boolean): Promise<number>;
  getKeyStatus(mountpoint: string, specType: number, specBytes: Uint8Array): Promise<RawKeyStatus>;
  getNonce(path: string, noFollow: boolean): Promise<Buffer>;
  probe(path: string): Promise<RawProbe>;
  /** flock(2) with LOCK_NB (required): 0, or a negative errno. Synchronous. */
  flock(fd: number, operation: number): number;
  /** prctl(PR_SET_DUMPABLE): 0, or a negative errno. Synchronous. */
  setDumpable(dumpable: boolean): number;
  /** prctl(PR_GET_DUMPABLE): 0, 1 or 2, or a negative errno. Synchronous. */
  getDumpable(): number;
}

// lib/kernel/binding.ts and dist/kernel/binding.js both sit two levels below
// the package root, where node-gyp leaves build/Release.
const packageRoot = fileURLToPath(new URL('../../', import.meta.url));

/**
 * Another build of the same addon, by absolute path: the AddressSanitizer
 * build (scripts/asan-test.sh) runs the tests against the very sources
 * without replacing build/Release, which stays the production addon. Same
 * trust as NODE_OPTIONS: whoever sets a process's environment already runs
 * code in it.
 */
export const ADDON_OVERRIDE_ENV = 'FSCRYPT_LOCAL_ADDON';

function load(): NativeBinding {
  const require = createRequire(import.meta.url);
  const bindings = require('bindings') as (options: { bindings: string; module_root: string }) => NativeBinding;
  const override = process.env[ADDON_OVERRIDE_ENV];
  try {
    if (override !== undefined && override !== '') {
      if (!isAbsolute(override) || !override.endsWith('.node')) {
        throw new Error(`${ADDON_OVERRIDE_ENV} must be the absolute path of a .node file`);
      }
      return require(override) as NativeBinding;
    }
    return bindings({ bindings: 'fscrypt_local.node', module_root: packageRoot });
  } catch (error) {
    throw new FscryptError(
      `the fscrypt-local native addon is not built or cannot load (${(error as Error).message.split('\n')[0]}). ` +
        `To fix: run \`npm rebuild fscrypt-local\` (needs python3, make and g++)`,
      { code: 'ERR_NOT_SUPPORTED', cause: error },
    );
  }
}

let binding: NativeBinding | undefined;

/** The loaded addon, with FscryptError registered as its error class. */
export function native(): NativeBinding {
  if (binding === undefined) {
    binding = load();
    binding.setErrorClass(FscryptError);
  }
  return binding;
}
