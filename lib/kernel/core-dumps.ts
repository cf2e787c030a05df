// Keeping key material out of core dumps. A long-running process that holds
// keys (the agent keeps every slot's protector key open for its life) writes
// them to disk if it ever dumps core: a V8 fatal error aborts, and the host's
// core_pattern decides where the dump goes. prctl(PR_SET_DUMPABLE, 0) stops
// the kernel from writing one, and also keeps other users' processes from
// ptrace or /proc/PID/mem. Node cannot mlock its heap or mark it
// MADV_DONTDUMP, so this is the one switch that covers all of it.
import { native } from './binding.js';
import { FscryptError } from './errors.js';

/** Makes this process non-dumpable (no core dump, no ptrace by other users). */
export function disableCoreDumps(): void {
  const rc = native().setDumpable(false);
  if (rc !== 0) throw new FscryptError(undefined, { errno: rc, syscall: 'prctl' });
}

/** Whether this process may dump core (PR_GET_DUMPABLE is not 0). */
export function coreDumpsEnabled(): boolean {
  const rc = native().getDumpable();
  if (rc < 0) throw new FscryptError(undefined, { errno: rc, syscall: 'prctl' });
  return rc !== 0;
}
