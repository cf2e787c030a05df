// native/fscrypt_uapi.h computes the ioctl numbers with the kernel's own
// _IOR/_IOW/_IOWR macros, so they are right on every architecture, not only
// on the x86-64/arm64 encoding; and the open/flock flags lib needs come from
// the C headers through the addon. Checked by compiling small programs
// against the header with the compiler node-gyp uses.
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { arch } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { native } from '../../lib/kernel/binding.js';
import { OPEN_FLAGS } from '../../lib/kernel/index.js';
import { scratchDir } from '../fixtures/system/scratch-fs.js';

const nativeDir = fileURLToPath(new URL('../../native', import.meta.url));
const cxx = process.env.CXX ?? 'g++';
const work = scratchDir(t, 'fscrypt-local-uapi-');

const NAMES = {
  kSetPolicy: 'FS_IOC_SET_ENCRYPTION_POLICY',
  kGetPolicy: 'FS_IOC_GET_ENCRYPTION_POLICY',
  kGetPolicyEx: 'FS_IOC_GET_ENCRYPTION_POLICY_EX',
  kAddKey: 'FS_IOC_ADD_ENCRYPTION_KEY',
  kRemoveKey: 'FS_IOC_REMOVE_ENCRYPTION_KEY',
  kRemoveKeyAllUsers: 'FS_IOC_REMOVE_ENCRYPTION_KEY_ALL_USERS',
  kGetKeyStatus: 'FS_IOC_GET_ENCRYPTION_KEY_STATUS',
  kGetNonce: 'FS_IOC_GET_ENCRYPTION_NONCE',
} as const;

// The numbers on x86-64 and arm64 (reference/fscrypt-kernel-and-tools.md 1.1).
const GENERIC: Record<keyof typeof NAMES, number> = {
  kSetPolicy: 0x800c6613,
  kGetPolicy: 0x400c6615,
  kGetPolicyEx: 0xc0096616,
  kAddKey: 0xc0506617,
  kRemoveKey: 0xc0406618,
  kRemoveKeyAllUsers: 0xc0406619,
  kGetKeyStatus: 0xc080661a,
  kGetNonce: 0x8010661b,
};

// powerpc's encoding (arch/powerpc/include/uapi/asm/ioctl.h): 3 direction
// bits, 13 size bits, NONE 1, READ 2, WRITE 4. _IOWR numbers coincide with
// the generic ones; _IOR and _IOW ones do not.
const POWERPC_IOCTL_H = `#define _IOC_SIZEBITS 13
#define _IOC_DIRBITS 3
#define _IOC_NONE 1U
#define _IOC_READ 2U
#define _IOC_WRITE 4U
#include <asm-generic/ioctl.h>
`;
const POWERPC: Partial<Record<keyof typeof NAMES, number>> = {
  kSetPolicy: 0x400c6613,
  kGetPolicy: 0x800c6615,
  kGetNonce: 0x4010661b,
};

const genericArch = arch() === 'x64' || arch() === 'arm64';

function compile(name: string, source: string, includeDirs: string[] = []): { ok: boolean; stderr: string; binary: string } {
  const file = join(work, `${name}.cc`);
  const binary = join(work, name);
  writeFileSync(file, source);
  const result = spawnSync(cxx, ['-std=c++17', ...includeDirs.flatMap((d) => ['-I', d]), '-I', nativeDir, file, '-o', binary], { encoding: 'utf8' });
  return { ok: result.status === 0, stderr: result.stderr, binary };
}

