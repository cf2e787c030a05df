// The agent crash matrix's list of points comes from AGENT_STEPS
// (lib/agent/agent-steps.ts). This proves that list is what the agent does:
// a tenant's whole story through one in-process agent with an onStep
// recorder (a fresh slot offered, its PV bound, published, unpublished,
// published again, unpublished, released and reclaimed) reports, for each
// operation, exactly its steps (each once, per run of the operation) and
// nothing else; and the crash files' parts together are every point, each
// once. A step added to a hook or to the agent without being in the list,
// or listed but never reached, fails here. It also records the matrix's
// size: points per operation, the hook matrix's (crash-matrix.ts), and the
// total.
import t from 'tap';
import { AGENT_STEPS, type AgentOperation, type AgentStep, type AgentStepContext } from '../../lib/agent/agent-steps.js';
import { agentNode, defaultConfig } from '../fixtures/agent/agent.js';
import { agentCrashPoints, PARTS, pointsOfPart, type Part } from '../fixtures/crash/agent-crash-points.js';
import { recordFigure } from '../fixtures/campaign/campaign.js';
import { crashPoints } from '../fixtures/crash/crash-matrix.js';
import { mountCapability } from '../fixtures/agent/csi.js';
import type { K8sObject } from '../fixtures/fake-apiserver/index.js';

const COMMAND = 'npx tap test/crash/agent-steps.test.ts';
const OPERATIONS = Object.keys(AGENT_STEPS) as AgentOperation[];

t.test('the crash files together drive every point of AGENT_STEPS, each once', async (t) => {
  const all = agentCrashPoints().map((p) => p.id);
  const parted = (Object.keys(PARTS) as Part[]).flatMap((part) => pointsOfPart(part).map((p) => p.id));
  t.same([...parted].sort(), [...all].sort(), 'the parts are exactly the points');
  t.equal(new Set(parted).size, parted.length, 'no point is in two parts');
  t.same(
    OPERATIONS.filter((op) => !Object.values(PARTS).some((shares) => shares.some(([o]) => o === op))),
    [],
    'every operation has a part',
  );
});

t.test("a tenant's whole story reports each operation's steps, exactly", async (t) => {
  const node = await agentNode(t);
  const slot = node.addSlot('ssd0');
  node.writeConfig(defaultConfig(node.kek, node.hostDir));
  const reports: { step: AgentStep; context: AgentStepContext }[] = [];
  const agent = await node.start({ onStep: (step, context) => void reports.push({ step, context }) });
  const reported = (step: AgentStep) => () => reports.some((r) => r.step === step);
  let seen = 0;
  /** The reports since the last call: all of `operation`, on the slot, and exactly its steps (in any order: recycle interleaves its halves). */
  const expect = (operation: AgentOperation, what: string) => {
    const group = reports.slice(seen);
    seen = reports.length;
    t.same(
      group.filter((r) => r.context.operation !== operation || r.context.slot !== slot).map((r) => `${r.context.operation}/${r.step} on ${r.context.slot}`),
      [],
      `${what}: every report is ${operation}'s, on the slot`,
    );
    t.same(group.map((r) => r.step).sort(), [...AGENT_STEPS[operation]].sort(), `${what}: exactly AGENT_STEPS.${operation}, each once`);
  };
  const meta = (o: K8sObject) => o.metadata as { name: string };
  const handleOf = (o: K8sObject) => (o.spec as { csi: { volumeHandle: string } }).csi.volumeHandle;

  const pv = await node.until('the first PV', () => node.pvs()[0]);
  await node.until('offer:pv-created reported', reported('offer:pv-created'));
  expect('offer', 'the first offer of a fresh slot');

  node.api.bind(meta(pv).name, { namespace: 'default', name: 'data-db-0' });
  await node.until('the claim reported', reported('bind:claim-recorded'));
  expect('bind', 'the PV bound');

  for (const pod of ['first', 'second']) {
    const target = await node.kubelet.newTarget(meta(pv).name);
    await agent.csi.node('NodePublishVolume', { volume_id: handleOf(pv), target_path: target, volume_capability: mountCapability(), readonly: false });
    expect('publish', `the ${pod} pod's publish`);
    await agent.csi.node('NodeUnpublishVolume', { volume_id: handleOf(pv), target_path: target });
    expect('unpublish', `the ${pod} pod's unpublish`);
  }

  node.api.release(meta(pv).name);
  await node.until('the reclaim reported', reported('reclaim:new-pv-created'));
  await node.until('the old PV gone', () => node.api.get('persistentvolumes', meta(pv).name) === undefined);
  expect('reclaim', 'the released PV reclaimed');
  t.same([...new Set(reports.map((r) => r.context.operation))].sort(), [...OPERATIONS].sort(), 'the story ran every operation of AGENT_STEPS');
});

t.test('figures: the size of the crash matrix, by operation and in total', async (t) => {
  const { points: hookPoints, problems } = crashPoints();
  t.same(problems, [], 'the hook matrix has no problems');
  let agentTotal = 0;
  for (const operation of OPERATIONS) {
    const n = agentCrashPoints().filter((p) => p.operation === operation).length;
    agentTotal += n;
    recordFigure({ area: 'crash matrix', name: `agent ${operation}: crash points`, value: n, command: COMMAND });
  }
  t.equal(agentTotal, agentCrashPoints().length, 'the operations add up to the agent matrix');
  recordFigure({ area: 'crash matrix', name: 'agent: crash points (all operations)', value: agentTotal, command: COMMAND });
  recordFigure({ area: 'crash matrix', name: 'hooks: crash points (hook, step, scenario; each recovered by reconcile and by a retry)', value: hookPoints.length, command: COMMAND });
  recordFigure({ area: 'crash matrix', name: 'total crash points (agent + hooks)', value: agentTotal + hookPoints.length, command: COMMAND });
  t.comment(`agent matrix: ${agentTotal} points (${OPERATIONS.map((op) => `${op} ${AGENT_STEPS[op].length}`).join(', ')}); hook matrix: ${hookPoints.length}; total ${agentTotal + hookPoints.length}`);
});
