// Where the agent finds its config: `--config DIR`, else the environment
// variable FSCRYPT_LOCAL_CONFIG, else upstream's mount point of the
// ConfigMap, so the upstream chart's volume layout works unchanged.

/** Upstream's path (pkg/common.ProvisionerConfigPath), without its trailing '/'. */
export const DEFAULT_CONFIG_DIR = '/etc/provisioner/config';
export const CONFIG_DIR_ENV = 'FSCRYPT_LOCAL_CONFIG';

/** The config directory from the --config option and the environment, in that order. */
export function resolveConfigDir(option: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  if (option !== undefined && option !== '') return option;
  const fromEnv = env[CONFIG_DIR_ENV];
  return fromEnv !== undefined && fromEnv !== '' ? fromEnv : DEFAULT_CONFIG_DIR;
}
