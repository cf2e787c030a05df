// One code means one thing, and one table maps codes to exit codes, another
// to gRPC codes: docs/errors.md lists every code of this project with the
// exit code that lib/cli/exit-codes.ts gives it and the gRPC code that
// lib/agent/csi/errors.ts gives it, and every errno it documents maps as it
// says.
import { readFileSync } from 'node:fs';
import t from 'tap';
import { GRPC_FOR_CODE, GRPC_FOR_ERRNO, grpcCodeFor } from '../../lib/agent/csi/errors.js';
import { EXIT_FOR_CODE, exitCodeFor } from '../../lib/cli/exit-codes.js';
import { asFscryptError, FscryptError } from '../../lib/kernel/index.js';

const doc = readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8');

/** Rows of the doc's tables: the codes of the first cell, the number of the last. */
function rows(): Map<string, number> {
  const table = new Map<string, number>();
  for (const line of doc.split('\n')) {
    const cells = line.split('|').map((c) => c.trim());
    if (cells.length < 4 || !/^\d+$/.test(cells.at(-2) ?? '')) continue;
    for (const [, code] of cells[1]!.matchAll(/`([A-Z_0-9]+)`/g)) table.set(code!, Number(cells.at(-2)));
  }
  return table;
}

t.test('docs/errors.md lists every code with its exit code', async (t) => {
  const documented = rows();
  for (const [code, exit] of Object.entries(EXIT_FOR_CODE)) {
    t.equal(documented.get(code), exit, `${code}: exit ${exit}`);
  }
  for (const [code, exit] of documented) {
    t.equal(exitCodeFor(new FscryptError('x', { code })), exit, `documented ${code} maps to exit ${exit}`);
  }
  t.ok(documented.size >= Object.keys(EXIT_FOR_CODE).length + 8, 'the errno table is read too');
});

/** The same rows' gRPC cell: the backquoted name just before the exit code. */
function grpcRows(): Map<string, string> {
  const table = new Map<string, string>();
  for (const line of doc.split('\n')) {
    const cells = line.split('|').map((c) => c.trim());
    if (cells.length < 5 || !/^\d+$/.test(cells.at(-2) ?? '')) continue;
    const name = /^`([A-Z_]+)`$/.exec(cells.at(-3) ?? '')?.[1];
    if (name === undefined) continue;
    const codes = [...cells[1]!.matchAll(/`([A-Z_0-9]+)`/g)].map((m) => m[1]!);
    for (const code of codes.length > 0 ? codes : ['(others)']) table.set(code, name);
  }
  return table;
}

t.test('docs/errors.md lists every code with its gRPC code, as the CSI node service maps it', async (t) => {
  const documented = grpcRows();
  for (const [code, name] of Object.entries(GRPC_FOR_CODE)) t.equal(documented.get(code), name, `${code}: ${name}`);
  for (const [code, name] of Object.entries(GRPC_FOR_ERRNO)) t.equal(documented.get(code), name, `errno ${code}: ${name}`);
  for (const [code, name] of documented) {
    const error = code === '(others)' ? new FscryptError('x', { code: 'EXDEV' }) : new FscryptError('x', { code });
    t.equal(grpcCodeFor(error), name, `documented ${code} maps to ${name}`);
  }
  t.equal(documented.size, Object.keys(GRPC_FOR_CODE).length + Object.keys(GRPC_FOR_ERRNO).length + 1, 'every row has a gRPC cell');
  t.equal(grpcCodeFor(new FscryptError('x', { code: 'ERR_ABORTED' }), { deadlinePassed: true }), 'DEADLINE_EXCEEDED', 'a passed deadline');
  t.equal(grpcCodeFor(new FscryptError('x', { code: 'ERR_SLOT_LOCKED' }), { deadlinePassed: true }), 'DEADLINE_EXCEEDED');
  t.equal(grpcCodeFor(new TypeError('a bug')), 'INTERNAL', 'anything else');
});

t.test('a raw Node system error becomes a FscryptError with its errno, path and a remedy', async (t) => {
  const raw = Object.assign(new Error("EROFS: read-only file system, open '/slot/x'"), { errno: -30, code: 'EROFS', syscall: 'open', path: '/slot/x' });
  const wrapped = asFscryptError(raw);
  t.ok(wrapped instanceof FscryptError);
  t.match(wrapped, { code: 'EROFS', errno: -30, syscall: 'open', path: '/slot/x', message: /read-only.*To fix: check `dmesg`/ });
  const bug = new TypeError('not a system error');
  t.equal(asFscryptError(bug), bug, 'a programming error is left as it is');
});
