// run: the Kubernetes node agent, as the DaemonSet starts it (deploy/).
// Every flag has an environment variable, so the DaemonSet can set them from
// the downward API; a flag wins over its variable.
import type { Command } from 'commander';
import { action, type RunState } from '../command-kit.js';
import { EXIT, UsageError } from '../exit-codes.js';

const DEFAULTS = {
  config: '/etc/provisioner/config',
  namespace: 'default',
  csiEndpoint: 'unix:///csi/csi.sock',
  listenAddress: ':8080',
  kubeletDir: '/var/lib/kubelet',
  discoveryPeriod: '10s',
};

interface RunOptions {
  config?: string;
  nodeName?: string;
  namespace?: string;
  csiEndpoint?: string;
  kubeconfig?: string;
  listenAddress?: string;
  kubeletDir?: string;
  discoveryPeriod?: string;
  json?: boolean;
}

export function registerRun(program: Command, state: RunState): void {
  const command = program
    .command('run')
    .summary('run the Kubernetes node agent (the DaemonSet in deploy/ starts it)')
    .description(
      'Run the node agent: discover slots under the classes of the config (the upstream local-static-provisioner ConfigMap format, plus an fscrypt: block per class), ' +
        'create one PersistentVolume per slot, serve CSI to kubelet (a volume is unlocked while a pod uses it), and crypto-erase Released volumes. ' +
        'Runs until SIGTERM or SIGINT, then finishes in-flight work, wipes its keys from memory and removes its socket; published volumes stay published.',
    )
    .option('--config <DIR>', `the mounted ConfigMap directory [env FSCRYPT_LOCAL_CONFIG] (default ${DEFAULTS.config})`)
    .option('--node-name <NAME>', 'this node\'s name [env MY_NODE_NAME] (required)')
    .option('--namespace <NS>', `where Events go [env MY_NAMESPACE] (default ${DEFAULTS.namespace})`)
    .option('--csi-endpoint <unix:///PATH.sock>', `the CSI socket kubelet's registrar points at [env CSI_ENDPOINT] (default ${DEFAULTS.csiEndpoint})`)
    .option('--kubeconfig <FILE>', 'a kubeconfig file [env KUBECONFIG] (default: the in-cluster service account)')
    .option('--listen-address <HOST:PORT>', `/metrics, /healthz and /readyz (default ${DEFAULTS.listenAddress})`)
    .option('--kubelet-dir <DIR>', `kubelet's root directory: publish targets must lie under DIR/pods/ (default ${DEFAULTS.kubeletDir})`)
    .option('--discovery-period <DURATION>', `how often slots are discovered, a Go duration (default ${DEFAULTS.discoveryPeriod})`)
    .option('--json', 'accepted for symmetry; logs are always JSON lines on stderr');
  command.addHelpText(
    'after',
    [
      '',
      'Environment:',
      '  FSCRYPT_LOCAL_CONFIG, MY_NODE_NAME, MY_NAMESPACE, CSI_ENDPOINT, KUBECONFIG   as the flags above',
      '  UV_THREADPOOL_SIZE=64   set it in the container: one hung disk must not take the whole I/O pool',
      '',
      'Examples:',
      '  fscrypt-local run --node-name "$MY_NODE_NAME"                       # in the DaemonSet',
      '  fscrypt-local run --node-name n1 --kubeconfig ~/.kube/config --config ./config --csi-endpoint unix:///tmp/csi.sock --listen-address 127.0.0.1:8080',
      '',
      'Exit codes:',
      '  0    stopped by SIGTERM or SIGINT after a clean shutdown',
      '  2    usage (a missing --node-name, a bad flag value) or a configuration invalid at start (the message names the file and key)',
      '  1    anything else that stopped the agent (the log says what)',
      '',
      'Details: docs/operations.md',
      '',
    ].join('\n'),
  );
  command.action(
    action(state, 'run', async (_context, options: RunOptions) => {
      const { runAgent } = await import('../../agent/run-agent.js');
      const { parseGoDuration } = await import('../../agent/config/index.js');
      const env = process.env;
      const nodeName = options.nodeName ?? env.MY_NODE_NAME;
      if (!nodeName) throw new UsageError('run needs the node name: --node-name NAME, or MY_NODE_NAME from the downward API (fieldRef spec.nodeName)');
      let discoveryPeriodMs: number;
      try {
        discoveryPeriodMs = parseGoDuration(options.discoveryPeriod ?? DEFAULTS.discoveryPeriod);
      } catch (error) {
        throw new UsageError(`--discovery-period: ${(error as Error).message}`);
      }
      if (discoveryPeriodMs < 1000) throw new UsageError('--discovery-period must be at least 1s');
      // An invalid configuration is ERR_INVALID_ARG: exit 2 through the one exit-code table, its message naming file and key.
      const running = await runAgent({
          configDir: options.config ?? env.FSCRYPT_LOCAL_CONFIG ?? DEFAULTS.config,
          nodeName,
          namespace: options.namespace ?? env.MY_NAMESPACE ?? DEFAULTS.namespace,
          csiEndpoint: options.csiEndpoint ?? env.CSI_ENDPOINT ?? DEFAULTS.csiEndpoint,
          kubeconfig: options.kubeconfig ?? env.KUBECONFIG,
          listenAddress: options.listenAddress ?? DEFAULTS.listenAddress,
          kubeletDir: options.kubeletDir ?? DEFAULTS.kubeletDir,
          discoveryPeriodMs,
        });
      await new Promise<void>((resolve) => {
        const stop = () => {
          process.off('SIGTERM', stop);
          process.off('SIGINT', stop);
          void running.stop().then(resolve, resolve);
        };
        process.on('SIGTERM', stop);
        process.on('SIGINT', stop);
      });
      return EXIT.OK;
    }),
  );
}
