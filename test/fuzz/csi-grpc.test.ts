// Fuzzing every field of the CSI node requests over real gRPC: a real
// CsiServer on a unix socket, a real grpc-js client, a real slot (ext4 with
// encryption on a loop device) holding a real volume, and a kubelet-like
// tree on a tmpfs. Requests carry arbitrary volume ids (valid, another
// node's, mutated, anything), target paths ('..', long, NUL, newline,
// relative, outside kubelet's pods directory, the pods directory itself,
// fresh valid targets), capabilities (block and mount, every access mode,
// fs types, mount flags, a mount group), readonly, volume_context and
// secrets. Properties:
//  - every answer is OK or a status of the one table (lib/agent/csi
//    GRPC_FOR_CODE / CsiError): bad input is never UNKNOWN or INTERNAL;
//  - a publish that succeeds had a valid everything and a target under the
//    pods directory, and its unpublish succeeds too;
//  - after a refused publish the volume's key is not in the kernel;
//  - the server never crashes (Probe answers at the end), nothing of the
//    slot is mounted outside the pods directory, and the key is gone.
// Replaying a failure: docs/testing.md, "Fuzzing".
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import fc from 'fast-check';
import t from 'tap';
import { getKeyStatus, isWithin, parseMountInfo } from '../../lib/kernel/index.js';
import { prepare } from '../../lib/volume/index.js';
import { handleOf, kubeletTree, slotTable, startServer } from '../fixtures/agent/csi.js';
import { fuzz, mutatedText } from '../fixtures/campaign/fuzz.js';
import { freshSlot } from '../fixtures/volume-slot.js';

const FILE = 'fuzz/csi-grpc.test.ts';
const MODES = ['UNKNOWN', 'SINGLE_NODE_WRITER', 'SINGLE_NODE_READER_ONLY', 'MULTI_NODE_READER_ONLY', 'MULTI_NODE_SINGLE_WRITER', 'MULTI_NODE_MULTI_WRITER', 'SINGLE_NODE_SINGLE_WRITER', 'SINGLE_NODE_MULTI_WRITER'];
// What a bad request may hear: never UNKNOWN or INTERNAL (nor DEADLINE_EXCEEDED: nothing here waits).
const REFUSALS = new Set(['INVALID_ARGUMENT', 'NOT_FOUND', 'FAILED_PRECONDITION', 'ALREADY_EXISTS']);
const codeName = (code: number): string => grpc.status[code] ?? `code ${code}`;

