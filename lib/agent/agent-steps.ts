// The agent's crash points: every durable step of every operation the node
// agent performs, by operation, derived from the constants the code reports
// (lib/volume's HOOK_STEPS plus the agent's own PV and claim steps). The
// crash tests (test/agent-crash-*.test.ts) SIGKILL the agent after each one,
// and test/crash/agent-steps.test.ts proves a full run of each operation
// reports exactly its list, so a step added to a hook or to the agent is
// crashed without anyone remembering to list it.
//
// The observer is a test-only fault switch: runAgent and Agent take it as a
// programmatic option, and `fscrypt-local run` has no flag or variable that
// reaches it (test/crash/agent-switch.test.ts), so production never has one.
import { HOOK_STEPS, type StepName } from '../volume/index.js';

export const AGENT_STEPS = {
  /** A new slot offered for the first time: initialised, its first volume prepared, then its PV created (invariant 1: only after the policy is verified). */
  offer: [...HOOK_STEPS['init-slot'], ...HOOK_STEPS.prepare, 'offer:pv-created'],
  /** The agent saw the slot's PV Bound and recorded the claim (invariant 8). */
  bind: ['bind:claim-recorded'],
  /** kubelet's NodePublishVolume: lib/volume's unlock. */
  publish: [...HOOK_STEPS.unlock],
  /** kubelet's NodeUnpublishVolume: lib/volume's lock. */
  unpublish: [...HOOK_STEPS.lock],
  /** A Released PV reclaimed: the recycle hook (crypto-erase and the next generation), the old PV deleted, the new one created. */
  reclaim: [...HOOK_STEPS.recycle, 'reclaim:old-pv-deleted', 'reclaim:new-pv-created'],
} as const;

export type AgentOperation = keyof typeof AGENT_STEPS;
export type AgentStep = (typeof AGENT_STEPS)[AgentOperation][number];

/** Where a step happened: the operation (step names repeat across operations: prepare's are also recycle's) and the slot root. */
export interface AgentStepContext {
  operation: AgentOperation;
  slot: string;
}

/**
 * Told after each durable step, and awaited. Two arguments so that a
 * one-argument `(step) => ...` observer still fits; an observer that throws
 * or rejects is ignored: it reports, it never decides.
 */
export type AgentStepObserver = (step: AgentStep, context: AgentStepContext) => void | Promise<void>;

export const RECLAIM_STEPS = AGENT_STEPS.reclaim;

/** Tells the observer, if any, about an agent-level step. */
export async function reportStep(observer: AgentStepObserver | undefined, step: AgentStep, context: AgentStepContext): Promise<void> {
  try {
    await observer?.(step, context);
  } catch {
    // An observer reports; it never decides.
  }
}

/** The hook-level onStep (lib/volume HookOptions) that forwards a hook's steps as `operation`'s on `slot`; undefined without an observer. */
export function hookStepObserver(observer: AgentStepObserver | undefined, operation: AgentOperation, slot: string): ((step: StepName) => Promise<void>) | undefined {
  if (observer === undefined) return undefined;
  // A hook's step is one of the operation's by construction of AGENT_STEPS (the steps test proves it).
  return (step) => reportStep(observer, step as AgentStep, { operation, slot });
}

/** The CSI server's step observer (CsiServerOptions.onStep): a publish's hook steps as publish's, an unpublish's as unpublish's. */
export function rpcStepObserver(observer: AgentStepObserver): (step: StepName, call: { rpc: 'NodePublishVolume' | 'NodeUnpublishVolume'; slot: string }) => Promise<void> {
  return (step, call) => reportStep(observer, step as AgentStep, { operation: call.rpc === 'NodePublishVolume' ? 'publish' : 'unpublish', slot: call.slot });
}
