// status [PATH...]: slots and their volumes (phase, key status, targets,
// retired generations still being deleted), as a table or JSON.
import { lstat, readdir } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { Command } from 'commander';
import { FscryptError } from '../../kernel/index.js';
import { describeBlockers, isSlot, slotStatus, type Blocker, type SlotStatus } from '../../volume/index.js';
import { isMountPoint } from '../../volume/mounts/mounts-location.js';
import { VOLUME_NAME_PATTERN } from '../../volume/slot/slot-layout.js';
import { absolutePath, action, withCommonOptions, withHelp, type CommonOptions, type RunState } from '../command-kit.js';
import { EXIT, UsageError, exitCodeFor, type ExitCode } from '../exit-codes.js';
import { errorReport, printable, type ErrorReport } from '../output.js';
import { renderTable } from '../table.js';

const NO_PATH = `status needs to know where to look. Pass one or more of:
  - a slot root (a mount point initialized with \`fscrypt-local init-slot\`), e.g. /mnt/disks/ssd0
  - a volume directory in a slot, e.g. /mnt/disks/ssd0/vol-3
  - a directory holding slots (a storage class's hostDir), e.g. /mnt/disks
Example: fscrypt-local status /mnt/disks`;

export function registerStatus(program: Command, state: RunState): void {
  const command = program
    .command('status')
    .summary('show slots and volumes: phase, key status, targets, trash')
    .description(
      "Show each slot PATH names: its volume's phase (preparing, ready), a generation still being erased, whether its key is in the kernel, where it is published, " +
        'and retired generations whose ciphertext is still being deleted. PATH may be a slot, a vol-<generation> directory, or a directory holding slots.',
    )
    .argument('[PATH...]', 'slots, volume directories, or directories holding slots');
  withCommonOptions(command);
  withHelp(command, {
    details:
      'JSON result: { ok, slots: [{ root, protector, volume: null | { name, path, generation, identifier, phase, key, adminUnlocked, targets }, trash, strayVolumes }], ' +
      "errors: [{ path, code, message }] }. key is 'absent' (locked), 'present' (unlocked) or 'incompletely-removed' (files busy).",
    examples: ['fscrypt-local status /mnt/disks', 'fscrypt-local status /mnt/disks/ssd0 /mnt/disks/ssd1 --json'],
  });
  command.action(
    action(state, 'status', async ({ output }, _options: CommonOptions, paths: string[]) => {
      if (paths.length === 0) throw new UsageError(NO_PATH);
      const slots: SlotStatus[] = [];
      const errors: (ErrorReport & { path: string })[] = [];
      let exitCode: ExitCode = EXIT.OK;
      for (const path of paths.map(absolutePath)) {
        try {
          for (const root of await slotsAt(path)) {
            if (!slots.some((s) => s.root === root)) slots.push(await slotStatus(root));
          }
        } catch (error) {
          errors.push({ path, ...errorReport(error) });
          if (exitCode === EXIT.OK) exitCode = exitCodeFor(error);
        }
      }
      output.result({ slots, errors }, renderStatus(slots, errors), errors.length === 0);
      return exitCode;
    }),
  );
}

