// What every command shares: the --json and --progress options, help text
// with examples and the exit-code table, and the action wrapper that turns
// a command's outcome (or its error) into output and an exit code.
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { EXIT, EXIT_CODES_HELP, UsageError, type ExitCode } from './exit-codes.js';
import { Output } from './output.js';
import { Progress } from './progress.js';

export interface CommonOptions {
  json?: boolean;
  progress?: boolean;
}

/** Shared by all commands of one run: the exit code the finished action chose. */
export interface RunState {
  exitCode: ExitCode;
}

export interface ActionContext {
  output: Output;
  progress: Progress;
}

/** Adds --json and --progress/--no-progress to a command. */
export function withCommonOptions(command: Command): Command {
  return command
    .option('--json', 'print the result as one JSON document on stdout')
    .option('--progress', 'report progress on stderr even when it is not a terminal')
    .option('--no-progress', 'never report progress');
}

/** Help after the options: what the command does in detail, examples, exit codes. */
export function withHelp(command: Command, help: { details?: string; examples: string[] }): Command {
  const parts: string[] = [];
  if (help.details) parts.push(wrap(help.details.trim(), HELP_WIDTH));
  parts.push(`Examples:\n${help.examples.map((e) => `  ${e}`).join('\n')}`);
  parts.push(EXIT_CODES_HELP);
  return command.addHelpText('after', `\n${parts.join('\n\n')}\n`);
}

const HELP_WIDTH = 80;

/** Word-wraps each line of `text` to `width` columns (commander does not wrap text added after the options). */
export function wrap(text: string, width: number): string {
  return text
    .split('\n')
    .map((line) => {
      const out: string[] = [];
      let current = '';
      for (const word of line.split(' ')) {
        if (current.length > 0 && current.length + 1 + word.length > width) {
          out.push(current);
          current = word;
        } else {
          current = current.length > 0 ? `${current} ${word}` : word;
        }
      }
      out.push(current);
      return out.join('\n');
    })
    .join('\n');
}

/**
 * Wraps a command's implementation: builds its output and progress from
 * the common options, and maps the result or error to the exit code.
 */
export function action<A extends unknown[], O extends CommonOptions>(
  state: RunState,
  name: string,
  run: (context: ActionContext, options: O, ...args: A) => Promise<ExitCode | void>,
): (...commanderArgs: unknown[]) => Promise<void> {
  return async (...commanderArgs: unknown[]) => {
    // commander passes the declared arguments, then the options, then the Command.
    const args = commanderArgs.slice(0, -2) as A;
    const options = commanderArgs[commanderArgs.length - 2] as O;
    const output = new Output(options.json === true);
    const progress = Progress.forOption(options.progress);
    try {
      state.exitCode = (await run({ output, progress }, options, ...args)) ?? EXIT.OK;
    } catch (error) {
      progress.clear();
      state.exitCode = output.failure(error, name);
    }
  };
}

/** Command-line paths are taken relative to the working directory; the library wants absolute ones. */
export function absolutePath(path: string): string {
  return resolve(process.cwd(), path);
}

/** Seconds from the command line as milliseconds. */
export function secondsOption(value: string | undefined, option: string): number | undefined {
  if (value === undefined) return undefined;
  const seconds = Number(value);
  if (!Number.isFinite(seconds) || seconds < 0 || seconds > 86_400) {
    throw new UsageError(`${option} takes a number of seconds from 0 to 86400`);
  }
  return Math.round(seconds * 1000);
}
