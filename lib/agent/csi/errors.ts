// The one table from the library's error codes to gRPC status codes
// (docs/errors.md has it as a column; test/package/errors-table.test.ts holds the two
// together), and the error a node RPC answers with. Every FscryptLocalCode
// must have a row (the type says so); the errnos a hook can report follow;
// anything else is INTERNAL.
//
// How kubelet reacts decides several rows: CANCELLED, DEADLINE_EXCEEDED,
// UNAVAILABLE, RESOURCE_EXHAUSTED and ABORTED are "uncertain" (kubelet keeps
// the target and retries, or unpublishes), every other code is final for that
// attempt (kubelet's reconciler still retries the mount later, with backoff).
import * as grpc from '@grpc/grpc-js';
import type { FscryptLocalCode } from '../../kernel/errors.js';

export type GrpcCodeName = Exclude<keyof typeof grpc.status, number>;

export const GRPC_FOR_CODE = {
  ERR_INVALID_ARG: 'INVALID_ARGUMENT',
  // In use, or not in the state the call needs: an admin or reconcile must act first.
  ERR_PUBLISHED: 'FAILED_PRECONDITION',
  // Never reaches kubelet from an unpublish (it answers OK and keeps removing the key in the background).
  ERR_FILES_BUSY: 'INTERNAL',
  // Another hook (an admin's CLI, a stuck one) held the slot: retry.
  ERR_SLOT_LOCKED: 'ABORTED',
  ERR_WRONG_KEY: 'INTERNAL',
  // A KMS plugin down, a key file missing: transient for kubelet, which retries.
  ERR_KEY_SOURCE: 'UNAVAILABLE',
  ERR_NOT_SUPPORTED: 'INTERNAL',
  ERR_NOT_INITIALIZED: 'FAILED_PRECONDITION',
  ERR_NOT_MOUNTPOINT: 'FAILED_PRECONDITION',
  // The handle names a volume this node does not have (any more).
  ERR_NO_VOLUME: 'NOT_FOUND',
  ERR_NOT_CURRENT: 'NOT_FOUND',
  ERR_INTERRUPTED: 'FAILED_PRECONDITION',
  ERR_BAD_METADATA: 'INTERNAL',
  ERR_UNSAFE_PATH: 'INTERNAL',
  // The spec's code for "already published at this target, incompatibly".
  ERR_FOREIGN_MOUNT: 'ALREADY_EXISTS',
  ERR_FOREIGN_ENTRY: 'INTERNAL',
  // The call's signal fired while it waited for the slot: DEADLINE_EXCEEDED
  // instead when it was the call's deadline (see grpcCodeFor).
  ERR_ABORTED: 'ABORTED',
  ERR_MOUNT_FAILED: 'INTERNAL',
  ERR_MOUNT_TABLE: 'INTERNAL',
  ERR_CLEANUP: 'INTERNAL',
  ERR_CLOSED: 'INTERNAL',
} as const satisfies Record<FscryptLocalCode, GrpcCodeName>;

/** errnos a hook reports (docs/errors.md's second table); any other is INTERNAL. */
export const GRPC_FOR_ERRNO = {
  // A slot (or a path of it) that does not exist: the volume is not on this node.
  ENOENT: 'NOT_FOUND',
  ENOTDIR: 'NOT_FOUND',
  // A target something else still uses (the message names it).
  EBUSY: 'FAILED_PRECONDITION',
  EOPNOTSUPP: 'INTERNAL',
  ENOTTY: 'INTERNAL',
  ELOOP: 'INTERNAL',
  EROFS: 'INTERNAL',
  EIO: 'INTERNAL',
  // gRPC's own example of RESOURCE_EXHAUSTED: the filesystem is out of space.
  ENOSPC: 'RESOURCE_EXHAUSTED',
} as const satisfies Record<string, GrpcCodeName>;

const BY_CODE: ReadonlyMap<string, GrpcCodeName> = new Map<string, GrpcCodeName>([...Object.entries(GRPC_FOR_CODE), ...Object.entries(GRPC_FOR_ERRNO)]);

/** The gRPC code name for an error's `code` (a FscryptError's, a Node errno), INTERNAL for anything else. */
export function grpcCodeFor(error: unknown, options: { deadlinePassed?: boolean } = {}): GrpcCodeName {
  if (error instanceof CsiError) return error.grpcCode;
  const code = (error as { code?: unknown } | null)?.code;
  const name = (typeof code === 'string' && BY_CODE.get(code)) || 'INTERNAL';
  if (options.deadlinePassed && (code === 'ERR_ABORTED' || code === 'ERR_SLOT_LOCKED')) return 'DEADLINE_EXCEEDED';
  return name;
}

/** A refusal the node service decides itself (bad argument, unknown volume), with its gRPC code. */
export class CsiError extends Error {
  constructor(
    readonly grpcCode: GrpcCodeName,
    message: string,
  ) {
    super(message);
  }
}
Object.defineProperty(CsiError.prototype, 'name', { value: 'CsiError' });

/** Longer messages are cut (a busy unmount can list many processes); grpc-message is a header. */
const MAX_MESSAGE = 2048;

/** What a handler answers: a status code and a message (no binary details, as the spec demands). */
export function statusOf(code: GrpcCodeName, message: string): Partial<grpc.StatusObject> {
  const details = message.length > MAX_MESSAGE ? `${message.slice(0, MAX_MESSAGE - 1)}…` : message;
  return { code: grpc.status[code], details };
}
