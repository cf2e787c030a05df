// Fuzzing the CSI volume handle codec (lib/agent/csi/volume-handle.ts) and
// its use by the node service's resolver. Properties:
//  - any valid volume formats to a handle of at most 62 bytes of [v0-9a-f.],
//    which parses back to exactly its parts;
//  - formatVolumeHandle on arbitrary values gives such a handle or a
//    TypeError, nothing else;
//  - any value at all (strings, mutated handles, long strings, non-strings)
//    parses to undefined, or to parts whose canonical handle is exactly the
//    input: no two strings name one volume, nothing over 128 bytes parses;
//  - the resolver answers every id that names no volume of its table with
//    NOT_FOUND (a CsiError), before any I/O.
// Replaying a failure: docs/testing.md, "Fuzzing".
import fc from 'fast-check';
import t from 'tap';
import { CsiError } from '../../lib/agent/csi/errors.js';
import { formatVolumeHandle, MAX_HANDLE_BYTES, nodeTag, parseVolumeHandle, type VolumeHandle } from '../../lib/agent/csi/volume-handle.js';
import { VolumeResolver, type SlotEntry } from '../../lib/agent/csi/volumes.js';
import { fuzz, mutatedText } from '../fixtures/campaign/fuzz.js';

const FILE = 'fuzz/csi-handle.test.ts';
const hex = (bytes: number) => fc.uint8Array({ minLength: bytes, maxLength: bytes }).map((b) => Buffer.from(b).toString('hex'));
const volumeArb = fc.record({
  nodeName: fc.string({ unit: 'binary', minLength: 1, maxLength: 80 }),
  slot: hex(8),
  generation: fc.oneof(fc.integer({ min: 1, max: 1000 }), fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER })),
  identifier: hex(16),
});

const canonicalOf = (h: VolumeHandle): string => `v1.${h.node}.${h.slot}.${h.generation}.${h.key}`;

t.test('valid volumes: format, then parse, gives back exactly the parts', async (t) => {
  await fuzz(t, { parser: 'volume handle (valid volumes)', file: FILE, runs: 5000 }, volumeArb, (volume) => {
    const handle = formatVolumeHandle(volume);
    if (Buffer.byteLength(handle) > 62 || !/^v1\.[0-9a-f.]+$/.test(handle)) throw new Error(`handle ${JSON.stringify(handle)} breaks the grammar's promise`);
    const parts = parseVolumeHandle(handle);
    const expected = { node: nodeTag(volume.nodeName), slot: volume.slot, generation: volume.generation, key: volume.identifier.slice(0, 16) };
    if (JSON.stringify(parts) !== JSON.stringify(expected)) throw new Error(`parsed ${JSON.stringify(parts)}, expected ${JSON.stringify(expected)}`);
  });
});

t.test('formatVolumeHandle on arbitrary values: a handle that parses, or a TypeError', async (t) => {
  const loose = fc.record({
    nodeName: fc.oneof(fc.string(), fc.anything()),
    slot: fc.oneof(hex(8), fc.string(), fc.anything()),
    generation: fc.oneof(fc.integer(), fc.double(), fc.anything()),
    identifier: fc.oneof(hex(16), fc.string(), fc.anything()),
  });
  await fuzz(t, { parser: 'volume handle (format, arbitrary values)', file: FILE, runs: 5000 }, loose, (volume) => {
    let handle: string;
    try {
      handle = formatVolumeHandle(volume as Parameters<typeof formatVolumeHandle>[0]);
    } catch (error) {
      if (error instanceof TypeError) return;
      throw error;
    }
    if (parseVolumeHandle(handle) === undefined) throw new Error(`formatted ${JSON.stringify(handle)}, which does not parse`);
  });
});

t.test('parseVolumeHandle on anything: undefined, or parts whose canonical handle is the input', async (t) => {
  const valid = volumeArb.map((v) => formatVolumeHandle(v));
  const input = fc.oneof(
    fc.string({ unit: 'binary', maxLength: 80 }),
    fc.string({ unit: fc.constantFrom(...'v1.0123456789abcdefABCDEF-/ \0\n'.split('')), maxLength: 70 }),
    mutatedText(valid),
    valid.chain((h) => fc.tuple(fc.constant(h), fc.string({ maxLength: 80 })).map(([a, b]) => a + b)),
    fc.string({ minLength: MAX_HANDLE_BYTES - 4, maxLength: 400, unit: fc.constantFrom('0', 'a', '.', 'v', '1') }),
    fc.anything(),
  );
  let parsed = 0;
  await fuzz(t, { parser: 'volume handle (parse, arbitrary input)', file: FILE, runs: 10_000 }, input, (text) => {
    const parts = parseVolumeHandle(text);
    if (parts === undefined) return;
    parsed++;
    if (typeof text !== 'string' || text.length > MAX_HANDLE_BYTES) throw new Error('a non-string or an over-long id parsed');
    if (canonicalOf(parts) !== text) throw new Error(`${JSON.stringify(text)} parsed to parts whose handle is ${JSON.stringify(canonicalOf(parts))}`);
    if (!Number.isSafeInteger(parts.generation) || parts.generation < 1) throw new Error('a generation no slot can have');
  });
  t.ok(parsed > 0, `some mutations stay valid handles (${parsed})`);
});

t.test('the resolver answers NOT_FOUND for every id that names no volume it serves', async (t) => {
  const served = 'a1b2c3d4e5f60718';
  // A slot table that fails the test if it is asked for the one slot it has:
  // every id here names another node, another slot, or nothing.
  const slots = {
    get(descriptor: string): SlotEntry | undefined {
      if (descriptor === served) throw new Error('the served slot was looked up');
      return undefined;
    },
  };
  const resolver = new VolumeResolver(slots, 'node-a');
  const onThisNode = volumeArb.filter((v) => v.slot !== served).map((v) => formatVolumeHandle({ ...v, nodeName: 'node-a' }));
  const input = fc.oneof(fc.string({ unit: 'binary', maxLength: 200 }), mutatedText(onThisNode), onThisNode, volumeArb.map((v) => formatVolumeHandle(v)));
  await fuzz(t, { parser: 'volume handle (resolver)', file: FILE, runs: 5000 }, input, async (id) => {
    if (parseVolumeHandle(id)?.slot === served) return; // a mutation that happens to hit the served slot
    try {
      await resolver.resolve(id);
    } catch (error) {
      if (error instanceof CsiError && error.grpcCode === 'NOT_FOUND') return;
      throw error;
    }
    throw new Error(`${JSON.stringify(id)} resolved`);
  });
});
