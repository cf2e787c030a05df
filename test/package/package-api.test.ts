// The package's public API is a deliberate list (semver freezes it): the
// root exports exactly these names, each documented in README.md, and no
// internal helper (removeTree, parseMountInfo, tryLockExclusive, ...).
import { readFileSync } from 'node:fs';
import t from 'tap';
import * as api from '../../lib/index.js';

const PUBLIC = [
  // lib/kernel
  'addKey', 'addKeyById', 'defaultPolicy', 'ENCRYPTION_MODES', 'FscryptError', 'getKeyStatus', 'getNonce', 'getPolicy', 'isFscryptError',
  'KEY_DESCRIPTOR_SIZE', 'KEY_IDENTIFIER_SIZE', 'keyIdentifier', 'MAX_KEY_SIZE', 'MIN_KEY_SIZE', 'NONCE_SIZE', 'PADDING_FLAGS', 'POLICY_FLAGS',
  'probe', 'removeKey', 'samePolicy', 'setPolicy', 'VALID_MODE_PAIRS',
  // lib/keys
  'DEFAULT_ARGON2_COSTS', 'describeKeySource', 'parseKeySource',
  // lib/volume
  'adminLock', 'adminUnlock', 'erase', 'HOOK_STEPS', 'initSlot', 'lock', 'openSlotProtector', 'prepare', 'reconcile', 'recycle', 'resolveVolume',
  'rotateKeySource', 'slotStatus', 'TrashCollector', 'unlock',
];

t.test('the package root exports exactly the public API', async (t) => {
  t.same(Object.keys(api).sort(), [...PUBLIC].sort());
  for (const internal of ['removeTree', 'TrashCollectorImpl', 'parseMountInfo', 'readMountInfo', 'tryLockExclusive', 'SlotKeys', 'wipe', 'findBlockers', 'native']) {
    t.notOk(internal in api, `${internal} is internal`);
  }
});

t.test('README documents every export', async (t) => {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  for (const name of PUBLIC) t.match(readme, new RegExp(`\\b${name}\\b`), `README names ${name}`);
});
