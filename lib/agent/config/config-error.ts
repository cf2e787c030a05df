// How a configuration problem is named and written: which ConfigMap key
// (file), which key path inside it, which line, and why. One ConfigError
// carries every problem found in one load, so an operator fixes them in one
// round instead of one per reload period.
import { FscryptError } from '../../kernel/errors.js';
import type { ConfigWarning } from './types.js';

export interface ConfigProblem {
  /** The ConfigMap key (file name); the directory's path for a problem with the directory itself; undefined when the key is absent. */
  file: string | undefined;
  /** The key path inside the file, e.g. `fast-disks.volumeMode`; '' for the whole file. */
  key: string;
  why: string;
  /** 1-based line in the file, when the YAML parser knows it. */
  line?: number;
}

/** A segment needs quoting when it would read as more than one segment. */
const PLAIN_SEGMENT = /^[^.[\]"\s]+$/;

/** `["fast-disks", "selector", 0, "key"]` → `fast-disks.selector[0].key`. */
export function formatKeyPath(segments: readonly (string | number)[]): string {
  let text = '';
  for (const segment of segments) {
    if (typeof segment === 'number') text += `[${segment}]`;
    else if (PLAIN_SEGMENT.test(segment)) text += text === '' ? segment : `.${segment}`;
    else text += `[${JSON.stringify(segment)}]`;
  }
  return text;
}

function describe(file: string | undefined, key: string, line: number | undefined, text: string): string {
  const where = line === undefined ? '' : ` (line ${line})`;
  if (file === undefined) return `config: ${key}${where}: ${text}`;
  if (key === '') return `config ${file}${where}: ${text}`;
  return `config ${file}: ${key}${where}: ${text}`;
}

/** `config storageClassMap: fast-disks.volumeMode (line 4): why`. */
export function formatProblem(problem: ConfigProblem): string {
  return describe(problem.file, problem.key, problem.line, problem.why);
}

/** The same form for a warning, for logs. */
export function formatWarning(warning: ConfigWarning): string {
  return describe(warning.file, warning.key, warning.line, warning.message);
}

/**
 * An invalid configuration (code ERR_INVALID_ARG). `file`, `key`, `why` and
 * `line` are the first problem's; `problems` has them all, and the message
 * lists them all, one line each.
 */
export class ConfigError extends FscryptError {
  readonly file: string | undefined;
  readonly key: string;
  readonly why: string;
  readonly line?: number;
  readonly problems: readonly ConfigProblem[];

  constructor(problems: readonly ConfigProblem[]) {
    if (problems.length === 0) throw new TypeError('a ConfigError needs at least one problem');
    super(problems.map(formatProblem).join('\n'), { code: 'ERR_INVALID_ARG' });
    const first = problems[0]!;
    this.file = first.file;
    this.key = first.key;
    this.why = first.why;
    if (first.line !== undefined) this.line = first.line;
    this.problems = Object.freeze([...problems]);
  }
}

Object.defineProperty(ConfigError.prototype, 'name', {
  value: 'ConfigError',
  enumerable: false,
  writable: true,
  configurable: true,
});
