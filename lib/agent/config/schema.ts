// The shape and rules of every key's value, in zod 4, with messages in words
// an operator acts on. Values are coerced the way upstream's decoder
// coerces them (sigs.k8s.io/yaml into Go types): a number or boolean where
// a string belongs becomes its text, an empty value (null) is the default.
// No message repeats a value of the fscrypt block: a secret pasted there by
// mistake must not reach a log.
import { posix } from 'node:path';
import { z } from 'zod';
import { parseKeySource } from '../../keys/key-source.js';
import { parseGoDuration } from './duration.js';
import { labelKeyProblem, labelValueProblem } from './k8s-names.js';
import { checkNamePattern, splitNamePattern } from './name-pattern.js';
import type { NodeSelectorRequirement, NodeSelectorTerm } from './types.js';

/** A value quoted for a message, cut short: the config's own text, never a secret's. */
export function quote(value: string): string {
  return JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}...` : value);
}

const EXPECTED: Record<string, string> = {
  string: 'a string',
  boolean: 'true or false',
  array: 'a list',
  object: 'a mapping',
  record: 'a mapping',
  number: 'a number',
};

function kindOf(input: unknown): string {
  if (input === null) return 'empty';
  if (Array.isArray(input)) return 'a list';
  if (typeof input === 'object') return 'a mapping';
  if (typeof input === 'string') return 'a string';
  return `a ${typeof input}`;
}

/** zod's messages for the issues our schemas leave to it, in our words (never with the input's value). */
export function issueMessage(issue: { code?: string; expected?: string; input?: unknown }): string | undefined {
  if (issue.code !== 'invalid_type') return undefined;
  if (issue.input === undefined) return 'is required';
  const expected = EXPECTED[issue.expected ?? ''] ?? issue.expected ?? 'another type';
  const hint =
    issue.expected === 'boolean' && typeof issue.input === 'string'
      ? ' (write true or false without quotes in the file: a quoted "true" is a string, which upstream refuses too)'
      : '';
  return `must be ${expected}, not ${kindOf(issue.input)}${hint}`;
}

// sigs.k8s.io/yaml turns a non-string scalar into its text when the Go field is a string.
const goText = (value: unknown): unknown => {
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return String(value);
  return value === null ? undefined : value;
};
const emptyIsAbsent = (value: unknown): unknown => (value === null ? undefined : value);

/** A string field; absent or empty (null) is undefined. */
const goString = () => z.preprocess(goText, z.string().optional());
/** A string field that must be there. */
const requiredString = () => z.preprocess(goText, z.string());
/** A boolean field; absent or empty is false. */
const goBool = () => z.preprocess(emptyIsAbsent, z.boolean().optional()).transform((v) => v === true);
/** Any other field; absent or empty is undefined. */
const optional = <T extends z.ZodType>(schema: T) => z.preprocess(emptyIsAbsent, schema.optional());

/** Accepted, never used: its value is not checked (block-only keys). */
export const unusedValue = z.unknown().optional();

const CLEAN_TRAILING = /\/+$/;

/** An absolute directory, cleaned as Go's filepath.Join cleans it before use. */
function directory() {
  return requiredString()
    .superRefine((text, ctx) => {
      if (text === '') ctx.addIssue({ code: 'custom', message: 'is required (an absolute path)' });
      else if (text.includes('\0')) ctx.addIssue({ code: 'custom', message: 'must not contain a NUL byte' });
      else if (!text.startsWith('/')) ctx.addIssue({ code: 'custom', message: `${quote(text)} must be an absolute path` });
      else if (posix.normalize(text).replace(CLEAN_TRAILING, '') === '') {
        ctx.addIssue({ code: 'custom', message: 'must not be / itself: every mount point of the host would be taken for a volume' });
      }
    })
    .transform((text) => posix.normalize(text).replace(CLEAN_TRAILING, ''));
}

export const BLOCK_REFUSED =
  'Block is refused with fscrypt: fscrypt encrypts directories of a filesystem, not block devices; for block volumes use dm-crypt/LUKS ' +
  '(and leave this class without an fscrypt: block, to the upstream provisioner)';

const volumeMode = goString().superRefine((mode, ctx) => {
  if (mode === undefined || mode === '' || mode === 'Filesystem') return;
  if (mode === 'Block') ctx.addIssue({ code: 'custom', message: BLOCK_REFUSED });
  else ctx.addIssue({ code: 'custom', message: `${quote(mode)} is not a volume mode: Filesystem (the default; Block is not for fscrypt)` });
});

const SINGLE_NODE = ['ReadWriteOnce', 'ReadWriteOncePod'] as const;
type SingleNodeMode = (typeof SINGLE_NODE)[number];

const accessMode = goString()
  .superRefine((mode, ctx) => {
    if (mode === undefined || mode === '' || (SINGLE_NODE as readonly string[]).includes(mode)) return;
    if (mode === 'ReadWriteMany' || mode === 'ReadOnlyMany') {
      ctx.addIssue({ code: 'custom', message: `${mode} is not supported: an fscrypt-local volume lives on one node; use ReadWriteOnce or ReadWriteOncePod` });
    } else {
      ctx.addIssue({ code: 'custom', message: `${quote(mode)} is not an access mode: use ReadWriteOnce (the default) or ReadWriteOncePod` });
    }
  })
  .transform((mode): SingleNodeMode => (mode === 'ReadWriteOncePod' ? mode : 'ReadWriteOnce'));

const namePattern = goString()
  .superRefine((text, ctx) => {
    const pieces = splitNamePattern(text);
    pieces.forEach((piece, index) => {
      const why = checkNamePattern(piece);
      if (why !== undefined) {
        const which = pieces.length > 1 ? `pattern ${index + 1} of ${pieces.length} (${quote(piece)})` : quote(piece);
        ctx.addIssue({ code: 'custom', message: `${which}: ${why}` });
      }
    });
  })
  .transform((text) => splitNamePattern(text));

const labelKey = (what: string) =>
  requiredString().superRefine((key, ctx) => {
    const why = labelKeyProblem(key);
    if (why !== undefined) ctx.addIssue({ code: 'custom', message: `${quote(key)} is not a valid ${what}: ${why}` });
  });

const NODE_OPERATORS = ['In', 'NotIn', 'Exists', 'DoesNotExist', 'Gt', 'Lt'];

/** The API server's rules for a NodeSelectorRequirement of a PV's node affinity. */
const matchExpression = z
  .object({
    key: labelKey('label key'),
    operator: requiredString(),
    values: optional(z.array(requiredString())),
  })
  .superRefine((req, ctx) => {
    const count = req.values?.length ?? 0;
    if (!NODE_OPERATORS.includes(req.operator)) {
      ctx.addIssue({ code: 'custom', path: ['operator'], message: `${quote(req.operator)} is not an operator: ${NODE_OPERATORS.join(', ')}` });
    } else if ((req.operator === 'In' || req.operator === 'NotIn') && count === 0) {
      ctx.addIssue({ code: 'custom', path: ['values'], message: `must list at least one value with operator ${req.operator}` });
    } else if ((req.operator === 'Exists' || req.operator === 'DoesNotExist') && count > 0) {
      ctx.addIssue({ code: 'custom', path: ['values'], message: `must be empty with operator ${req.operator}` });
    } else if ((req.operator === 'Gt' || req.operator === 'Lt') && count !== 1) {
      ctx.addIssue({ code: 'custom', path: ['values'], message: `must be exactly one value with operator ${req.operator}` });
    }
  });

/** The API server allows one field, metadata.name, with In or NotIn and exactly one value. */
const matchField = z
  .object({
    key: requiredString(),
    operator: requiredString(),
    values: optional(z.array(requiredString())),
  })
  .superRefine((req, ctx) => {
    if (req.key !== 'metadata.name') ctx.addIssue({ code: 'custom', path: ['key'], message: `${quote(req.key)} is not a node field a PV may select: only metadata.name` });
    if (req.operator !== 'In' && req.operator !== 'NotIn') {
      ctx.addIssue({ code: 'custom', path: ['operator'], message: `${quote(req.operator)} is not an operator for a node field: In or NotIn` });
    } else if ((req.values?.length ?? 0) !== 1) {
      ctx.addIssue({ code: 'custom', path: ['values'], message: `must be exactly one value (a node name) with operator ${req.operator}` });
    }
  });

function requirements(list: { key: string; operator: string; values?: string[] | undefined }[]): NodeSelectorRequirement[] {
  return list.map((r) => (r.values === undefined ? { key: r.key, operator: r.operator } : { key: r.key, operator: r.operator, values: r.values }));
}

const selectorTerm = z
  .object({
    matchExpressions: optional(z.array(matchExpression)),
    matchFields: optional(z.array(matchField)),
  })
  .transform((term): NodeSelectorTerm => {
    const out: NodeSelectorTerm = {};
    if (term.matchExpressions !== undefined) out.matchExpressions = requirements(term.matchExpressions);
    if (term.matchFields !== undefined) out.matchFields = requirements(term.matchFields);
    return out;
  });

const KEY_SOURCE_FORMS = 'file:PATH, passphrase:PATH or kms:SOCKET';

/** Our block. parseKeySource's messages never repeat the text; neither do ours. */
export const fscryptBlock = z.preprocess(
  (value) => (value === null ? {} : value),
  z
    .object({
      keySource: z.string({ error: (issue) => `${issue.input === undefined || issue.input === null ? 'is required' : `must be a string, not ${kindOf(issue.input)}`}: ${KEY_SOURCE_FORMS}` }),
    })
    .transform((block, ctx) => {
      try {
        const spec = parseKeySource(block.keySource);
        if (spec.kind !== 'kms' && !spec.path.startsWith('/')) {
          ctx.addIssue({ code: 'custom', path: ['keySource'], message: `the ${spec.kind} path must be absolute (the agent's working directory is no place for keys)` });
          return z.NEVER;
        }
        return { keySource: spec, keySourceText: block.keySource };
      } catch (error) {
        ctx.addIssue({ code: 'custom', path: ['keySource'], message: (error as Error).message });
        return z.NEVER;
      }
    }),
);

