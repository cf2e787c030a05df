// The reclaim rules (lib/agent/reclaim/decide.ts), one by one: what the agent
// does for a slot given its current generation and the PVs that exist.
import t from 'tap';
import { decide, pvsOfSlot, type PvView } from '../../lib/agent/reclaim/decide.js';
import { formatVolumeHandle } from '../../lib/agent/csi/index.js';

const SLOT = { descriptor: '0123456789abcdef', generation: 3, claimed: false };

function pv(generation: number, fields: Partial<PvView> = {}): PvView {
  return { name: `pv-${generation}`, uid: `uid-${generation}`, generation, phase: 'Available', claimRef: false, deleting: false, reclaimPolicy: 'Delete', ...fields };
}

const actions = (d: ReturnType<typeof decide>) => d.map((x) => x.action);

t.test('no PV for an unclaimed generation: create one', async (t) => {
  t.same(actions(decide(SLOT, [], 'Delete')), ['create-pv']);
  t.same(actions(decide(SLOT, [], 'Retain')), ['create-pv']);
});

t.test('an Available or Bound PV for the current generation: nothing, or record the claim', async (t) => {
  t.same(actions(decide(SLOT, [pv(3)], 'Delete')), []);
  t.same(actions(decide(SLOT, [pv(3, { phase: 'Bound', claimRef: true })], 'Delete')), ['claim']);
  t.same(actions(decide({ ...SLOT, claimed: true }, [pv(3, { phase: 'Bound', claimRef: true })], 'Delete')), []);
});

t.test('Released with Delete: recycle; with Retain: stay locked', async (t) => {
  const released = pv(3, { phase: 'Released', claimRef: true });
  t.same(actions(decide({ ...SLOT, claimed: true }, [released], 'Delete')), ['recycle']);
  t.same(actions(decide({ ...SLOT, claimed: true }, [{ ...released, reclaimPolicy: 'Retain' }], 'Delete')), ['wait'], "the PV's own policy wins");
  t.same(actions(decide(SLOT, [released], 'Delete')), ['claim', 'recycle'], 'the claim is recorded first');
});

t.test('a claimed generation whose PV is gone is never offered again', async (t) => {
  const claimed = { ...SLOT, claimed: true };
  t.same(actions(decide(claimed, [], 'Delete')), ['recycle']);
  const retained = decide(claimed, [], 'Retain');
  t.same(actions(retained), ['wait']);
  t.match(retained[0], { problem: true, why: /never offered again.*fscrypt-local erase/ });
});

t.test('PVs of erased generations are deleted unless Bound or already being deleted', async (t) => {
  t.same(actions(decide(SLOT, [pv(2, { phase: 'Released', claimRef: true }), pv(3)], 'Delete')), ['delete-pv']);
  t.same(actions(decide(SLOT, [pv(2, { deleting: true }), pv(3)], 'Delete')), []);
  const bound = decide(SLOT, [pv(2, { phase: 'Bound', claimRef: true }), pv(3)], 'Delete');
  t.same(actions(bound), ['wait']);
  t.match(bound[0], { problem: true });
});

t.test('after a kill between recycle and PV creation: delete the old PV, create the new one', async (t) => {
  // recycle ran (generation 3 is new and unclaimed); the old PV of generation 2 is still Released.
  t.same(actions(decide(SLOT, [pv(2, { phase: 'Released', claimRef: true })], 'Delete')), ['delete-pv', 'create-pv']);
});

t.test('the current PV being deleted: wait, never a second PV', async (t) => {
  t.same(actions(decide(SLOT, [pv(3, { deleting: true, claimRef: true, phase: 'Bound' })], 'Delete')), ['claim', 'wait']);
});

t.test('a PV naming a newer generation than the slot is reported and left', async (t) => {
  const d = decide(SLOT, [pv(4), pv(3)], 'Delete');
  t.same(actions(d), ['wait']);
  t.match(d[0], { problem: true, why: /newer/ });
});

t.test('pvsOfSlot reads only PVs of this driver, node and slot, from their handles', async (t) => {
  const handle = (node: string, slot: string, generation: number) => formatVolumeHandle({ nodeName: node, slot, generation, identifier: 'ab'.repeat(16) });
  const mk = (name: string, driver: string, volumeHandle: string) => ({ metadata: { name, uid: name }, spec: { csi: { driver, volumeHandle } }, status: { phase: 'Available' } });
  const list = [
    mk('mine', 'fscrypt-local.github.io', handle('node-a', SLOT.descriptor, 3)),
    mk('other-node', 'fscrypt-local.github.io', handle('node-b', SLOT.descriptor, 3)),
    mk('other-slot', 'fscrypt-local.github.io', handle('node-a', 'fedcba9876543210', 3)),
    mk('other-driver', 'example.com', handle('node-a', SLOT.descriptor, 3)),
    mk('forged', 'fscrypt-local.github.io', 'v1.../../etc'),
  ];
  t.same(
    pvsOfSlot(list, 'node-a', 'fscrypt-local.github.io', SLOT.descriptor).map((p) => p.name),
    ['mine'],
  );
});
