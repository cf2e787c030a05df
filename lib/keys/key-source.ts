// What a key source is, as configuration: the spec objects callers pass and
// the one-line text form used in config files and on the command line.
import { isAbsolute } from 'node:path';
import { FscryptError } from '../kernel/errors.js';

/** Argon2id costs. `memory` is in KiB, as in fscrypt's HashingCosts. */
export interface Argon2Costs {
  time: number;
  memory: number;
  parallelism: number;
}

export type KeySourceSpec =
  /** A 32-byte KEK in a file (e.g. a mounted Secret): a `raw_key` protector. */
  | { kind: 'file'; path: string }
  /** A passphrase in a file, stretched with Argon2id: a `custom_passphrase` protector. */
  | { kind: 'passphrase'; path: string; costs?: Argon2Costs }
  /** A Kubernetes KMS v2 plugin listening on a unix socket. */
  | { kind: 'kms'; socket: string; timeoutMs?: number };

const USAGE = "a key source is 'file:PATH', 'passphrase:PATH' or 'kms:SOCKET' (SOCKET: /path/to.sock or unix:///path/to.sock)";

/**
 * Parses 'file:PATH', 'passphrase:PATH' or 'kms:SOCKET'. SOCKET is an
 * absolute path, 'unix:///path', or 'unix:///@name' for an abstract socket.
 *
 * No error repeats any part of the text, not even a few characters of an
 * unknown kind, nor its length: a passphrase or key pasted where a spec
 * belongs must not reach a terminal or a log. Each error says which rule the
 * text broke, in words of our own.
 */
export function parseKeySource(text: string): KeySourceSpec {
  if (typeof text !== 'string') throw FscryptError.invalidArgument(`${USAGE}; got ${typeof text}`);
  const colon = text.indexOf(':');
  if (colon < 0) throw FscryptError.invalidArgument(`${USAGE}; the text has no kind (nothing before a ':')`);
  const kind = text.slice(0, colon);
  const rest = text.slice(colon + 1);
  switch (kind) {
    case 'file':
    case 'passphrase':
      if (rest.length === 0) throw FscryptError.invalidArgument(`${USAGE}; '${kind}:' needs a path`);
      if (rest.includes('\0')) throw FscryptError.invalidArgument(`${USAGE}; the path must not contain a NUL byte`);
      return { kind, path: rest };
    case 'kms':
      if (rest.includes('\0')) throw FscryptError.invalidArgument(`${USAGE}; the socket path must not contain a NUL byte`);
      return { kind: 'kms', socket: parseSocket(rest) };
    default:
      // Not even the kind is named: it may be the first half of a secret.
      throw FscryptError.invalidArgument(`${USAGE}; the text before the first ':' is not one of these kinds (they are lower case)`);
  }
}

function parseSocket(value: string): string {
  let path = value;
  if (value.startsWith('unix://')) path = value.slice('unix://'.length);
  else if (value.startsWith('unix:')) path = value.slice('unix:'.length);
  if (!isAbsolute(path)) {
    throw FscryptError.invalidArgument(`${USAGE}; the KMS plugin socket must be an absolute path`);
  }
  return path;
}

/** A secret-free description of a source for messages: "the KEK file '/x'". */
export function describeKeySource(spec: KeySourceSpec): string {
  switch (spec.kind) {
    case 'file':
      return `the KEK file '${spec.path}'`;
    case 'passphrase':
      return `the passphrase in '${spec.path}'`;
    case 'kms':
      return `the KMS plugin at '${spec.socket}'`;
  }
}

/** Checks a spec object passed in from outside (JS callers, parsed config). */
export function checkKeySource(spec: unknown): KeySourceSpec {
  if (typeof spec !== 'object' || spec === null) throw FscryptError.invalidArgument(`${USAGE}; got ${spec === null ? 'null' : typeof spec}`);
  const s = spec as Record<string, unknown>;
  const nonEmpty = (v: unknown, what: string): string => {
    if (typeof v !== 'string' || v.length === 0 || v.includes('\0')) throw FscryptError.invalidArgument(`key source ${what} must be a non-empty path`);
    return v;
  };
  switch (s.kind) {
    case 'file':
      return { kind: 'file', path: nonEmpty(s.path, 'path') };
    case 'passphrase': {
      const result: KeySourceSpec = { kind: 'passphrase', path: nonEmpty(s.path, 'path') };
      if (s.costs !== undefined) result.costs = s.costs as Argon2Costs; // checked by the passphrase provider
      return result;
    }
    case 'kms': {
      const result: KeySourceSpec = { kind: 'kms', socket: parseSocket(nonEmpty(s.socket, 'socket')) };
      if (s.timeoutMs !== undefined) {
        if (typeof s.timeoutMs !== 'number' || !Number.isInteger(s.timeoutMs) || s.timeoutMs < 1 || s.timeoutMs > 600_000) {
          throw FscryptError.invalidArgument('key source timeoutMs must be an integer from 1 to 600000');
        }
        result.timeoutMs = s.timeoutMs;
      }
      return result;
    }
    default:
      throw FscryptError.invalidArgument(`${USAGE}; unknown kind`);
  }
}
