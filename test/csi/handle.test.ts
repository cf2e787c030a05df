// The volume handle's grammar: what formatVolumeHandle writes, parseVolumeHandle
// reads back, and nothing else parses (the strings a caller of the socket
// could forge: paths, '..', NUL, over-long, upper case, leading zeros).
import t from 'tap';
import { formatVolumeHandle, MAX_HANDLE_BYTES, nodeTag, parseVolumeHandle } from '../../lib/agent/csi/volume-handle.js';

const slot = '0123456789abcdef';
const identifier = 'fedcba98765432100123456789abcdef';

t.test('a handle names node, slot, generation and key; it round-trips', async (t) => {
  const handle = formatVolumeHandle({ nodeName: 'node-a', slot, generation: 7, identifier });
  t.equal(handle, `v1.${nodeTag('node-a')}.${slot}.7.fedcba9876543210`);
  t.match(nodeTag('node-a'), /^[0-9a-f]{8}$/);
  t.not(nodeTag('node-a'), nodeTag('node-b'));
  t.same(parseVolumeHandle(handle), { node: nodeTag('node-a'), slot, generation: 7, key: 'fedcba9876543210' });
  const longest = formatVolumeHandle({ nodeName: 'x'.repeat(253), slot, generation: Number.MAX_SAFE_INTEGER, identifier });
  t.ok(Buffer.byteLength(longest) <= 62 && Buffer.byteLength(longest) <= MAX_HANDLE_BYTES, `at most 62 bytes (${longest.length})`);
  t.same(parseVolumeHandle(longest)?.generation, Number.MAX_SAFE_INTEGER);
});

t.test('formatVolumeHandle refuses parts that would not parse back', async (t) => {
  const good = { nodeName: 'node-a', slot, generation: 1, identifier };
  t.throws(() => formatVolumeHandle({ ...good, nodeName: '' }));
  t.throws(() => formatVolumeHandle({ ...good, slot: 'ABCDEF0123456789' }), 'upper-case descriptor');
  t.throws(() => formatVolumeHandle({ ...good, slot: '../../etc/passwd' }));
  t.throws(() => formatVolumeHandle({ ...good, generation: 0 }));
  t.throws(() => formatVolumeHandle({ ...good, generation: 1.5 }));
  t.throws(() => formatVolumeHandle({ ...good, generation: 2 ** 53 }));
  t.throws(() => formatVolumeHandle({ ...good, identifier: identifier.slice(0, 16) }), 'a v1 descriptor is no identifier');
});

t.test('parseVolumeHandle accepts exactly the grammar', async (t) => {
  const node = nodeTag('node-a');
  const forged = [
    '',
    'v1',
    `v2.${node}.${slot}.1.fedcba9876543210`,
    `V1.${node}.${slot}.1.fedcba9876543210`,
    `v1.${node}.${slot}.01.fedcba9876543210`,
    `v1.${node}.${slot}.0.fedcba9876543210`,
    `v1.${node}.${slot}.-1.fedcba9876543210`,
    `v1.${node}.${slot}.1.FEDCBA9876543210`,
    `v1.${node}.${slot}.1.fedcba9876543210.`,
    `v1.${node}.${slot}.1.fedcba9876543210\n`,
    ` v1.${node}.${slot}.1.fedcba9876543210`,
    `v1.${node}.${slot}.1.fedcba9876543210\0`,
    `v1.${node}.${slot}.1.fedcba98765432`,
    `v1.${node}.../${slot}.1.fedcba9876543210`,
    `v1.${node}.${slot.slice(0, 15)}/.1.fedcba9876543210`,
    `v1.${node}.${slot}.1.fedcba9876543210/../../x`,
    `v1.${node}.${slot}.12345678901234567.fedcba9876543210`,
    `v1.${node}.${slot}.9999999999999999.fedcba9876543210`,
    '../../etc',
    '/var/lib/kubelet',
    `v1.${node}.${slot}.1.${'f'.repeat(200)}`,
    'x'.repeat(129),
  ];
  for (const text of forged) t.equal(parseVolumeHandle(text), undefined, JSON.stringify(text));
  t.equal(parseVolumeHandle(42), undefined, 'not a string');
  t.equal(parseVolumeHandle(undefined), undefined);
});