function run(binary: string): string {
  const result = spawnSync(binary, { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`${binary} failed: ${result.stderr}`);
  return result.stdout;
}

const printNumbers = `#include "fscrypt_uapi.h"
#include <cstdio>
int main() {
${Object.keys(NAMES).map((k) => `  std::printf("${k} %lu\\n", fscrypt_uapi::${k});`).join('\n')}
}
`;

function parseNumbers(out: string): Record<string, number> {
  return Object.fromEntries(out.trim().split('\n').map((line) => {
    const [name, value] = line.split(' ');
    return [name!, Number(value)];
  }));
}

t.test('the computed ioctl numbers equal the kernel header FS_IOC_* values on this machine', async (t) => {
  const header = `#include <linux/fscrypt.h>
#include "fscrypt_uapi.h"
#include <cstdio>
int main() {
${Object.entries(NAMES).map(([k, n]) => `  std::printf("${k} %lu %lu\\n", fscrypt_uapi::${k}, (unsigned long)${n});`).join('\n')}
}
`;
  const built = compile('against-linux-header', header);
  t.ok(built.ok, `compiles against <linux/fscrypt.h>: ${built.stderr}`);
  for (const line of run(built.binary).trim().split('\n')) {
    const [name, ours, kernels] = line.split(' ');
    t.equal(ours, kernels, `${name} is ${NAMES[name as keyof typeof NAMES]}`);
  }
  if (!genericArch) {
    t.pass(`the known-number table applies to x64 and arm64, not ${arch()}`);
    return;
  }
  const plain = compile('numbers', printNumbers);
  t.ok(plain.ok, plain.stderr);
  t.same(parseNumbers(run(plain.binary)), GENERIC, 'the x86-64/arm64 numbers');
});

t.test("the numbers follow the architecture's <asm/ioctl.h> encoding, not a hard-coded x86-64 table", async (t) => {
  if (!genericArch) {
    t.pass(`the header's known-number static_asserts apply to x64 and arm64, not ${arch()}`);
    return;
  }
  // A <linux/ioctl.h> with powerpc's encoding, found before the system's.
  const ppc = join(work, 'powerpc-include');
  mkdirSync(join(ppc, 'linux'), { recursive: true });
  writeFileSync(join(ppc, 'linux', 'ioctl.h'), POWERPC_IOCTL_H);
  const built = compile('powerpc-numbers', printNumbers, [ppc]);
  // The header's x86-64/arm64 static_asserts fire exactly for the numbers
  // whose encoding differs, and g++ shows the value it computed.
  t.notOk(built.ok, 'the x86-64/arm64 static_asserts reject the powerpc encoding');
  const failed = [...built.stderr.matchAll(/static assertion failed: (FS_IOC_\w+)/g)].map((m) => m[1]);
  t.same(failed.sort(), Object.keys(POWERPC).map((k) => NAMES[k as keyof typeof NAMES]).sort(), 'only the _IOR/_IOW numbers differ');
  const reduced = [...built.stderr.matchAll(/comparison reduces to .\((\d+) == (\d+)\)/g)].map((m) => [Number(m[1]), Number(m[2])]);
  if (reduced.length > 0) {
    t.same(
      reduced.map(([computed]) => computed).sort(),
      Object.values(POWERPC).sort(),
      'the computed values are powerpc numbers (e.g. SET_ENCRYPTION_POLICY 0x400c6613)',
    );
  }
});

t.test('O_PATH and the flock flags come from the C headers through the addon', async (t) => {
  const source = `#include <fcntl.h>
#include <sys/file.h>
#include <cstdio>
int main() { std::printf("%d %d %d\\n", O_PATH, LOCK_EX, LOCK_NB); }
`;
  const built = compile('open-flags', source);
  t.ok(built.ok, built.stderr);
  const [oPath, lockEx, lockNb] = run(built.binary).trim().split(' ').map(Number);
  t.same(native().constants, { O_PATH: oPath, LOCK_EX: lockEx, LOCK_NB: lockNb });
  t.ok(Object.isFrozen(native().constants), 'read-only');
  t.equal(OPEN_FLAGS.O_PATH, oPath, 'lib/kernel exports the platform O_PATH');
  if (genericArch) t.equal(OPEN_FLAGS.O_PATH, 0o10000000, 'the x86-64/arm64 value');
});
