// The server itself: its socket (never world-accessible, a stale one
// replaced, anything else refused, removed on stop), Probe's readiness, its
// default log, and one slot that must not stall the others.
import { spawn } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import t from 'tap';
import { CsiServer, jsonLinesLog, socketPath } from '../../lib/agent/csi/index.js';
import { formatVolumeHandle } from '../../lib/agent/csi/volume-handle.js';
import { safeLog } from '../../lib/agent/csi/log.js';
import { rejection } from '../fixtures/helpers.js';
import { kubeletTree, mountCapability, NODE, recordingLog, startServer } from '../fixtures/agent/csi.js';
import { scratchDir } from '../fixtures/system/scratch-fs.js';

t.test('the socket is 0600, and stop() removes it', async (t) => {
  const previous = process.umask(0o000); // the most permissive umask: the server must not rely on it
  t.teardown(() => void process.umask(previous));
  const { socket, server, client } = await startServer(t, { slots: new Map() });
  process.umask(previous);
  const stat = statSync(socket);
  t.ok(stat.isSocket());
  t.equal(stat.mode & 0o777, 0o600, `mode ${(stat.mode & 0o777).toString(8)}`);
  t.same(await client.identity('Probe'), { ready: { value: true } }, 'reachable with authority localhost');
  client.close();
  await server.stop();
  t.notOk(existsSync(socket), 'removed on stop');
  await server.stop();
  t.pass('stop twice is fine');
});

t.test('a stale socket (left by kill -9) is replaced; a file or directory there is refused and left alone', async (t) => {
  const dir = scratchDir(t);
  const stale = join(dir, 'csi.sock');
  const child = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(stale)}, () => process.kill(process.pid, 'SIGKILL'))`]);
  await new Promise((resolve) => child.once('exit', resolve));
  t.ok(lstatSync(stale).isSocket(), 'a stale socket is left behind');
  const { client } = await startServer(t, { slots: new Map() }, dir);
  t.same(await client.identity('Probe'), { ready: { value: true } }, 'the new server listens on it');

  const file = join(dir, 'file.sock');
  writeFileSync(file, 'not a socket');
  const byFile = new CsiServer({ nodeId: NODE, slots: new Map(), log: recordingLog().log });
  await t.rejects(byFile.start(`unix://${file}`), /refusing to replace .*file\.sock: it is not a socket \(a file\)/);
  t.ok(statSync(file).isFile(), 'the file is intact');
  const directory = join(dir, 'dir.sock');
  mkdirSync(directory);
  await t.rejects(new CsiServer({ nodeId: NODE, slots: new Map(), log: recordingLog().log }).start(directory), /not a socket \(a directory\)/);
  t.ok(statSync(directory).isDirectory());
});

t.test('endpoints: unix:///path, unix:/path or /path; nothing else', async (t) => {
  t.equal(socketPath('unix:///csi/csi.sock'), '/csi/csi.sock');
  t.equal(socketPath('unix:/csi/csi.sock'), '/csi/csi.sock');
  t.equal(socketPath('/csi/csi.sock'), '/csi/csi.sock');
  t.throws(() => socketPath('tcp://127.0.0.1:10000'));
  t.throws(() => socketPath('unix://relative.sock'));
  t.throws(() => socketPath('csi.sock'));
});

t.test('Probe: FAILED_PRECONDITION with the reason until the agent is ready', async (t) => {
  let readiness: { ready: true } | { ready: false; reason: string } = { ready: false, reason: "slot /mnt/disks/ssd0: its protector did not open (ERR_KEY_SOURCE: the KMS plugin is unreachable)" };
  const { client } = await startServer(t, { slots: new Map(), readiness: async () => readiness });
  const error = await rejection(client.identity('Probe'));
  t.match(error, { code: grpc.status.FAILED_PRECONDITION, details: /not ready: slot \/mnt\/disks\/ssd0: its protector did not open/ });
  readiness = { ready: true };
  t.same(await client.identity('Probe'), { ready: { value: true } });
  const info = await client.identity<{ vendor_version: string }>('GetPluginInfo');
  t.equal(info.vendor_version, JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')).version, 'vendor_version is the package version');
});

t.test('a handle whose slot is not set up: UNAVAILABLE (kubelet retries) while the agent starts, NOT_FOUND once it is ready', async (t) => {
  let readiness: { ready: true } | { ready: false; reason: string } = { ready: false, reason: 'starting' };
  const kubelet = kubeletTree(t);
  const { client } = await startServer(t, { slots: new Map(), kubeletDir: kubelet.root, readiness: async () => readiness });
  const volume_id = formatVolumeHandle({ nodeName: NODE, slot: '0123456789abcdef', generation: 1, identifier: 'ab'.repeat(16) });
  const request = { volume_id, target_path: await kubelet.newTarget(), volume_capability: mountCapability() };
  const starting = await rejection(client.node('NodePublishVolume', request));
  t.match(starting, { code: grpc.status.UNAVAILABLE, details: /still starting \(starting\): slot 0123456789abcdef is not set up yet/ });
  readiness = { ready: true };
  const ready = await rejection(client.node('NodePublishVolume', request));
  t.match(ready, { code: grpc.status.NOT_FOUND, details: /slot 0123456789abcdef is not served by this node's agent/ });
});

t.test('the default log writes JSON lines; a logger that throws breaks nothing', async (t) => {
  const lines: string[] = [];
  const log = jsonLinesLog((line) => void lines.push(line));
  log.warn({ volume_id: 'v1.x', n: 1 }, 'hello');
  t.match(JSON.parse(lines[0]!), { level: 'warn', time: String, volume_id: 'v1.x', n: 1, msg: 'hello' });
  t.ok(lines[0]!.endsWith('\n'));
  const throwing = safeLog({
    info: () => {
      throw new Error('log down');
    },
    warn: () => undefined,
    error: () => undefined,
  });
  t.doesNotThrow(() => throwing.info({}, 'x'));
  const { client } = await startServer(t, { slots: new Map(), log: { info: () => { throw new Error('log down'); }, warn: () => undefined, error: () => undefined } });
  t.same(await client.identity('Probe'), { ready: { value: true } }, 'the RPC still answers');
  const fallback = new CsiServer({ nodeId: NODE, slots: new Map() });
  t.ok(fallback, 'a server without a log writes to stderr');
});

// Not here yet: a frozen slot (fsfreeze --freeze) not stalling the RPCs of
// other slots. It waits for the hooks' metadata writes to move off the event
// loop (docs/csi.md, "Not yet"); CI's strict mode fails a todo, so there is
// no placeholder test.
