// DESIGN's layering: lib/agent drives lib/volume and never reaches the native
// addon, directly or through lib/kernel's ioctl API (only lib/kernel's error
// types, which load no addon, and lib/keys' types are allowed).
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';

const agent = fileURLToPath(new URL('../../lib/agent', import.meta.url));
// The agent's own packages: gRPC, the Kubernetes client, config parsing and validation, metrics, logs.
const ALLOWED = [/^\.\.?\//, /^node:/, /^@grpc\/(grpc-js|proto-loader)$/, /^@kubernetes\/client-node$/, /^(yaml|zod|prom-client|pino)$/];

t.test('lib/agent imports lib/volume, lib/kernel/errors, lib/keys types and the key-source parser only', async (t) => {
  const files = readdirSync(agent, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts'));
  t.ok(files.length > 5, `${files.length} files`);
  for (const file of files) {
    const text = readFileSync(join(agent, file), 'utf8');
    for (const [, typeOnly, specifier] of text.matchAll(/^(?:import|export)\s+(type\s+)?[^'"]*?from\s+'([^']+)'/gm)) {
      t.ok(ALLOWED.some((p) => p.test(specifier!)), `${file}: ${specifier} is an allowed package`);
      t.notMatch(specifier!, /native|binding/, `${file}: never the addon (${specifier})`);
      if (/\/kernel\//.test(specifier!)) t.match(specifier!, /\/kernel\/errors\.js$/, `${file}: from lib/kernel only its errors (${specifier})`);
      // key-source.ts is pure parsing (it loads no addon: only lib/kernel's errors), which the config needs.
      if (/\/keys\//.test(specifier!) && !/\/keys\/key-source\.js$/.test(specifier!)) t.ok(typeOnly !== undefined, `${file}: from lib/keys only types, or key-source's parser (${specifier})`);
    }
  }
});
