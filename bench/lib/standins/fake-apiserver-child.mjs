// The child process of fake-apiserver-process.mjs: transpiles the fake API
// server fixture (argv[2] is the repository, argv[3] the output directory),
// runs it on 127.0.0.1 and answers the benchmark's requests
// (bench/lib/standins/ipc-child.mjs):
//
//   put { resource, obj }            seed an object (a StorageClass, the Node)
//   bind { names, namespace }        a PVC binds each PV (the PV controller's writes)
//   release { names }                each PV's PVC is deleted, all in one go
//   pvs                              the PVs: [{ name, uid, phase, deleting, handle }]
//   touch { name }                   another client changes PV `name` (an annotation):
//                                    a MODIFIED event for every watch
//   waitFor { live, excluding, gone, timeoutMs }
//                                    resolves { at } (process.hrtime ns, as a string:
//                                    CLOCK_MONOTONIC, comparable across processes) at
//                                    the first committed write after which at least
//                                    `live` PVs not named in `excluding` exist and are
//                                    not being deleted, and no PV named in `gone` exists
//   mark                             start counting requests and CPU from here
//   stats                            { cpuMs, requests (by "verb resource" since mark),
//                                      invalidWrites, internalErrors, rssMiB }
//
// waitFor follows the store's own write stream (the one every watch is fed
// from), so the time is that of the write itself, with no polling. `store`
// is a private field of the fixture in TypeScript only; once transpiled it
// is a plain property.
import { mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { serve } from './ipc-child.mjs';

const [repo, out] = process.argv.slice(2);

async function transpile() {
  const { default: ts } = await import('typescript');
  writeFileSync(join(out, 'package.json'), '{"type":"module"}\n');
  symlinkSync(join(repo, 'node_modules'), join(out, 'node_modules'));
  mkdirSync(join(out, 'fixtures'));
  const fixtures = join(repo, 'test/fixtures/fake-apiserver');
  for (const file of readdirSync(fixtures).filter((name) => name.endsWith('.ts'))) {
    const { outputText } = ts.transpileModule(readFileSync(join(fixtures, file), 'utf8'), {
      fileName: file,
      compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022, verbatimModuleSyntax: true, sourceMap: false },
    });
    writeFileSync(join(out, 'fixtures', file.replace(/\.ts$/, '.js')), outputText);
  }
  return join(out, 'fixtures', 'index.js');
}

const { FakeApiServer } = await import(await transpile());

const PVS = 'persistentvolumes';
const server = new FakeApiServer();

/** PV name → { deleting }: what exists now, from the store's writes. */
const pvs = new Map();
const waiters = new Set();
let markedAt = 0;
let touches = 0;
let cpuAtMark = process.cpuUsage();

function satisfied({ live, excluding, gone }) {
  for (const name of gone) if (pvs.has(name)) return false;
  let count = 0;
  for (const [name, pv] of pvs) if (!pv.deleting && !excluding.has(name)) count++;
  return count >= live;
}

function check() {
  for (const waiter of waiters) {
    if (!satisfied(waiter)) continue;
    waiters.delete(waiter);
    clearTimeout(waiter.timer);
    waiter.resolve({ at: String(process.hrtime.bigint()) });
  }
}

server.store.subscribe(PVS, server.store.revision, (event) => {
  const name = event.object.metadata.name;
  if (event.type === 'DELETED') pvs.delete(name);
  else pvs.set(name, { deleting: event.object.metadata.deletionTimestamp !== undefined });
  check();
});

function pvSummary(pv) {
  return {
    name: pv.metadata.name,
    uid: pv.metadata.uid,
    phase: pv.status?.phase,
    deleting: pv.metadata.deletionTimestamp !== undefined,
    handle: pv.spec?.csi?.volumeHandle,
  };
}

const operations = {
  put: ({ resource, obj }) => void server.put(resource, obj),
  bind: ({ names, namespace }) => {
    for (const name of names) server.bind(name, { namespace, name: `claim-${name}` });
  },
  release: ({ names }) => {
    for (const name of names) server.release(name);
  },
  pvs: () => server.list(PVS).map(pvSummary),
  touch: ({ name }) => {
    const pv = server.get(PVS, name);
    if (pv === undefined) throw new Error(`no PV ${name}`);
    touches++;
    pv.metadata.annotations = { ...pv.metadata.annotations, 'bench.fscrypt-local.github.io/touched': String(touches) };
    server.put(PVS, pv);
  },
  waitFor: ({ live, excluding = [], gone = [], timeoutMs }) =>
    new Promise((resolve, reject) => {
      const waiter = { live, excluding: new Set(excluding), gone, resolve };
      waiter.timer = setTimeout(() => {
        waiters.delete(waiter);
        let count = 0;
        for (const [name, pv] of pvs) if (!pv.deleting && !waiter.excluding.has(name)) count++;
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${live} PVs (have ${count}; still there of the ${gone.length} to go: ${gone.filter((n) => pvs.has(n)).length})`));
      }, timeoutMs);
      waiters.add(waiter);
      check();
    }),
  mark: () => {
    markedAt = server.requests.length;
    cpuAtMark = process.cpuUsage();
  },
  stats: () => {
    const requests = {};
    for (const r of server.requests.slice(markedAt)) {
      const key = `${r.verb} ${r.resource || r.path}${r.status >= 400 ? ` ${r.status}` : ''}`;
      requests[key] = (requests[key] ?? 0) + 1;
    }
    const cpu = process.cpuUsage(cpuAtMark);
    return {
      cpuMs: Math.round((cpu.user + cpu.system) / 1000),
      requests,
      invalidWrites: server.invalidWrites.map((w) => `${w.verb} ${w.resource} ${w.name}: ${w.causes.map((c) => `${c.field}: ${c.message}`).join('; ')}`),
      internalErrors: server.internalErrors.map((e) => e.message),
      rssMiB: Math.round(process.memoryUsage().rss / 1048576),
    };
  },
};

await serve(
  operations,
  async () => {
    await server.up();
    return server.url;
  },
  () => server.close(),
);
