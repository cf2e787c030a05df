// Progress of long work (lifecycle steps, busy files being waited for,
// background deletion of old ciphertext), on stderr only, and only when
// someone watches: stderr is a terminal, or `--progress` was given.
import { describeBlockers, type ProgressEvent, type RemoveProgress } from '../volume/index.js';
import type { TextSink } from './output.js';

// Transient updates on a non-terminal are printed at most this often.
const UPDATE_INTERVAL_MS = 1000;

export class Progress {
  private transient = false;
  private lastUpdate = 0;

  constructor(
    readonly enabled: boolean,
    private readonly stream: TextSink & { isTTY?: boolean } = process.stderr,
  ) {}

  /** On when asked with `--progress`, off with `--no-progress`, else when stderr is a terminal. */
  static forOption(option: boolean | undefined, stream: TextSink & { isTTY?: boolean } = process.stderr): Progress {
    return new Progress(option ?? stream.isTTY === true, stream);
  }

  /** A line that stays. */
  line(text: string): void {
    if (!this.enabled) return;
    this.clear();
    this.stream.write(`${text}\n`);
  }

  /** A line that the next one replaces on a terminal (a plain line elsewhere). */
  update(text: string): void {
    if (!this.enabled) return;
    if (this.stream.isTTY === true) {
      this.stream.write(`\r\x1b[K${text}`);
      this.transient = true;
    } else {
      this.stream.write(`${text}\n`);
    }
  }

  /** Like update, for frequent counters: elsewhere than a terminal, at most one line a second. */
  tick(text: string): void {
    if (!this.enabled) return;
    if (this.stream.isTTY !== true) {
      const now = Date.now();
      if (now - this.lastUpdate < UPDATE_INTERVAL_MS) return;
      this.lastUpdate = now;
    }
    this.update(text);
  }

  /** Ends a transient line. */
  clear(): void {
    if (!this.transient) return;
    this.stream.write('\r\x1b[K');
    this.transient = false;
  }

  /** The HookOptions.onProgress of lib/volume. */
  readonly hook = (event: ProgressEvent): void => {
    switch (event.kind) {
      case 'step':
        this.update(`  ${event.step.replace(':', ': ').replaceAll('-', ' ')}`);
        break;
      case 'busy':
        this.line(
          `  ${event.hook}: files still in use (attempt ${event.attempt}), waiting` +
            (event.blockers.length > 0 ? `:\n${indent(describeBlockers(event.blockers))}` : ''),
        );
        break;
      case 'note':
        this.line(`  ${event.hook}: ${event.message}`);
        break;
    }
  };

  /** The TrashCollector onProgress: deletion of a retired generation. */
  readonly trash = (tree: string, progress: RemoveProgress): void => {
    this.tick(`  deleting old ciphertext ${tree}: ${progress.files} files, ${progress.dirs} directories removed`);
  };
}

function indent(text: string): string {
  return text
    .split('\n')
    .map((l) => `    ${l}`)
    .join('\n');
}