/** One storageClassMap entry that has an fscrypt: block. */
export const classSchema = z.object({
  hostDir: directory(),
  mountDir: optional(directory()),
  blockCleanerCommand: unusedValue,
  volumeMode,
  accessMode,
  fsType: goString(),
  namePattern,
  selector: optional(z.array(selectorTerm)),
  fscrypt: fscryptBlock,
});

export type ParsedClass = z.output<typeof classSchema>;

const labelsForPV = optional(z.record(z.string(), z.preprocess((v) => goText(v) ?? '', z.string()))).superRefine((labels, ctx) => {
  for (const [key, value] of Object.entries(labels ?? {})) {
    const keyWhy = labelKeyProblem(key);
    if (keyWhy !== undefined) ctx.addIssue({ code: 'custom', path: [key], message: `${quote(key)} is not a valid label key: ${keyWhy}` });
    const valueWhy = labelValueProblem(value);
    if (valueWhy !== undefined) ctx.addIssue({ code: 'custom', path: [key], message: `${quote(value)}: ${valueWhy}` });
  }
});

const minResyncPeriod = goString().transform((text, ctx) => {
  if (text === undefined || text === '') return undefined;
  try {
    const ms = parseGoDuration(text);
    if (ms < 0) {
      ctx.addIssue({ code: 'custom', message: `${quote(text)} is negative: a resync period is 0 (none) or more` });
      return z.NEVER;
    }
    return ms;
  } catch (error) {
    ctx.addIssue({ code: 'custom', message: (error as Error).message });
    return z.NEVER;
  }
});

/** Every top-level key (a ConfigMap key, a file) but storageClassMap, which storage-classes.ts reads. */
export const topLevelSchemas = {
  nodeLabelsForPV: optional(z.array(labelKey('label key'))),
  labelsForPV,
  useNodeNameOnly: goBool(),
  setPVOwnerRef: goBool(),
  minResyncPeriod,
  removeNodeNotReadyTaint: goBool(),
  provisionerNotReadyNodeTaintKey: goString().superRefine((key, ctx) => {
    if (key === undefined || key === '') return;
    const why = labelKeyProblem(key);
    if (why !== undefined) ctx.addIssue({ code: 'custom', message: `${quote(key)} is not a valid taint key: ${why}` });
  }),
  useAlphaAPI: unusedValue,
  useJobForCleaning: unusedValue,
  jobTolerations: unusedValue,
} as const;

export type TopLevelKey = keyof typeof topLevelSchemas | 'storageClassMap';
export const TOP_LEVEL_KEYS: readonly TopLevelKey[] = ['storageClassMap', ...(Object.keys(topLevelSchemas) as (keyof typeof topLevelSchemas)[])];
