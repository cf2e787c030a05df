// lib/agent/config: the node agent's configuration, the upstream
// local-static-provisioner's ConfigMap format read unchanged, plus an
// `fscrypt:` block per class the agent serves. docs/operations.md has the
// reference of every key.
export type { AgentConfig, ClassConfig, ConfigWarning, LoadedConfig, NodeSelectorRequirement, NodeSelectorTerm } from './types.js';
export { ConfigError, formatKeyPath, formatProblem, formatWarning, type ConfigProblem } from './config-error.js';
export { configFromSnapshot, DEFAULT_MIN_RESYNC_PERIOD_MS, DEFAULT_NOT_READY_TAINT_KEY, loadConfig } from './load.js';
export { readConfigDir, MAX_FILE_BYTES, type ConfigFile, type ConfigSnapshot } from './read-dir.js';
export { checkNamePattern, matchesNamePattern, splitNamePattern } from './name-pattern.js';
export { parseGoDuration } from './duration.js';
export { ConfigReloader, type ConfigReloaderOptions, type ReloadOutcome } from './reloader.js';
export { CONFIG_DIR_ENV, DEFAULT_CONFIG_DIR, resolveConfigDir } from './location.js';
