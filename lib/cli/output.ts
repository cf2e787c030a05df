// Where a command's result and errors go: human text, or one JSON document
// on stdout with `--json` (`{ ok: true, ... }` or `{ ok: false, error }`).
// Progress is not output: it goes to stderr (progress.ts), so stdout stays
// parseable.
import { errorCode, exitCodeFor, type ExitCode } from './exit-codes.js';

export interface TextSink {
  write(text: string): unknown;
}

export interface ErrorReport {
  code: string;
  message: string;
}

/** The error as shown to users: its code and its message (which says what to do), nothing else. */
export function errorReport(error: unknown): ErrorReport {
  const message = error instanceof Error ? error.message : String(error);
  return { code: errorCode(error), message };
}

// C0 controls, DEL, C1 controls, the Unicode line and paragraph separators
// and the bidirectional overrides and isolates: whatever could start a line,
// move the cursor, recolour the terminal or reorder what is shown.
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/gu;
const NAMED: Readonly<Record<string, string>> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };

/**
 * A name (a path, a directory entry, anything a tenant or the disk may have
 * chosen) as it may appear in human output: control characters become
 * visible escapes (`\n`, `\x1b`, `\u202e`), so a name cannot forge
 * lines or drive the terminal. JSON output needs no such thing.
 */
export function printable(text: string): string {
  return text.replace(CONTROL, (c) => {
    const code = c.codePointAt(0)!;
    return NAMED[c] ?? (code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`);
  });
}

/** printable() line by line: the line breaks of a multi-line text stay. */
export function printableLines(text: string): string {
  return text.split('\n').map(printable).join('\n');
}

/**
 * JSON.stringify that refuses to print bytes: a Buffer or typed array
 * reaching the output is a bug (it could be key material), so it is
 * replaced, never printed.
 */
export function safeJson(value: unknown, indent?: number): string {
  return JSON.stringify(
    value,
    (_key, v: unknown) => {
      if (ArrayBuffer.isView(v) || v instanceof ArrayBuffer) return '[bytes withheld]';
      const serializedBuffer = v as { type?: unknown; data?: unknown } | null;
      if (typeof v === 'object' && serializedBuffer !== null && serializedBuffer.type === 'Buffer' && Array.isArray(serializedBuffer.data)) {
        return '[bytes withheld]';
      }
      if (v instanceof Error) return errorReport(v);
      return v;
    },
    indent,
  );
}

export class Output {
  constructor(
    readonly json: boolean,
    private readonly stdout: TextSink = process.stdout,
    private readonly stderr: TextSink = process.stderr,
  ) {}

  /**
   * A command's result: `{ ok, ...data }` as JSON, or the human text, every
   * line of it escaped (a name in a slot may hold control characters: they
   * must not drive the admin's terminal).
   */
  result(data: object, human: string, ok = true): void {
    if (this.json) this.stdout.write(`${safeJson({ ok, ...data }, 2)}\n`);
    else if (human.length > 0) this.stdout.write(`${printableLines(human.endsWith('\n') ? human.slice(0, -1) : human)}\n`);
  }

  /** A warning that does not change the result (stderr, human form only). */
  warn(text: string): void {
    this.stderr.write(`fscrypt-local: warning: ${printableLines(text)}\n`);
  }

  /** Reports a failure and returns the exit code for it. */
  failure(error: unknown, command?: string): ExitCode {
    const report = errorReport(error);
    if (this.json) {
      this.stdout.write(`${safeJson({ ok: false, error: report }, 2)}\n`);
    } else {
      const where = command === undefined ? 'fscrypt-local' : `fscrypt-local ${command}`;
      this.stderr.write(`${where}: error: ${printableLines(report.message)}\n  (${printable(report.code)}, exit ${exitCodeFor(error)})\n`);
    }
    if (process.env.FSCRYPT_LOCAL_DEBUG === '1' && error instanceof Error && error.stack) this.stderr.write(`${error.stack}\n`);
    return exitCodeFor(error);
  }
}