/** The slot roots a path names: itself, the slot of a volume directory, or the slots directly inside it. */
async function slotsAt(path: string): Promise<string[]> {
  const stat = await lstat(path);
  if (await isSlot(path)) return [path];
  if (VOLUME_NAME_PATTERN.test(basename(path)) && (await isSlot(dirname(path)))) return [dirname(path)];
  if (stat.isDirectory()) {
    const found: string[] = [];
    for (const entry of (await readdir(path, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
      if (entry.isDirectory() && (await isSlot(join(path, entry.name)))) found.push(join(path, entry.name));
    }
    if (found.length > 0) return found;
    if (!(await isMountPoint(path))) {
      // Most likely a slot whose disk is not mounted: init-slot is not the fix (and would refuse).
      throw new FscryptError(
        `'${path}' is not a slot, a volume directory, or a directory holding slots: it is not a mount point, and a slot is the root of a filesystem of its own. ` +
          'To fix: if it is a slot, mount its disk there; if it is a directory holding slots, none of them is mounted',
        { code: 'ERR_NOT_MOUNTPOINT', path },
      );
    }
  }
  throw new FscryptError(`'${path}' is not a slot, a volume directory, or a directory holding slots. To make it a slot: \`fscrypt-local init-slot ${path} --key-source ...\``, {
    code: 'ERR_NOT_INITIALIZED',
    path,
  });
}

/** describeBlockers' lines, one blocker (or the count of those left out) per entry, whatever the names hold. */
function blockerLines(blockers: readonly Blocker[]): string[] {
  const shown = blockers.slice(0, BLOCKERS_SHOWN).map((b) => describeBlockers([b]));
  if (blockers.length > BLOCKERS_SHOWN) shown.push(`… and ${blockers.length - BLOCKERS_SHOWN} more`);
  return shown;
}

// As many as describeBlockers names by default.
const BLOCKERS_SHOWN = 20;

function keyText(volume: NonNullable<SlotStatus['volume']>): string {
  const key = volume.key === 'absent' ? 'locked' : volume.key === 'present' ? 'unlocked' : 'busy (incompletely removed)';
  return volume.adminUnlocked ? `${key}, admin` : key;
}

/**
 * The human form. Every name in it (slot roots, targets, trash entries,
 * blockers, paths in errors) passes through printable(), one output line
 * at a time: the only line breaks are the ones made here.
 */
export function renderStatus(slots: SlotStatus[], errors: (ErrorReport & { path: string })[]): string {
  const lines: string[] = [];
  if (slots.length > 0) {
    lines.push(
      renderTable(
        ['SLOT', 'VOLUME', 'PHASE', 'KEY', 'TARGETS', 'TRASH'],
        slots.map((s) =>
          [
            s.root,
            s.volume?.name ?? '-',
            s.volume?.phase ?? 'no volume',
            s.volume ? keyText(s.volume) : '-',
            String(s.volume?.targets.length ?? 0),
            s.trash.length === 0 ? '-' : `${s.trash.length} being deleted`,
          ].map(printable),
        ),
      ),
    );
  }
  const line = (text: string): void => void lines.push(printable(text));
  for (const s of slots) {
    for (const t of s.volume?.targets ?? []) {
      const unmounted = s.volume?.pendingLock ? ' [unmounted; the key removal waits for busy files]' : ' [recorded, but not mounted: run reconcile]';
      line(`${s.root}: published at ${t.path}${t.readonly ? ' (read-only)' : ''}${t.mounted ? '' : unmounted}`);
    }
    if (s.volume?.pendingLock !== undefined) {
      const held = s.volume.pendingLock.blockers;
      line(`${s.root}: ${s.volume.name}'s key is still in the kernel (${s.volume.key}) with no target: a lock is waiting for busy files${held.length > 0 ? ':' : ''}`);
      // One line per blocker, indented under its volume, each escaped on its own: a tenant names its processes
      // and files, and a newline in one of those names must show as \n, not start a line of its own.
      for (const blocker of blockerLines(held)) lines.push(`    ${printable(blocker)}`);
    }
    for (const problem of s.metadataProblems) line(`${s.root}: ${problem}`);
    if (s.volume?.problem !== undefined) line(`${s.root}: ${s.volume.name} cannot be used: ${s.volume.problem}; is the slot's disk the right one?`);
    if (s.retiring !== null) line(`${s.root}: the erase of ${s.retiring} was interrupted: run reconcile to finish it`);
    if (s.trash.length > 0) line(`${s.root}: old ciphertext awaiting deletion: ${s.trash.join(', ')}`);
    if (s.strayVolumes.length > 0) line(`${s.root}: not the current volume, left untouched: ${s.strayVolumes.join(', ')}`);
  }
  // Escaped whole: the errors status meets (a path that is not a slot, a damaged state) are one line each.
  for (const e of errors) line(`${e.path}: ${e.message} (${e.code})`);
  return lines.join('\n');
}
