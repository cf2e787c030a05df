// init-slot SLOT --key-source SOURCE: make a mounted directory a slot.
import type { Command } from 'commander';
import { FSCRYPT_CONF_PATH, writeFscryptConf } from '../../keys/index.js';
import { initSlot } from '../../volume/index.js';
import { absolutePath, action, withCommonOptions, withHelp, type CommonOptions, type RunState } from '../command-kit.js';
import { KEY_SOURCE_HELP, keySourceArg } from '../key-source-arg.js';

interface InitSlotOptions extends CommonOptions {
  keySource?: string;
  name?: string;
  fscryptConf?: string | true;
}

export function registerInitSlot(program: Command, state: RunState): void {
  const command = program
    .command('init-slot')
    .summary('make a directory on an encrypt-capable filesystem a slot')
    .description(
      "Make SLOT (normally a mount point under a storage class's hostDir) a slot: create its protector, " +
        'wrapped under the key source, and its lifecycle state. Idempotent: a slot already initialized with the same key source is left as it is.',
    )
    .argument('<SLOT>', 'the slot root directory')
    .option('--key-source <SOURCE>', KEY_SOURCE_HELP)
    .option('--name <NAME>', 'protector name shown by `fscrypt status`', 'fscrypt-local')
    .option(
      '--fscrypt-conf [PATH]',
      `also write the stock fscrypt tool's configuration (default ${FSCRYPT_CONF_PATH}) if it is missing or invalid, ` +
        'so `fscrypt unlock <dir> --key=<kek file>` works for break-glass recovery; a valid one is kept',
    );
  withCommonOptions(command);
  withHelp(command, {
    examples: [
      'fscrypt-local init-slot /mnt/disks/ssd0 --key-source file:/etc/fscrypt-local/kek',
      'fscrypt-local init-slot /mnt/disks/ssd1 --key-source passphrase:/root/ssd1.pass --json',
      'fscrypt-local init-slot /mnt/disks/ssd2 --key-source kms:unix:///run/kms/plugin.sock',
      'fscrypt-local init-slot /mnt/disks/ssd3 --key-source file:/etc/fscrypt-local/kek --fscrypt-conf',
    ],
  });
  command.action(
    action(state, 'init-slot', async ({ output }, options: InitSlotOptions, slot: string) => {
      const source = keySourceArg(options.keySource);
      const info = await initSlot(absolutePath(slot), source, options.name === undefined ? {} : { name: options.name });
      const conf =
        options.fscryptConf === undefined ? undefined : await writeFscryptConf(options.fscryptConf === true ? FSCRYPT_CONF_PATH : absolutePath(options.fscryptConf));
      const summary = info.created
        ? `initialized slot ${info.root} (protector ${info.protector})\nnext: fscrypt-local prepare ${info.root} --key-source ${options.keySource}`
        : `slot ${info.root} was already initialized with this key source (protector ${info.protector}); nothing changed`;
      output.result(
        { slot: info.root, protector: info.protector, created: info.created, ...(conf === undefined ? {} : { fscryptConf: { path: conf.path, action: conf.action } }) },
        conf === undefined ? summary : `${summary}\nfscrypt configuration ${conf.path}: ${conf.action}${conf.backup ? ` (the invalid one was saved as ${conf.backup})` : ''}`,
      );
    }),
  );
}
