// Everything smoke makes (a loop-mounted image, a temporary slot, a KEK
// file, a key in the kernel) is registered here the moment it exists and
// undone in reverse order: after the run, on failure, and on SIGINT/SIGTERM
// (then the process exits 130). Each undo step runs even if another fails.
import { EXIT } from '../exit-codes.js';

type Undo = () => void | Promise<void>;

export class CleanupStack {
  private readonly steps: { what: string; undo: Undo }[] = [];
  private running: Promise<string[]> | undefined;
  private readonly onSignal = (signal: NodeJS.Signals): void => {
    process.stderr.write(`\nfscrypt-local smoke: ${signal}: cleaning up\n`);
    void this.run().finally(() => process.exit(EXIT.INTERRUPTED));
  };
  private readonly onExit = (): void => {
    // Last resort (process.exit from elsewhere): only synchronous work can run here.
    for (const step of this.steps.splice(0).reverse()) {
      try {
        void step.undo();
      } catch {
        /* best effort */
      }
    }
  };

  constructor() {
    process.on('SIGINT', this.onSignal);
    process.on('SIGTERM', this.onSignal);
    process.on('exit', this.onExit);
  }

  /** Registers how to undo something just made; returns a function that undoes it now. */
  push(what: string, undo: Undo): () => Promise<void> {
    const step = { what, undo };
    this.steps.push(step);
    return async () => {
      const index = this.steps.indexOf(step);
      if (index < 0) return;
      this.steps.splice(index, 1);
      await undo();
    };
  }

  /** Undoes everything, newest first; returns what could not be undone. */
  run(): Promise<string[]> {
    this.running ??= (async () => {
      const failures: string[] = [];
      for (let step = this.steps.pop(); step !== undefined; step = this.steps.pop()) {
        try {
          await step.undo();
        } catch (error) {
          failures.push(`${step.what}: ${error instanceof Error ? error.message : String(error)}`);
        }
      }
      process.off('SIGINT', this.onSignal);
      process.off('SIGTERM', this.onSignal);
      process.off('exit', this.onExit);
      return failures;
    })();
    return this.running;
  }
}
