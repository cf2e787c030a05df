// From the files of a config directory to an AgentConfig: each file is a
// top-level key, parsed on its own and validated with its schema; the
// defaults are upstream's (plus ours where upstream has none); everything
// accepted but not used is a warning. Every problem in every file is
// collected before throwing, in one ConfigError.
import { ConfigError, type ConfigProblem } from './config-error.js';
import { applySchema, warn, type FileContext } from './file-context.js';
import { readConfigDir, type ConfigSnapshot } from './read-dir.js';
import { TOP_LEVEL_KEYS, topLevelSchemas, type TopLevelKey } from './schema.js';
import { readStorageClasses } from './storage-classes.js';
import type { AgentConfig, ClassConfig, ConfigWarning, LoadedConfig } from './types.js';
import { parseConfigFile } from './yaml-file.js';

/** upstream's default (cmd/local-volume-provisioner/main.go). */
export const DEFAULT_MIN_RESYNC_PERIOD_MS = 5 * 60 * 1000;
/** The chart's default; upstream's code has none (an unset key never matches a taint). */
export const DEFAULT_NOT_READY_TAINT_KEY = 'sig-storage-local-static-provisioner/agent-not-ready';

const UNUSED: Partial<Record<TopLevelKey, string>> = {
  useAlphaAPI: 'unused: fscrypt-local always writes spec.nodeAffinity (the alpha annotation is for Kubernetes before 1.10)',
  useJobForCleaning: 'unused: a block-only key (fscrypt-local serves no block volumes; it crypto-erases in-process, with no cleanup Jobs)',
  jobTolerations: 'unused: a block-only key (fscrypt-local starts no cleanup Jobs)',
};

/** Which top-level key a file is, as upstream's decoder matches it (case-insensitively). */
function topLevelKey(name: string): TopLevelKey | undefined {
  return TOP_LEVEL_KEYS.find((k) => k === name) ?? TOP_LEVEL_KEYS.find((k) => k.toLowerCase() === name.toLowerCase());
}

interface Values {
  classes: ClassConfig[];
  top: Partial<Record<keyof typeof topLevelSchemas, unknown>>;
}

function readFiles(snapshot: ConfigSnapshot, problems: ConfigProblem[], warnings: ConfigWarning[]): Values {
  const values: Values = { classes: [], top: {} };
  const byKey = new Map<TopLevelKey, string>();
  for (const file of snapshot.files) {
    const key = topLevelKey(file.name);
    if (key === undefined) {
      warnings.push({ file: file.name, key: '', message: 'unknown key: ignored (neither an upstream provisioner key nor one of fscrypt-local)' });
      continue;
    }
    if (key !== file.name) {
      if (snapshot.files.some((f) => f.name === key)) {
        warnings.push({ file: file.name, key: '', message: `ignored: ${key} is also given, spelt as it should be` });
        continue;
      }
      warnings.push({ file: file.name, key: '', message: `read as ${key} (upstream matches keys regardless of case): spell it ${key}` });
    }
    byKey.set(key, file.name);
    const parse = parseConfigFile(file.name, file.text);
    problems.push(...parse.problems);
    warnings.push(...parse.warnings);
    if (parse.parsed === undefined) continue;
    const ctx: FileContext = { file: file.name, lineOf: parse.parsed.lineOf, problems, warnings };
    const value = parse.parsed.value;
    if (key === 'storageClassMap') {
      values.classes = readStorageClasses(value, ctx);
      continue;
    }
    const unused = UNUSED[key];
    if (unused !== undefined && value !== null) warn(ctx, [], unused);
    values.top[key] = applySchema(ctx, topLevelSchemas[key], value, []);
  }
  if (!byKey.has('storageClassMap')) {
    warnings.push({ file: undefined, key: 'storageClassMap', message: 'absent: no storage class is configured, the agent serves nothing' });
  } else if (values.classes.length === 0 && problems.length === 0) {
    warnings.push({ file: byKey.get('storageClassMap'), key: '', message: 'no class has an fscrypt: block: the agent serves nothing' });
  }
  const removeTaint = values.top.removeNodeNotReadyTaint === true;
  const taintFile = byKey.get('provisionerNotReadyNodeTaintKey');
  if (!removeTaint && taintFile !== undefined && typeof values.top.provisionerNotReadyNodeTaintKey === 'string') {
    warnings.push({ file: taintFile, key: '', message: 'unused: removeNodeNotReadyTaint is not true' });
  }
  return values;
}

function assemble(values: Values): AgentConfig {
  const top = values.top as {
    nodeLabelsForPV?: string[];
    labelsForPV?: Record<string, string>;
    useNodeNameOnly?: boolean;
    setPVOwnerRef?: boolean;
    minResyncPeriod?: number;
    removeNodeNotReadyTaint?: boolean;
    provisionerNotReadyNodeTaintKey?: string;
  };
  return {
    classes: values.classes,
    nodeLabelsForPV: top.nodeLabelsForPV ?? [],
    labelsForPV: top.labelsForPV ?? {},
    useNodeNameOnly: top.useNodeNameOnly ?? false,
    setPVOwnerRef: top.setPVOwnerRef ?? false,
    minResyncPeriodMs: top.minResyncPeriod ?? DEFAULT_MIN_RESYNC_PERIOD_MS,
    removeNodeNotReadyTaint: top.removeNodeNotReadyTaint ?? false,
    notReadyTaintKey: top.provisionerNotReadyNodeTaintKey || DEFAULT_NOT_READY_TAINT_KEY,
  };
}

/** The config a snapshot of the directory holds; ConfigError listing every problem. */
export function configFromSnapshot(snapshot: ConfigSnapshot): LoadedConfig {
  const problems: ConfigProblem[] = [];
  const warnings: ConfigWarning[] = [...snapshot.warnings];
  const values = readFiles(snapshot, problems, warnings);
  if (problems.length > 0) throw new ConfigError(problems);
  return { config: assemble(values), warnings, digest: snapshot.digest };
}

/** Reads and validates the config directory (a mounted ConfigMap). Throws ConfigError. */
export async function loadConfig(dir: string): Promise<LoadedConfig> {
  return configFromSnapshot(await readConfigDir(dir));
}
