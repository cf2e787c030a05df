// One code means one thing, and one table maps codes to exit codes:
// docs/errors.md lists every code of this project with the exit code that
// lib/cli/exit-codes.ts gives it, and every errno it documents maps as it says.
import { readFileSync } from 'node:fs';
import t from 'tap';
import { EXIT_FOR_CODE, exitCodeFor } from '../lib/cli/exit-codes.js';
import { asFscryptError, FscryptError } from '../lib/kernel/index.js';

const doc = readFileSync(new URL('../docs/errors.md', import.meta.url), 'utf8');

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

t.test('a raw Node system error becomes a FscryptError with its errno, path and a remedy', async (t) => {
  const raw = Object.assign(new Error("EROFS: read-only file system, open '/slot/x'"), { errno: -30, code: 'EROFS', syscall: 'open', path: '/slot/x' });
  const wrapped = asFscryptError(raw);
  t.ok(wrapped instanceof FscryptError);
  t.match(wrapped, { code: 'EROFS', errno: -30, syscall: 'open', path: '/slot/x', message: /read-only.*To fix: check `dmesg`/ });
  const bug = new TypeError('not a system error');
  t.equal(asFscryptError(bug), bug, 'a programming error is left as it is');
});