t.test('every CSI node request field over real gRPC', { timeout: 240_000 }, async (t) => {
  const { slot, protector } = await freshSlot(t);
  const volume = await prepare(slot, protector);
  const kubelet = kubeletTree(t);
  const { client } = await startServer(t, { slots: slotTable({ slot, protector }), kubeletDir: kubelet.root });
  const valid = handleOf(volume, protector);
  const keyStatus = async (): Promise<string> => (await getKeyStatus(slot, volume.identifier)).status;

  const text = fc.string({ unit: 'binary', maxLength: 40 });
  const volumeId = fc.oneof(
    { arbitrary: fc.constant(valid), weight: 4 },
    fc.constant(handleOf(volume, protector, 'another-node')),
    mutatedText(fc.constant(valid), 2),
    text,
    fc.constant(''),
  );
  /** A target: 'fresh' is made the way kubelet makes one, when the case runs. */
  const target = fc.oneof(
    { arbitrary: fc.constant('fresh'), weight: 4 },
    fc.constantFrom('fresh/..', 'fresh/../..', 'fresh/./x', 'fresh//', 'pods', 'pods/x', 'outside', 'relative/mount', '/', '', 'fresh\nx', 'fresh\0x', 'long'),
    fc.tuple(fc.constant('under'), text),
    text,
  );
  const capability = fc.option(
    fc.record(
      {
        block: fc.constant({}),
        mount: fc.record({ fs_type: fc.oneof(fc.constantFrom('', 'ext4', 'xfs'), text), mount_flags: fc.array(fc.oneof(fc.constantFrom('ro', 'rw', 'bind', 'defaults', ' ro ', 'noexec', 'uid=0', 'password=hunter2'), text), { maxLength: 3 }), volume_mount_group: fc.oneof(fc.constant(''), text) }),
        access_mode: fc.record({ mode: fc.constantFrom(...MODES) }, { requiredKeys: [] }),
      },
      { requiredKeys: [] },
    ),
    { nil: undefined },
  );
  const publishArb = fc.record({
    volume_id: volumeId,
    target,
    volume_capability: capability,
    readonly: fc.boolean(),
    volume_context: fc.dictionary(text, text, { maxKeys: 3 }),
    secrets: fc.dictionary(text, text, { maxKeys: 2 }),
  });
  // kubelet's capability with arbitrary other fields, so the deeper checks (the handle, the target) are reached often.
  const kubeletCapability = { mount: { fs_type: '', mount_flags: [] as string[], volume_mount_group: '' }, access_mode: { mode: 'SINGLE_NODE_WRITER' } };
  const nearValid = publishArb.map((r) => ({ ...r, volume_capability: kubeletCapability }));
  type Publish = typeof publishArb extends fc.Arbitrary<infer T> ? T : never;
  // Whatever the seed: one publish of kubelet's own.
  const kubeletPublish: Publish = { volume_id: valid, target: 'fresh', volume_capability: kubeletCapability, readonly: false, volume_context: {}, secrets: {} };

  async function targetPath(kind: string | [string, string]): Promise<string> {
    if (Array.isArray(kind)) return join(kubelet.pods, kind[1]);
    if (kind.startsWith('fresh')) return (await kubelet.newTarget()) + kind.slice('fresh'.length);
    switch (kind) {
      case 'pods':
        return kubelet.pods;
      case 'pods/x':
        return join(kubelet.pods, 'x');
      case 'outside':
        return join(kubelet.root, 'outside', 'mount');
      case 'long':
        return `${kubelet.pods}/${'a'.repeat(255)}/`.repeat(17);
      default:
        return kind;
    }
  }

  const outcomes = new Map<string, number>();
  const count = (key: string): void => void outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
  async function answer(method: string, request: object): Promise<string> {
    try {
      await client.node(method, request);
      return 'OK';
    } catch (error) {
      return codeName((error as grpc.ServiceError).code);
    }
  }

  await fuzz(t, { parser: 'CSI NodePublishVolume over gRPC', file: FILE, runs: 300, examples: [kubeletPublish] }, fc.oneof(publishArb, nearValid), async (r) => {
    const target_path = await targetPath(r.target);
    const request = { ...r, target_path };
    const code = await answer('NodePublishVolume', request);
    count(`NodePublishVolume ${code}`);
    if (code === 'OK') {
      if (r.volume_id !== valid || !isWithin(target_path, kubelet.pods) || target_path === kubelet.pods) throw new Error(`a publish of ${JSON.stringify(request)} succeeded`);
      const unpublished = await answer('NodeUnpublishVolume', { volume_id: r.volume_id, target_path });
      if (unpublished !== 'OK') throw new Error(`its unpublish answered ${unpublished}`);
      if ((await keyStatus()) !== 'absent') throw new Error('the key is still in the kernel after the unpublish');
      return;
    }
    if (!REFUSALS.has(code)) throw new Error(`NodePublishVolume ${JSON.stringify({ ...request, target_path: target_path.slice(0, 200) })} answered ${code}`);
    if ((await keyStatus()) !== 'absent') throw new Error(`a refused publish (${code}) left the key in the kernel`);
  });

  const otherArb = fc.oneof(
    fc.record({ method: fc.constant('NodeUnpublishVolume'), volume_id: volumeId, target }),
    fc.record({ method: fc.constant('NodeGetVolumeStats'), volume_id: volumeId, target, staging_target_path: text }),
    fc.record({ method: fc.constantFrom('NodeGetCapabilities', 'NodeGetInfo'), volume_id: volumeId, target }),
  );
  await fuzz(t, { parser: 'CSI NodeUnpublishVolume, NodeGetVolumeStats, NodeGetCapabilities, NodeGetInfo over gRPC', file: FILE, runs: 500 }, otherArb, async (r) => {
    const path = await targetPath(r.target);
    const request =
      r.method === 'NodeGetVolumeStats' ? { volume_id: r.volume_id, volume_path: path, staging_target_path: r.staging_target_path } : r.method === 'NodeUnpublishVolume' ? { volume_id: r.volume_id, target_path: path } : {};
    const code = await answer(r.method, request);
    count(`${r.method} ${code}`);
    if (r.method === 'NodeGetCapabilities' || r.method === 'NodeGetInfo') {
      if (code !== 'OK') throw new Error(`${r.method} answered ${code}`);
      return;
    }
    if (code !== 'OK' && !REFUSALS.has(code)) throw new Error(`${r.method} ${JSON.stringify(request).slice(0, 400)} answered ${code}`);
    // A stats call on a path that is no target of the volume is NOT_FOUND; none of these targets was published.
    if (r.method === 'NodeGetVolumeStats' && code === 'OK') throw new Error(`stats answered OK for ${JSON.stringify(path)}, which is no target`);
  });

  t.ok([...outcomes.keys()].some((k) => k === 'NodePublishVolume OK'), `outcomes: ${JSON.stringify(Object.fromEntries([...outcomes].sort()))}`);
  t.same(await client.identity('Probe'), { ready: { value: true } }, 'the server still answers');
  t.equal(await keyStatus(), 'absent', 'the key is not in the kernel');
  const device = parseMountInfo(await readFile('/proc/self/mountinfo', 'utf8')).find((m) => m.mountPoint === slot)!.device;
  const strays = parseMountInfo(await readFile('/proc/self/mountinfo', 'utf8')).filter((m) => m.device === device && m.mountPoint !== slot);
  t.same(
    strays.map((m) => m.mountPoint),
    [],
    'nothing of the slot is mounted anywhere (every publish was unpublished, none went outside the pods directory)',
  );
});
