// The system tools smoke uses (none for crypto: those are ioctls): found in
// PATH or the sbin directories a non-login root shell may lack, and run
// without a shell.
import { execFile } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const SBIN = ['/usr/local/sbin', '/usr/sbin', '/sbin', '/usr/local/bin', '/usr/bin', '/bin'];

/** The absolute path of an executable, or undefined. */
export function findTool(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(':').filter((d) => d.startsWith('/')), ...SBIN];
  for (const dir of dirs) {
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      /* next */
    }
  }
  return undefined;
}

/** Runs a tool; a failure's message holds its stderr (tools say what went wrong there). */
export async function runTool(name: string, args: string[], options: { encoding?: 'buffer' } = {}): Promise<{ stdout: string; stdoutBytes?: Buffer }> {
  const path = findTool(name);
  if (path === undefined) throw new Error(`${name} not found`);
  try {
    if (options.encoding === 'buffer') {
      const { stdout } = await run(path, args, { encoding: 'buffer', maxBuffer: 256 * 1024 * 1024 });
      return { stdout: '', stdoutBytes: stdout };
    }
    const { stdout } = await run(path, args, { encoding: 'utf8', maxBuffer: 16 * 1024 * 1024 });
    return { stdout };
  } catch (error) {
    const stderr = (error as { stderr?: unknown }).stderr;
    const text = Buffer.isBuffer(stderr) ? stderr.toString('utf8') : typeof stderr === 'string' ? stderr : '';
    throw new Error(`${name} ${args.join(' ')} failed: ${text.trim() || (error as Error).message}`, { cause: error });
  }
}
