// One slot cannot stall another through the node service (DESIGN invariant
// 9): with slot A's filesystem frozen, a NodePublishVolume on A waits for its
// disk past its deadline (DEADLINE_EXCEEDED to kubelet, logged), while on
// slot B kubelet's whole sequence (publish, stats, unpublish) and Probe
// answer, and the event loop stays responsive. After the thaw kubelet's
// retry of the publish on A succeeds.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import t from 'tap';
import { getKeyStatus } from '../../lib/kernel/index.js';
import { prepare } from '../../lib/volume/index.js';
import { checkLoop, freeze, loopWatch, requireFsfreeze, within } from '../fixtures/system/freeze.js';
import { handleOf, kubeletTree, mountCapability, slotTable, startServer } from '../fixtures/agent/csi.js';
import { rejection } from '../fixtures/helpers.js';
import { freshSlot } from '../fixtures/volume-slot.js';

requireFsfreeze();

t.test('a frozen slot does not stall the RPCs of another slot, is reported, and recovers after the thaw', { timeout: 120_000 }, async (t) => {
  const a = await freshSlot(t);
  const b = await freshSlot(t);
  const [volumeA, volumeB] = await Promise.all([prepare(a.slot, a.protector), prepare(b.slot, b.protector)]);
  const kubelet = kubeletTree(t);
  const { client, logs } = await startServer(t, { slots: slotTable(a, b), kubeletDir: kubelet.root });
  const idA = handleOf(volumeA, a.protector);
  const idB = handleOf(volumeB, b.protector);
  const [targetA, targetB] = [await kubelet.newTarget('pv-a'), await kubelet.newTarget('pv-b')];

  const thaw = freeze(t, a.slot);
  let publishA: Promise<unknown>;
  try {
    const watch = await loopWatch();
    // The publish on A records its target first: that write waits for the frozen disk.
    publishA = rejection(client.node('NodePublishVolume', { volume_id: idA, target_path: targetA, volume_capability: mountCapability() }, { deadlineMs: 1_500 }));

    await within(client.node('NodePublishVolume', { volume_id: idB, target_path: targetB, volume_capability: mountCapability() }), 'publish on B');
    await within(writeFile(join(targetB, 'data'), 'tenant B'), 'a write on B');
    const stats = await within(client.node<{ usage: { unit: string; total: string }[] }>('NodeGetVolumeStats', { volume_id: idB, volume_path: targetB }), 'stats on B');
    t.ok(stats.usage.some((u) => u.unit === 'BYTES' && Number(u.total) > 0), 'B: stats answer');
    t.same(await within(client.identity('Probe'), 'Probe'), { ready: { value: true } }, 'Probe answers');
    t.same(await within(client.node('NodeUnpublishVolume', { volume_id: idB, target_path: targetB }), 'unpublish on B'), {}, 'B: unpublished');
    t.equal((await getKeyStatus(b.slot, volumeB.identifier)).status, 'absent', 'B: locked');

    const error = (await within(publishA, 'the publish on A to reach its deadline')) as grpc.ServiceError;
    t.equal(error.code, grpc.status.DEADLINE_EXCEEDED, 'A: kubelet hears DEADLINE_EXCEEDED, and will retry');
    checkLoop(t, watch.stop());
  } finally {
    thaw();
  }
  t.match(logs.text(), /NodePublishVolume/, 'the call on A is in the log');

  // kubelet's retry after the thaw finds the first call done or finishes it.
  t.same(await within(client.node('NodePublishVolume', { volume_id: idA, target_path: targetA, volume_capability: mountCapability() }), 'the retried publish on A'), {});
  await writeFile(join(targetA, 'data'), 'tenant A');
  t.same(await client.node('NodeUnpublishVolume', { volume_id: idA, target_path: targetA }), {});
  t.equal((await getKeyStatus(a.slot, volumeA.identifier)).status, 'absent', 'A: locked after the thaw');
});
