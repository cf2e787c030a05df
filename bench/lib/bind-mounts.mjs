// Many bind mounts at once, for benchmarks that need a node with hundreds or
// thousands of slots (a slot is a mount point). mount(8) processes run in
// parallel batches: one after another, a thousand take tens of seconds on
// these VMs, most of it process start-up, which overlaps well.
//
// Nothing here unmounts: the caller puts the mount points inside a scratch
// filesystem of its own (bench/lib/scratch-fs.mjs), whose cleanup falls back
// to a lazy unmount that detaches every mount below it in one call.
import { execFile } from 'node:child_process';
import { mkdirSync } from 'node:fs';

function mountBind(source, target) {
  return new Promise((resolve, reject) => {
    execFile('mount', ['--bind', source, target], { encoding: 'utf8', env: { ...process.env, LC_ALL: 'C' } }, (error, _stdout, stderr) => {
      if (error) reject(new Error(`mount --bind ${source} ${target}: ${stderr.trim() || error.message}`));
      else resolve();
    });
  });
}

/**
 * Bind-mounts each { source, target } (both directories, created if
 * missing), `concurrency` mount(8) processes at a time. Rejects with the
 * first failure once the mounts in flight have finished.
 */
export async function bindMany(pairs, { concurrency = 16 } = {}) {
  for (const { source, target } of pairs) {
    mkdirSync(source, { recursive: true });
    mkdirSync(target, { recursive: true });
  }
  let next = 0;
  let failure;
  const worker = async () => {
    while (failure === undefined && next < pairs.length) {
      const { source, target } = pairs[next++];
      try {
        await mountBind(source, target);
      } catch (error) {
        failure ??= error;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, pairs.length) }, worker));
  if (failure !== undefined) throw failure;
}
