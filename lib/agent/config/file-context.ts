// Where the readers of one file put what they find: problems and warnings,
// each named by file, key path and line. Also the one way a zod schema is
// applied to a file's value, so every key gets the same treatment (unknown
// keys noted, issues located, messages in our words).
import type { z } from 'zod';
import { formatKeyPath, type ConfigProblem } from './config-error.js';
import { issueMessage } from './schema.js';
import type { ConfigWarning } from './types.js';
import { reconcileKeys, type KeyNote } from './unknown-keys.js';
import type { KeyPath } from './yaml-file.js';

export interface FileContext {
  /** The file's name (the ConfigMap key as written). */
  file: string;
  lineOf(path: KeyPath): number | undefined;
  problems: ConfigProblem[];
  warnings: ConfigWarning[];
}

function at(ctx: FileContext, path: KeyPath): { file: string; key: string; line?: number } {
  const line = ctx.lineOf(path);
  return { file: ctx.file, key: formatKeyPath(path), ...(line === undefined ? {} : { line }) };
}

export function warn(ctx: FileContext, path: KeyPath, message: string): void {
  ctx.warnings.push({ ...at(ctx, path), message });
}

export function problem(ctx: FileContext, path: KeyPath, why: string): void {
  ctx.problems.push({ ...at(ctx, path), why });
}

/**
 * `schema` applied to `value` found at `path` in the file: the output, or
 * undefined after recording every issue as a problem.
 */
export function applySchema<T extends z.ZodType>(ctx: FileContext, schema: T, value: unknown, path: KeyPath): z.output<T> | undefined {
  const notes: KeyNote[] = [];
  const known = reconcileKeys(schema, value, notes, [...path]);
  for (const note of notes) warn(ctx, note.path, note.message);
  const result = schema.safeParse(known, { error: issueMessage });
  if (result.success) return result.data;
  for (const issue of result.error.issues) problem(ctx, [...path, ...(issue.path as (string | number)[])], issue.message);
  return undefined;
}
