// Cleanup that runs however a benchmark ends: normal completion, a thrown
// error (process exit), or SIGINT/SIGTERM/SIGHUP. Tasks are synchronous so
// they can run from the 'exit' event, and run last-registered first, so a
// filesystem is unmounted before the directory holding it is deleted.
const tasks = [];
let installed = false;

function runAll() {
  while (tasks.length > 0) {
    const task = tasks.pop();
    try {
      task();
    } catch (error) {
      process.stderr.write(`bench cleanup failed: ${error.message}\n`);
    }
  }
}

function install() {
  if (installed) return;
  installed = true;
  process.on('exit', runAll);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.once(signal, () => {
      runAll();
      // The handler is gone now, so re-raising ends the process as the signal would have.
      process.kill(process.pid, signal);
    });
  }
}

/**
 * Registers a synchronous cleanup task. Returns a function that runs it now
 * (once) and unregisters it.
 */
export function onCleanup(task) {
  install();
  tasks.push(task);
  return () => {
    const index = tasks.indexOf(task);
    if (index < 0) return;
    tasks.splice(index, 1);
    task();
  };
}
