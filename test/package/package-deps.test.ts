// Every runtime dependency in package.json is used by the code that ships
// (lib/ or binding.gyp): an unused one is only download size and attack
// surface for every installer. A dependency comes back with its first use.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';

const root = fileURLToPath(new URL('../..', import.meta.url));
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { dependencies?: Record<string, string> };

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((entry) => entry.isFile() && /\.(ts|mts|js|mjs)$/.test(entry.name))
    .map((entry) => readFileSync(join(entry.parentPath, entry.name), 'utf8'));
}

const shipped = [...sources(join(root, 'lib')), readFileSync(join(root, 'binding.gyp'), 'utf8')];

function escape(name: string): string {
  return name.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
}

t.test('every runtime dependency is imported or required by lib/ or binding.gyp', async (t) => {
  const names = Object.keys(pkg.dependencies ?? {});
  t.ok(names.length > 0, 'there are dependencies to check');
  for (const name of names) {
    // from 'x', from 'x/sub', import('x'), require('x') (also require(\"x\") in binding.gyp)
    const use = new RegExp(`(from\\s+|import\\(|require\\(\\\\?)['"]${escape(name)}(/[^'"]*)?\\\\?['"]`);
    t.ok(shipped.some((text) => use.test(text)), `${name} is used`);
  }
});
