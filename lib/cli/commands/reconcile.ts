// reconcile SLOT: bring a slot back to a consistent state after a crash or
// reboot (what the agent does at start), and finish deleting old ciphertext.
import type { Command } from 'commander';
import type { OpenProtector } from '../../keys/index.js';
import { openSlotProtector, reconcile } from '../../volume/index.js';
import { absolutePath, action, withCommonOptions, withHelp, type CommonOptions, type RunState } from '../command-kit.js';
import { KEY_SOURCE_HELP, keySourceArg } from '../key-source-arg.js';
import { commandTrash, finishTrash } from '../trash-wait.js';

interface ReconcileOptions extends CommonOptions {
  keySource?: string;
  wait: boolean;
  usePreviousState?: boolean;
}

export function registerReconcile(program: Command, state: RunState): void {
  const command = program
    .command('reconcile')
    .summary('repair a slot after a crash or reboot; resume deleting old ciphertext')
    .description(
      "Rebuild SLOT's state from its metadata, the kernel's key status and the mount table: roll back an interrupted prepare, finish an " +
        'interrupted erase, forget targets no longer mounted, lock a key left in the kernel with nothing published, and resume deleting ' +
        'retired generations. With --key-source it can also re-add the key of a volume that is still published. ' +
        'A slot whose newest state copy is damaged is refused; --use-previous-state continues from the previous copy.',
    )
    .argument('<SLOT>', 'the slot root directory')
    .option('--key-source <SOURCE>', `${KEY_SOURCE_HELP} (optional)`)
    .option('--no-wait', 'do not wait for old ciphertext to be deleted')
    .option(
      '--use-previous-state',
      'if the newest copy of the slot state is damaged (a power loss in the middle of a write), continue from the previous copy and repair the file; a rollback never deletes a volume directory holding data',
    );
  withCommonOptions(command);
  withHelp(command, {
    details: 'JSON result: { ok, slot, actions: [string], warnings: [string], trash: { deleted, files, dirs, left } }.',
    examples: [
      'fscrypt-local reconcile /mnt/disks/ssd0',
      'fscrypt-local reconcile /mnt/disks/ssd0 --key-source file:/etc/fscrypt-local/kek --json',
      'fscrypt-local reconcile /mnt/disks/ssd0 --use-previous-state   # after a power loss damaged the slot state',
    ],
  });
  command.action(
    action(state, 'reconcile', async ({ output, progress }, options: ReconcileOptions, slot: string) => {
      const source = options.keySource === undefined ? undefined : keySourceArg(options.keySource);
      const usePreviousState = options.usePreviousState === true;
      const protector: OpenProtector | undefined = source === undefined ? undefined : await openSlotProtector(absolutePath(slot), source, { usePreviousState });
      const trash = commandTrash(progress);
      try {
        const report = await reconcile(absolutePath(slot), protector, { onProgress: progress.hook, trash, usePreviousState });
        const deletion = await finishTrash(trash, progress, options.wait);
        const lines = [
          report.actions.length === 0 ? `${report.slot}: consistent, nothing to do` : `${report.slot}:`,
          ...report.actions.map((a) => `  done: ${a}`),
          ...report.warnings.map((w) => `  warning: ${w}`),
        ];
        if (deletion.left.length > 0) lines.push(`  old ciphertext left for background deletion: ${deletion.left.join(', ')}`);
        output.result({ ...report, trash: deletion }, lines.join('\n'));
      } finally {
        protector?.close();
        await trash.close();
      }
    }),
  );
}
