// The node agent's logger: pino, one JSON object per line, on stderr by
// default. Its lines have the shape lib/agent/csi/log.ts's jsonLinesLog
// writes ({ level: 'info', time: ISO, ..., msg }), so the CSI server's own
// default logger and the agent's read the same in a log pipeline; a pino
// Logger is also a CsiLog, so the agent hands this one to the CSI server.
//
// Never a key byte (DESIGN invariant 5), in three layers, because a caller's
// mistake must not become a leak:
// - fields named like a secret are censored (REDACTED_PATHS), at the top
//   level and one level down (a request's `secrets`);
// - binary values (Buffer, any typed array) in a line's fields are replaced
//   by their size: keys live in Buffers, and pino would otherwise print
//   every byte (a child logger's bindings are redacted by name only: bind
//   names such as the node or PV, never data);
// - an error is logged through an allowlist (errorFields): its name, code,
//   message and system-call details, never its other properties, which may
//   hold the request, the options or a buffer it failed on.
import { pino, type DestinationStream, type Logger } from 'pino';
import { FscryptError } from '../kernel/errors.js';

export type AgentLog = Logger;

export interface AgentLogOptions {
  /** pino level name (default 'info'). */
  level?: string;
  /** Where lines go (default: stderr, written synchronously). */
  destination?: NodeJS.WritableStream | DestinationStream;
}

const SECRET_NAMES = ['secrets', 'secret', 'key', 'keys', 'kek', 'passphrase', 'password', 'token', 'protectorKey', 'policyKey', 'keyMaterial'];

/** Field paths whose values are never written, whatever they hold. */
export const REDACTED_PATHS: readonly string[] = [...SECRET_NAMES, ...SECRET_NAMES.map((name) => `*.${name}`)];

export const CENSORED = '[Redacted]';

/** Deep enough for any field the agent logs; deeper objects are cut, not walked. */
const MAX_DEPTH = 6;

function isBinary(value: unknown): value is ArrayBufferView | ArrayBuffer {
  return ArrayBuffer.isView(value) || value instanceof ArrayBuffer || value instanceof SharedArrayBuffer;
}

/**
 * `value` with every binary value replaced by '[N bytes]'. Copies only what
 * it changes, so the caller's objects are never modified; errors are left to
 * the serializer.
 */
export function withoutBinary(value: unknown, depth = 0): unknown {
  if (isBinary(value)) return `[${value.byteLength} bytes]`;
  if (value === null || typeof value !== 'object' || value instanceof Error || value instanceof Date) return value;
  if (depth >= MAX_DEPTH) return '[too deep]';
  if (Array.isArray(value)) {
    let copy: unknown[] | undefined;
    value.forEach((item, i) => {
      const clean = withoutBinary(item, depth + 1);
      if (clean !== item) (copy ??= [...value])[i] = clean;
    });
    return copy ?? value;
  }
  let copy: Record<string, unknown> | undefined;
  for (const [name, item] of Object.entries(value)) {
    const clean = withoutBinary(item, depth + 1);
    if (clean !== item) (copy ??= { ...(value as Record<string, unknown>) })[name] = clean;
  }
  return copy ?? value;
}

export interface LoggedError {
  type: string;
  message: string;
  code?: string;
  errno?: number;
  syscall?: string;
  ioctl?: string;
  path?: string;
  stack?: string;
  cause?: LoggedError | string;
}

/**
 * The fields of an error that are logged. A FscryptError is an expected
 * failure whose message says what to do, so it goes without a stack; any
 * other error is a bug or an unplanned failure of a dependency, and its
 * stack is what finds it. Causes are followed two levels.
 */
export function errorFields(error: unknown, depth = 0): LoggedError | string {
  if (!(error instanceof Error)) return typeof error === 'string' ? error : String(error);
  const e = error as Error & { code?: unknown; errno?: unknown; syscall?: unknown; ioctl?: unknown; path?: unknown };
  const fields: LoggedError = { type: e.name, message: e.message };
  if (typeof e.code === 'string' || typeof e.code === 'number') fields.code = String(e.code);
  if (typeof e.errno === 'number') fields.errno = e.errno;
  if (typeof e.syscall === 'string') fields.syscall = e.syscall;
  if (typeof e.ioctl === 'string') fields.ioctl = e.ioctl;
  if (typeof e.path === 'string') fields.path = e.path;
  if (!(error instanceof FscryptError) && e.stack !== undefined) fields.stack = e.stack;
  if (e.cause !== undefined && depth < 2) fields.cause = errorFields(e.cause, depth + 1);
  return fields;
}

/**
 * The agent's logger. Lines are written synchronously to stderr by default:
 * an asynchronous destination buffers, and the lines a crash loses are the
 * ones that explain it (an uncaught exception, a process.exit on a fatal
 * start-up error). The agent logs lifecycle steps and failures, not every
 * request, so one write per line costs nothing that matters.
 */
export function createAgentLog(options: AgentLogOptions = {}): AgentLog {
  const destination = options.destination ?? pino.destination({ dest: 2, sync: true });
  return pino(
    {
      level: options.level ?? 'info',
      base: { component: 'fscrypt-local' },
      // Labels, not numbers: the CSI logger's shape, and what people and log
      // queries read; nothing of ours filters on the numeric value.
      formatters: {
        level: (label) => ({ level: label }),
        log: (object) => withoutBinary(object) as Record<string, unknown>,
      },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: [...REDACTED_PATHS], censor: CENSORED },
      serializers: { err: (error: unknown) => errorFields(error), error: (error: unknown) => errorFields(error) },
    },
    destination as DestinationStream,
  );
}
