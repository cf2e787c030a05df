// The smoke test's checklist: each check is { name, ok, detail, remedy? },
// in the order run; a failed check carries what to do about it. Rendered as
// ✓/✗ lines for people, or as JSON.
import { errorReport } from '../output.js';

export interface SmokeCheck {
  name: string;
  ok: boolean;
  detail: string;
  remedy?: string;
  /** Passed without verifying (a tool is missing); detail says why. */
  skipped?: true;
}

export interface SmokeReport {
  ok: boolean;
  /** 'scratch': a loop-backed ext4 image made for the test; 'pool': a temporary slot in --pool. */
  mode: 'scratch' | 'pool';
  /** Where the lifecycle ran (the scratch mount point or the pool). */
  target: string | null;
  checks: SmokeCheck[];
  /** Checks not run because an earlier one failed. */
  notRun: string[];
}

/** A check's failure, with the remedy to print under it. */
export class CheckFailure extends Error {
  constructor(
    message: string,
    readonly remedy?: string,
  ) {
    super(message);
  }
}

/** What a check function returns: its detail, or a skipped marker. */
export type CheckOutcome = string | { detail: string; skipped: true };

export class Checklist {
  readonly checks: SmokeCheck[] = [];

  constructor(private readonly onCheck: (check: SmokeCheck) => void = () => undefined) {}

  get ok(): boolean {
    return this.checks.every((c) => c.ok);
  }

  add(check: SmokeCheck): SmokeCheck {
    this.checks.push(check);
    this.onCheck(check);
    return check;
  }

  /**
   * Runs one check. A thrown CheckFailure carries its own remedy; any other
   * error is reported with its message (FscryptError messages say what to
   * do) and `remedy`.
   */
  async run(name: string, fn: () => Promise<CheckOutcome>, remedy?: string): Promise<boolean> {
    try {
      const outcome = await fn();
      if (typeof outcome === 'string') this.add({ name, ok: true, detail: outcome });
      else this.add({ name, ok: true, detail: outcome.detail, skipped: true });
      return true;
    } catch (error) {
      const { code, message } = errorReport(error);
      const check: SmokeCheck = { name, ok: false, detail: error instanceof CheckFailure ? message : `${message} (${code})` };
      const fix = error instanceof CheckFailure ? (error.remedy ?? remedy) : remedy;
      if (fix !== undefined) check.remedy = fix;
      this.add(check);
      return false;
    }
  }
}

export function renderReport(report: SmokeReport): string {
  const lines = [`fscrypt-local smoke (${report.mode === 'scratch' ? 'scratch loop-backed ext4 image' : 'pool'}${report.target ? `: ${report.target}` : ''})`];
  const width = Math.max(...report.checks.map((c) => c.name.length), 0);
  for (const check of report.checks) {
    lines.push(`  ${check.ok ? '✓' : '✗'} ${check.name.padEnd(width)}  ${check.detail}`);
    if (check.remedy !== undefined && !check.ok) lines.push(`    ${''.padEnd(width)}  to fix: ${check.remedy}`);
  }
  if (report.notRun.length > 0) lines.push(`  - not run (an earlier check failed): ${report.notRun.join(', ')}`);
  const failed = report.checks.filter((c) => !c.ok).length;
  lines.push(
    report.ok
      ? `PASSED: all ${report.checks.length} checks passed${report.checks.some((c) => c.skipped) ? ' (some skipped: see above)' : ''}`
      : `FAILED: ${failed} of ${report.checks.length} checks failed${report.notRun.length > 0 ? `, ${report.notRun.length} not run` : ''}`,
  );
  return lines.join('\n');
}
