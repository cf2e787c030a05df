// Rotation of a slot's key source: the protector key P is rewrapped under
// the new source; policy files, volume keys and data are not touched, and the
// protector keeps its descriptor, so every policy still names it.
//
// The steps, and what opens the slot if the process dies right after each:
//   opened       P unwrapped with the old source          old
//   sealed       P wrapped by the new source (in memory)   old
//   staged       new record written + fsynced in tmp/      old
//   same storage (file <-> passphrase, file -> file, kms -> kms):
//     old-linked   old record hard-linked into erase/      old
//     committed    new record renamed over the old one     new
//   other storage (file or passphrase <-> kms):
//     committed    new record renamed into place           old and new
//     old-retired  old record moved into erase/            new
//   erased       old record overwritten in place, unlinked new
// A later rotate() with the same arguments finishes the job from any of
// these states: when the old source no longer opens the protector but the
// new one does, the rotation was committed and only the clean-up is left.
import { FscryptError, isFscryptError } from '../kernel/index.js';
import { protectorTag } from './metadata-store.js';
import { encodeProtector, protectorInfo, sourceOf, storageOf, type ProtectorInfo, type SlotRecords } from './slot-records.js';
import { wipe } from './secret.js';
import type { KeySourceProvider, ProtectorRecord } from './sources/provider.js';

/** Every step a rotation can report, in order (one path reaches old-linked, the other old-retired). */
export const ROTATION_STEPS = ['opened', 'sealed', 'staged', 'old-linked', 'committed', 'old-retired', 'erased'] as const;
export type RotationStep = (typeof ROTATION_STEPS)[number];

type StepHook = (step: RotationStep) => void | Promise<void>;
let stepHook: StepHook | undefined;

/**
 * For crash tests only: called after each step of every rotation in this
 * process. Not exported from the package.
 */
export function setRotationStepHook(hook: StepHook | undefined): void {
  stepHook = hook;
}

async function step(name: RotationStep): Promise<void> {
  if (stepHook !== undefined) await stepHook(name);
}

export interface RotationContext {
  records: SlotRecords;
  /** The record a source would open (ERR_WRONG_KEY: none, or another kind; ERR_BAD_METADATA: ambiguous; ENOENT). */
  resolve(provider: KeySourceProvider, descriptor?: string): Promise<ProtectorRecord>;
  /** P from a record (ERR_WRONG_KEY when the source does not open it). */
  unseal(provider: KeySourceProvider, record: ProtectorRecord): Promise<Buffer>;
}

const NOT_OPENED = ['ERR_WRONG_KEY', 'ERR_BAD_METADATA', 'ENOENT'] as const;

export async function rotateProtector(
  ctx: RotationContext,
  oldSource: KeySourceProvider,
  newSource: KeySourceProvider,
  descriptor?: string,
): Promise<ProtectorInfo> {
  const { records } = ctx;
  const { store } = records;
  let oldRecord: ProtectorRecord;
  try {
    oldRecord = await ctx.resolve(oldSource, descriptor);
  } catch (error) {
    if (!isFscryptError(error, ...NOT_OPENED)) throw error;
    return finishCommitted(ctx, oldSource, newSource, descriptor, error);
  }
  let key: Buffer;
  try {
    key = await ctx.unseal(oldSource, oldRecord);
  } catch (error) {
    if (!isFscryptError(error, ...NOT_OPENED)) throw error;
    // Only this protector can have been rotated, whatever else the slot holds.
    return finishCommitted(ctx, oldSource, newSource, oldRecord.data.descriptor, error);
  }
  try {
    await step('opened');
    const d = oldRecord.data.descriptor;
    await store.sweep(protectorTag(d)); // leftovers of an earlier, interrupted run
    const newRecord = await newSource.seal(key, { descriptor: d, name: oldRecord.data.name });
    await step('sealed');
    if (newRecord.storage === 'fscrypt') await store.ensureFscryptDirs();
    const staged = await store.stage(protectorTag(d), encodeProtector(newRecord));
    await step('staged');
    const oldPath = records.protectorPath(oldRecord.storage, d);
    const newPath = records.protectorPath(newRecord.storage, d);
    if (oldPath === newPath) {
      // Keep a second name for the old record's inode, so that its blocks can
      // be overwritten once the rename below has replaced it.
      await store.linkToErase(oldPath, protectorTag(d));
      await step('old-linked');
      await store.commit(staged, newPath);
      await step('committed');
    } else {
      await store.commit(staged, newPath);
      await step('committed');
      await store.moveToErase(oldPath, protectorTag(d));
      await step('old-retired');
    }
    await store.sweep(protectorTag(d));
    await step('erased');
    return protectorInfo(newRecord);
  } finally {
    wipe(key);
  }
}

/** The old source does not open the protector: done already, if the new one does. */
async function finishCommitted(
  ctx: RotationContext,
  oldSource: KeySourceProvider,
  newSource: KeySourceProvider,
  descriptor: string | undefined,
  oldError: FscryptError,
): Promise<ProtectorInfo> {
  let record: ProtectorRecord;
  let key: Buffer;
  try {
    record = await ctx.resolve(newSource, descriptor);
    key = await ctx.unseal(newSource, record);
  } catch (newError) {
    if (!isFscryptError(newError, ...NOT_OPENED)) throw newError;
    throw new FscryptError(`cannot rotate: ${oldError.message}; ${newSource.description} does not open it either, so no rotation is in progress. Nothing was changed`, {
      code: oldError.code,
      ...(oldError.path === undefined ? {} : { path: oldError.path }),
      cause: oldError,
    });
  }
  const { store } = ctx.records;
  try {
    const d = record.data.descriptor;
    // Interrupted between committing into another storage and retiring the old record?
    const oldStorage = storageOf(oldSource.source);
    if (oldStorage !== record.storage) {
      const leftover = await ctx.records.readProtector(oldStorage, d).catch(() => null);
      if (leftover !== null && sourceOf(leftover) === oldSource.source) {
        await store.moveToErase(ctx.records.protectorPath(oldStorage, d), protectorTag(d));
      }
    }
    await store.sweep(protectorTag(d));
    return protectorInfo(record);
  } finally {
    wipe(key);
  }
}
