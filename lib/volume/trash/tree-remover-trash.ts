// The background side of crypto-erase: retired generation directories are
// moved into a slot's trash and deleted here, one tree at a time, while the
// new generation is already in use. Nothing is remembered but the trash
// directories themselves: after a restart, resume() queues whatever is still
// in them, and removeTree() treats a half-deleted tree as a smaller tree.
import { lstat, readdir, unlink } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { FscryptError } from '../../kernel/index.js';
import { removeTree, type RemoveProgress, type RemoveTreeResult } from './tree-remover.js';

export interface TrashCollectorOptions {
  /** Progress of the tree being deleted; must not throw. */
  onProgress?(tree: string, progress: RemoveProgress): void;
  /** A tree that could not be (fully) deleted; it stays in the trash until queued again. */
  onError?(tree: string, error: Error): void;
  /** Unlinks in flight within one directory (see removeTree). */
  concurrency?: number;
}

export interface TrashStatus {
  /** The tree being deleted now, with its progress. */
  current?: { tree: string; progress: RemoveProgress };
  queued: string[];
  /** Totals over all trees deleted (or partly deleted) so far. */
  removed: { trees: number; files: number; dirs: number };
  /** Mount points found in trees and left in place. */
  skippedMounts: string[];
  failures: { tree: string; error: Error }[];
}

export class TrashCollector {
  private readonly queue: string[] = [];
  private readonly removed = { trees: 0, files: 0, dirs: 0 };
  private readonly skippedMounts: string[] = [];
  private readonly failures: { tree: string; error: Error }[] = [];
  private current: { tree: string; progress: RemoveProgress; abort: AbortController } | undefined;
  private worker: Promise<void> | undefined;
  private closed = false;

  constructor(private readonly options: TrashCollectorOptions = {}) {}

  /** Queues a tree (an absolute path) for deletion; a tree already queued or running is not queued twice. */
  add(tree: string): void {
    if (this.closed) throw new FscryptError('the trash collector is closed', { code: 'ERR_CLOSED' });
    if (!tree.startsWith('/')) throw FscryptError.invalidArgument(`tree must be an absolute path, got ${JSON.stringify(tree)}`);
    const path = resolve(tree);
    if (this.current?.tree === path || this.queue.includes(path)) return;
    this.queue.push(path);
    this.worker ??= this.work();
  }

  /**
   * Queues every entry of a trash directory (after a restart: whatever a
   * previous run left). A missing trash directory holds nothing. Returns the
   * queued paths.
   */
  async resume(trashDir: string): Promise<string[]> {
    if (!trashDir.startsWith('/')) throw FscryptError.invalidArgument(`trashDir must be an absolute path, got ${JSON.stringify(trashDir)}`);
    let names: string[];
    try {
      const stat = await lstat(trashDir);
      if (!stat.isDirectory()) {
        throw new FscryptError(`the trash '${trashDir}' is not a directory (a symlink is never followed)`, { code: 'ERR_UNSAFE_PATH', path: trashDir });
      }
      names = await readdir(trashDir);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw error;
    }
    const trees = names.sort().map((name) => join(resolve(trashDir), name));
    for (const tree of trees) this.add(tree);
    return trees;
  }

  /** Resolves when nothing is queued or running. */
  async idle(): Promise<void> {
    while (this.worker) await this.worker;
  }

  status(): TrashStatus {
    const status: TrashStatus = {
      queued: [...this.queue],
      removed: { ...this.removed },
      skippedMounts: [...this.skippedMounts],
      failures: [...this.failures],
    };
    if (this.current) status.current = { tree: this.current.tree, progress: { ...this.current.progress } };
    return status;
  }

  /** Stops the tree being deleted (it stays in the trash, to be resumed) and drops the queue. */
  async close(): Promise<void> {
    this.closed = true;
    this.queue.length = 0;
    this.current?.abort.abort();
    await this.idle();
  }

  private async work(): Promise<void> {
    try {
      for (let tree = this.queue.shift(); tree !== undefined; tree = this.queue.shift()) {
        await this.collect(tree);
      }
    } finally {
      this.worker = undefined;
    }
  }

  private async collect(tree: string): Promise<void> {
    const abort = new AbortController();
    const current = { tree, progress: { files: 0, dirs: 0 }, abort };
    this.current = current;
    try {
      const result = await this.removeEntry(tree, current.progress, abort.signal);
      this.removed.trees++;
      this.removed.files += result.files;
      this.removed.dirs += result.dirs;
      this.skippedMounts.push(...result.skippedMounts);
    } catch (error) {
      if (abort.signal.aborted) return;
      const failure = error instanceof Error ? error : new Error(String(error));
      this.failures.push({ tree, error: failure });
      this.options.onError?.(tree, failure);
    } finally {
      this.current = undefined;
    }
  }

  /** A tree, or a stray non-directory in the trash (unlinking a name never follows it). */
  private async removeEntry(tree: string, progress: RemoveProgress, signal: AbortSignal): Promise<RemoveTreeResult> {
    let stat;
    try {
      stat = await lstat(tree);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { files: 0, dirs: 0, skippedMounts: [] };
      throw error;
    }
    if (!stat.isDirectory()) {
      await unlink(tree);
      return { files: 1, dirs: 0, skippedMounts: [] };
    }
    const options = {
      signal,
      onProgress: (p: RemoveProgress) => {
        Object.assign(progress, p);
        this.options.onProgress?.(tree, p);
      },
      ...(this.options.concurrency === undefined ? {} : { concurrency: this.options.concurrency }),
    };
    return removeTree(tree, options);
  }
}
