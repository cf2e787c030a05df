// The node agent: `fscrypt-local run`'s process. It discovers slots, makes
// each one a served slot (setUpSlot), keeps exactly one PV per slot for its
// current generation, reclaims Released PVs by crypto-erase, and serves CSI
// to kubelet from the same table of slots.
//
// Everything is level-triggered: a work queue keyed by slot runs
// reconcileSlot, which re-derives what to do from the slot's own state and
// the API server, so a PV event, a discovery pass, a resync and a restart
// after kill -9 all lead to the same place. One slot's work never waits for
// another's (a frozen disk holds one worker, invariant 9).
//
// Start-up order: the CSI socket first (kubelet's registrar connects early,
// and Probe answers "not ready" with the reason until start-up is done), then
// the Node, the PV informer, and one pass over every slot found at start;
// ready once every such slot has been set up (or refused) and reconciled
// against a synced PV list. Then the start-up taint is removed.
import type { KubeConfig, V1PersistentVolume } from '@kubernetes/client-node';
import type { Check } from './health-server.js';
import { isFscryptError } from '../kernel/errors.js';
import { describeBlockers, slotStatus, TrashCollector } from '../volume/index.js';
import { CsiServer, DEFAULT_DRIVER_NAME, nodeTag, type PendingLock } from './csi/index.js';
import type { HookObservation } from './csi/server.js';
import type { AgentLogger, AgentSettings, AgentSignals, Reporter } from './agent-types.js';
import { hookStepObserver, rpcStepObserver, type AgentStepObserver } from './agent-steps.js';
import { discoverSlots } from './discovery/discover.js';
import { SlotRefused, setUpSlot } from './discovery/slot-setup.js';
import { KubeApi, type ApiObserver } from './kube/api.js';
import { PvInformer } from './kube/pv-informer.js';
import { NODE_LABEL, SLOT_LABEL } from './pv/labels.js';
import { reconcileSlot, type NodeInfo, type StorageClassInfo } from './reclaim/slot-reconciler.js';
import { SlotRegistry, slotKey, type SlotRecord } from './slots.js';
import { WorkQueue } from './work-queue.js';
import { census } from './census.js';

export interface AgentOptions {
  nodeName: string;
  kubeConfig: KubeConfig;
  csiEndpoint: string;
  kubeletDir?: string;
  driverName?: string;
  discoveryPeriodMs: number;
  /** The current configuration (the config reloader's last good one). */
  settings(): AgentSettings;
  /** Matches a slot name against a class's namePattern. */
  matches(patterns: readonly string[], name: string): boolean;
  log: AgentLogger;
  reporter: Reporter;
  signals?: Partial<AgentSignals>;
  apiObserver?: ApiObserver;
  /** Informer restart backoff and staleness (tests shorten them). */
  informer?: { restartDelay?: { initialMs?: number; maxMs?: number }; staleAfterMs?: number };
  /**
   * Told after each durable step of every operation (AGENT_STEPS: offer,
   * bind, publish, unpublish, reclaim); the crash tests kill the process
   * there. Programmatic only: `fscrypt-local run` cannot set it.
   */
  onStep?: AgentStepObserver;
  /** Work queue retry backoff (tests shorten it). */
  retry?: { initialMs?: number; maxMs?: number };
  /** Deadline of each API request (default 30 s; tests shorten it). */
  apiTimeoutMs?: number;
}

export interface AgentStatus {
  ready: boolean;
  reasons: string[];
  slots: { key: string; root: string; condition: string; problem?: string; descriptor?: string; waiting?: string }[];
  pendingLocks: PendingLock[];
}

export class Agent {
  readonly api: KubeApi;
  readonly csi: CsiServer;
  readonly slots = new SlotRegistry();
  readonly trash = new TrashCollector();
  readonly #options: AgentOptions;
  readonly #driverName: string;
  readonly #informer: PvInformer;
  readonly #queue: WorkQueue;
  readonly #waiting = new Map<string, { why: string; problem: boolean }>();
  /** Slots whose work is failing: the message logged last and how many failures since, so a retry loop logs once. */
  readonly #failing = new Map<string, { message: string; failures: number; since: number }>();
  readonly #storageClasses = new Map<string, { at: number; info: StorageClassInfo | undefined }>();
  #node: NodeInfo;
  #startupPending = new Set<string>();
  #startupDone = false;
  #stopping = false;
  #discoveryTimer: NodeJS.Timeout | undefined;
  #resyncTimer: NodeJS.Timeout | undefined;
  #taintRemoved = false;
  #censusTimer: NodeJS.Timeout | undefined;
  #censusPeriod: NodeJS.Timeout | undefined;
  readonly #argon2 = new Serial();

  constructor(options: AgentOptions) {
    this.#options = options;
    this.#driverName = options.driverName ?? DEFAULT_DRIVER_NAME;
    this.#node = { name: options.nodeName, labels: {} };
    this.api = new KubeApi(options.kubeConfig, options.apiObserver, options.apiTimeoutMs === undefined ? {} : { timeoutMs: options.apiTimeoutMs });
    this.csi = new CsiServer({
      nodeId: options.nodeName,
      driverName: this.#driverName,
      slots: this.slots,
      ...(options.kubeletDir ? { kubeletDir: options.kubeletDir } : {}),
      hookObserver: (observation) => this.#onHook(observation),
      ...(options.onStep ? { onStep: rpcStepObserver(options.onStep) } : {}),
      readiness: () => (this.#startupDone ? { ready: true } : { ready: false, reason: this.readiness().reasons.join('; ') || 'starting' }),
      log: options.log,
    });
    this.#informer = new PvInformer(options.kubeConfig, this.api.core, {
      labelSelector: `${NODE_LABEL}=${nodeTag(options.nodeName)}`,
      log: options.log,
      onEvent: (_kind, pv) => this.#onPv(pv),
      onSynced: () => this.#queueAll(),
      ...(options.informer?.restartDelay ? { restartDelay: options.informer.restartDelay } : {}),
      ...(options.informer?.staleAfterMs ? { staleAfterMs: options.informer.staleAfterMs } : {}),
      ...(options.apiTimeoutMs === undefined ? {} : { requestTimeoutMs: options.apiTimeoutMs }),
    });
    this.#queue = new WorkQueue((key) => this.#work(key), {
      concurrency: 16,
      ...(options.retry ? { retry: options.retry } : {}),
      onError: (key, error, retryInMs) => {
        const code = isFscryptError(error) ? error.code : error instanceof Error ? error.name : 'unknown';
        options.signals?.countError?.('reconcile', code);
        const message = (error as Error)?.message ?? String(error);
        // A failure repeated by the retries (an API server or a KMS plugin down for an hour) is logged when it starts
        // or changes, not at every retry; the recovery is logged with the count (#work).
        const previous = this.#failing.get(key);
        const failures = (previous?.failures ?? 0) + 1;
        this.#failing.set(key, { message, failures, since: previous?.since ?? Date.now() });
        if (previous?.message === message) options.log.debug?.({ slot: key, err: message, failures, retryInSeconds: retryInMs / 1000 }, 'slot reconcile failed again; retrying');
        else options.log.warn({ slot: key, err: message, retryInSeconds: retryInMs / 1000 }, 'slot reconcile failed; retrying with backoff (repeats of this failure are not logged again until it recovers)');
        // Repeats of one failure aggregate into one Event (the recorder's correlator).
        options.reporter.record(this.#nodeRef(), 'Warning', 'ReconcileFailed', `slot ${key}: ${message} (retrying with backoff)`);
      },
    });
  }

  async start(): Promise<void> {
    await this.csi.start(this.#options.csiEndpoint);
    await this.#readNode();
    this.#informer.start();
    await this.#discover(true);
    this.#discoveryTimer = setInterval(
      () =>
        void this.#discover(false).catch((error: unknown) => {
          this.#options.log.error({ err: (error as Error)?.message ?? String(error) }, 'discovery pass failed; the next one runs in one period');
        }),
      this.#options.discoveryPeriodMs,
    );
    this.#discoveryTimer.unref();
    this.#scheduleResync();
    // The gauges are counted on a period, not after each slot's work: a census reads every slot (bench/agent found
    // one per work item dominating a 1000-slot start), and it also catches what no queue run sees (a busy lock
    // the CSI service finished in the background).
    this.#scheduleCensus();
    this.#censusPeriod = setInterval(() => this.#scheduleCensus(), 15_000);
    this.#censusPeriod.unref();
  }

  /** Ready: start-up reconcile done for every slot found at start, PVs listed, CSI serving. */
  readiness(): Check {
    const reasons: string[] = [];
    if (this.csi.socket === undefined) reasons.push('the CSI socket is not serving');
    if (!this.#informer.synced) reasons.push('PersistentVolumes not listed yet (is the API server reachable?)');
    if (this.#startupPending.size > 0) reasons.push(`${this.#startupPending.size} slot(s) not reconciled yet: ${[...this.#startupPending].slice(0, 5).join(', ')}`);
    return { ok: reasons.length === 0 && this.#startupDone, reasons };
  }

  /**
   * Healthy: the PV informer is not stale (the event loop's own check is the
   * health server's). An informer that is failing because the API server
   * fails is healthy with a note (/healthz?verbose): the liveness probe would
   * restart the agent, which cures nothing there and stops CSI for as long as
   * the restart (and kubelet's crash-loop backoff) takes. Only a silent watch,
   * which a restart does cure, fails the check.
   */
  health(staleAfterMs = 10 * 60_000): Check {
    const age = this.#informer.ageMs;
    const failure = this.#informer.failure;
    if (failure !== undefined) {
      return {
        ok: true,
        reasons: [
          `the PersistentVolume informer is stale: nothing heard from the API server for ${Math.round(age / 1000)} s, ${failure.attempts} attempt(s) failed (last: ${failure.lastError}); CSI keeps serving, reclaims wait, and the agent retries (a restart would not help)`,
        ],
      };
    }
    return age > staleAfterMs ? { ok: false, reasons: [`the PersistentVolume watch heard nothing for ${Math.round(age / 1000)} s`] } : { ok: true, reasons: [] };
  }

  /** Seconds since the PV informer last heard from the API server (the informer_age_seconds gauge). */
  informerAgeSeconds(): number {
    return this.#informer.ageMs / 1000;
  }

  status(): AgentStatus {
    const r = this.readiness();
    return {
      ready: r.ok,
      reasons: r.reasons,
      slots: this.slots.records().map((s) => {
        const w = this.#waiting.get(s.key);
        return {
          key: s.key,
          root: s.root,
          condition: s.condition,
          ...(s.problem ? { problem: s.problem } : {}),
          ...(s.descriptor ? { descriptor: s.descriptor } : {}),
          ...(w ? { waiting: w.why } : {}),
        };
      }),
      pendingLocks: this.csi.pendingLocks(),
    };
  }

  /** Runs every slot once more and waits until the queue is idle (tests, shutdown). */
  async settle(): Promise<void> {
    this.#queueAll();
    await this.#queue.idle();
  }

  /** Stops the informer and timers, waits for in-flight work and RPCs, removes the socket, wipes the protectors. */
  async stop(): Promise<void> {
    this.#stopping = true;
    clearInterval(this.#discoveryTimer);
    clearTimeout(this.#resyncTimer);
    clearTimeout(this.#censusTimer);
    clearInterval(this.#censusPeriod);
    await this.#informer.stop();
    await this.#queue.stop();
    await this.csi.stop();
    await this.trash.close();
    this.slots.closeAll();
  }

  async #readNode(): Promise<void> {
    try {
      const node = await this.api.readNode(this.#options.nodeName);
      this.#node = { name: this.#options.nodeName, uid: node.metadata?.uid, labels: { ...(node.metadata?.labels ?? {}) } };
    } catch (error) {
      // The API server may be down at start: serve CSI from the slots anyway, and try again.
      this.#options.log.warn({ err: (error as Error).message }, 'cannot read this Node yet; retrying');
      if (!this.#stopping) setTimeout(() => void this.#readNode().then(() => this.#queueAll()), 2000).unref();
    }
  }

  /**
   * kubelet's publishes and unpublishes as Events on the PV: published to
   * which pod, locked (the key left the kernel), or lock busy with who holds
   * the files (the CSI service keeps retrying the key removal).
   */
  #onHook(o: HookObservation): void {
    const event = o.event;
    const interesting = (event.kind === 'hook-end' && event.ok && o.rpc === 'NodePublishVolume') || event.kind === 'busy' || (event.kind === 'step' && event.step === 'lock:key-removed');
    if (!interesting) return;
    const pv = this.#informer.list().find((p) => p.spec?.csi?.volumeHandle === o.volumeId);
    if (pv?.metadata?.name === undefined) return;
    const ref = { kind: 'PersistentVolume' as const, name: pv.metadata.name, ...(pv.metadata.uid ? { uid: pv.metadata.uid } : {}) };
    const pod = /\/pods\/([^/]+)\//.exec(o.target)?.[1] ?? 'unknown';
    if (event.kind === 'hook-end') this.#options.reporter.record(ref, 'Normal', 'Published', `unlocked and published to pod ${pod} on node ${this.#node.name}`);
    else if (event.kind === 'step') this.#options.reporter.record(ref, 'Normal', 'Locked', `the last pod stopped: the key left the kernel on node ${this.#node.name}; the data on disk is ciphertext`);
    else if (event.kind === 'busy') {
      this.#options.signals?.lockRetry?.();
      this.#options.reporter.record(ref, 'Warning', 'LockBusy', `the key cannot leave the kernel yet: files are still open (retrying in the background):\n${describeBlockers(event.blockers, 5)}`);
    }
  }

  #onPv(pv: V1PersistentVolume): void {
    const descriptor = pv.metadata?.labels?.[SLOT_LABEL];
    const record = this.slots.records().find((s) => s.descriptor === descriptor);
    if (record) this.#queue.add(record.key);
  }

  #queueAll(): void {
    for (const record of this.slots.records()) this.#queue.add(record.key);
  }

  #scheduleResync(): void {
    const base = this.#options.settings().minResyncPeriodMs;
    if (!(base > 0)) return; // minResyncPeriod 0: no periodic resync (PV events and discovery still drive the work)
    // Upstream's informer resync: a random period between one and two times the minimum, so nodes spread out.
    this.#resyncTimer = setTimeout(
      () => {
        this.#queueAll();
        this.#scheduleResync();
      },
      base + Math.random() * base,
    );
    this.#resyncTimer.unref();
  }

  async #discover(first: boolean): Promise<void> {
    if (this.#stopping) return;
    const settings = this.#options.settings();
    const classes = settings.classes.map((c) => ({ className: c.className, mountDir: c.mountDir, matches: (name: string) => this.#options.matches(c.namePatterns, name) }));
    const found = await discoverSlots(classes);
    for (const f of found.failed) this.#options.log.warn({ class: f.className }, f.why);
    const seen = new Set<string>();
    for (const slot of found.slots) {
      const key = slotKey(slot.className, slot.name);
      seen.add(key);
      const cls = settings.classes.find((c) => c.className === slot.className)!;
      let record = this.slots.byKey(key);
      if (record === undefined) {
        record = { key, className: slot.className, name: slot.name, root: slot.root, class: cls, condition: 'pending', reconciled: false };
        this.slots.add(record);
        if (first) this.#startupPending.add(key);
        this.#queue.add(key);
      } else {
        record.class = cls;
        // A refusal is looked at again when what caused it may have changed: the slot's contents (cheap to check,
        // every pass), or the class's key source (opening a protector can cost an Argon2 or a KMS call: only on a config change).
        const refusal = record.refusal;
        if (record.condition === 'refused' && refusal !== undefined && (refusal.retryOn === 'contents' || refusal.keySourceText !== cls.fscrypt.keySourceText)) {
          record.condition = 'pending';
          record.refusal = undefined;
          this.#queue.add(key);
        }
        if (record.condition === 'gone') {
          this.#options.log.info({ slot: key }, 'slot is mounted again');
          record.condition = record.protector ? 'ready' : 'pending';
          record.problem = undefined;
          this.#queue.add(key);
        }
      }
    }
    for (const record of this.slots.records()) {
      if (seen.has(record.key) || record.condition === 'gone') continue;
      record.condition = 'gone';
      record.problem = `${record.root} is no longer a mount point (its disk was unmounted?): its volume is not offered and cannot be published until it is mounted again`;
      this.#options.reporter.record(this.#nodeRef(), 'Warning', 'SlotGone', `slot ${record.key}: ${record.problem}`);
    }
    if (first && this.#startupPending.size === 0) this.#finishStartup();
  }

  async #work(key: string): Promise<void> {
    const record = this.slots.byKey(key);
    if (record === undefined || this.#stopping) return;
    {
      if (record.condition === 'pending') await this.#setUp(record);
      if (record.condition !== 'ready') return this.#startupSettled(key, true);
      const outcome = await reconcileSlot(record, {
        api: this.api,
        driverName: this.#driverName,
        node: () => this.#node,
        settings: this.#options.settings,
        pvs: () => (this.#informer.synced ? this.#informer.list() : undefined),
        storageClass: (name) => this.#storageClass(name),
        trash: this.trash,
        report: this.#options.reporter,
        signals: this.#options.signals ?? {},
        log: this.#options.log,
        onStep: this.#options.onStep,
      });
      const failing = this.#failing.get(key);
      if (failing !== undefined) {
        this.#failing.delete(key);
        this.#options.log.info({ slot: key, failures: failing.failures, seconds: Math.round((Date.now() - failing.since) / 1000) }, `slot reconcile works again, after ${failing.failures} failure(s)`);
      }
      if (outcome.waiting !== undefined) {
        const previous = this.#waiting.get(key);
        if (previous?.why !== outcome.waiting && outcome.problem) this.#options.reporter.record(this.#nodeRef(), 'Warning', 'SlotWaiting', `slot ${key}: ${outcome.waiting}`);
        this.#waiting.set(key, { why: outcome.waiting, problem: outcome.problem === true });
      } else this.#waiting.delete(key);
      // Start-up counts a slot as done once it was reconciled against a listed set of PVs.
      if (this.#informer.synced) this.#startupSettled(key, true);
    }
  }

  async #setUp(record: SlotRecord): Promise<void> {
    const started = process.hrtime.bigint();
    const seconds = () => Number(process.hrtime.bigint() - started) / 1e9;
    // Listed before its protector is open (a KMS call can take seconds): a publish meanwhile is UNAVAILABLE, "not
    // open yet", which kubelet retries, rather than NOT_FOUND, which says the volume is not on this node.
    await this.#listUnopened(record, record.problem ?? 'the agent is opening its protector (it is starting, or the key source is slow)');
    try {
      // A passphrase source costs an Argon2id derivation (64 MiB, ~0.3 s) per open: one at a time, so a node with
      // many slots does not need a gigabyte at start-up. File and KMS sources are cheap and go in parallel.
      const costly = record.class.fscrypt.keySource.kind === 'passphrase';
      const onStep = hookStepObserver(this.#options.onStep, 'offer', record.root);
      const options = { trash: this.trash, ...(onStep ? { onStep } : {}) };
      const setup = await (costly ? this.#argon2.run(() => setUpSlot(record.root, record.class.fscrypt.keySource, options)) : setUpSlot(record.root, record.class.fscrypt.keySource, options)).catch((error: unknown) => {
        this.#options.signals?.observeHook?.('slot-setup', seconds(), 'error');
        throw error;
      });
      this.#options.signals?.observeHook?.('slot-setup', seconds(), 'ok');
      record.descriptor = setup.descriptor;
      record.protector = setup.protector;
      record.condition = 'ready';
      record.problem = undefined;
      record.lastRefusal = undefined;
      record.reconciled = true;
      this.slots.index(record);
      for (const warning of setup.warnings) this.#options.log.warn({ slot: record.key }, warning);
      if (setup.actions.length > 0) {
        this.#options.log.info({ slot: record.key, actions: setup.actions }, 'start-up reconcile');
        this.#options.reporter.record(this.#nodeRef(), 'Normal', 'Recovered', `slot ${record.key}: start-up reconcile: ${setup.actions.join('; ')}`);
      }
      if (setup.created) this.#options.log.info({ slot: record.key, descriptor: setup.descriptor }, 'slot initialised');
    } catch (error) {
      if (isFscryptError(error, 'ERR_KEY_SOURCE')) {
        // The key source cannot be reached now (a KMS plugin down, a key file not mounted yet): the work queue
        // retries. Publishes say why meanwhile, and the slot does not hold the node's start-up: the others are
        // served, and the start-up taint goes.
        record.problem = error.message;
        this.#startupSettled(record.key, true);
      }
      if (!(error instanceof SlotRefused)) throw error;
      record.condition = 'refused';
      record.problem = error.message;
      const again = record.lastRefusal === error.message;
      record.refusal = { retryOn: error.retryOn, keySourceText: record.class.fscrypt.keySourceText };
      record.lastRefusal = error.message;
      if (again) return; // looked at again, same answer: told once
      this.#options.signals?.countError?.('slot-setup', 'refused');
      this.#options.reporter.record(this.#nodeRef(), 'Warning', 'SlotRefused', `slot ${record.key}: ${error.message}`);
      this.#options.log.warn({ slot: record.key }, error.message);
    }
  }

  /** Lists a slot made earlier by its descriptor (from its state file) while its protector is not open, with why. */
  async #listUnopened(record: SlotRecord, why: string): Promise<void> {
    record.problem = why;
    if (record.descriptor !== undefined) return;
    const status = await slotStatus(record.root).catch(() => undefined);
    if (status === undefined) return; // not a slot yet: no PV, no handle names it
    record.descriptor = status.protector;
    this.slots.index(record);
  }

  #startupSettled(key: string, done: boolean): void {
    if (!done || !this.#startupPending.delete(key)) return;
    if (this.#startupPending.size === 0) this.#finishStartup();
  }

  #finishStartup(): void {
    if (this.#startupDone) return;
    if (!this.#informer.synced) {
      setTimeout(() => this.#finishStartup(), 200).unref();
      return;
    }
    this.#startupDone = true;
    this.#options.log.info({ slots: this.slots.records().length }, 'start-up reconcile done: ready');
    void this.#removeTaint();
  }

  async #removeTaint(): Promise<void> {
    const settings = this.#options.settings();
    if (!settings.removeNodeNotReadyTaint || this.#taintRemoved || this.#stopping) return;
    try {
      const removed = await this.api.removeNodeTaint(this.#options.nodeName, settings.notReadyTaintKey);
      this.#taintRemoved = true;
      if (removed) this.#options.log.info({ taint: settings.notReadyTaintKey }, 'removed the start-up taint from this Node');
    } catch (error) {
      this.#options.log.warn({ err: (error as Error).message, taint: settings.notReadyTaintKey }, 'cannot remove the start-up taint yet; retrying');
      setTimeout(() => void this.#removeTaint(), 2000).unref();
    }
  }

  async #storageClass(name: string): Promise<StorageClassInfo | undefined> {
    const cached = this.#storageClasses.get(name);
    if (cached !== undefined && Date.now() - cached.at < 30_000) return cached.info;
    const sc = await this.api.readStorageClass(name);
    const info: StorageClassInfo | undefined = sc && { reclaimPolicy: sc.reclaimPolicy === 'Retain' ? 'Retain' : 'Delete', mountOptions: sc.mountOptions ?? [] };
    this.#storageClasses.set(name, { at: Date.now(), info });
    return info;
  }

  #nodeRef() {
    return { kind: 'Node' as const, name: this.#node.name, ...(this.#node.uid ? { uid: this.#node.uid } : {}) };
  }

  /** One census at a time, a second after it was asked for. */
  #scheduleCensus(): void {
    if (this.#censusTimer !== undefined || !this.#options.signals) return;
    this.#censusTimer = setTimeout(() => {
      void census(this.slots.records()).then((counts) => {
        this.#censusTimer = undefined;
        const signals = this.#options.signals!;
        signals.setVolumeStates?.(counts.states);
        signals.setOrphanKeys?.(counts.orphanKeys);
        signals.setSlotProblems?.(counts.problems);
        signals.setInformerAge?.(this.#informer.ageMs / 1000);
      });
    }, 1000);
    this.#censusTimer.unref();
  }
}

/** Runs one task at a time, in order. */
class Serial {
  #tail: Promise<unknown> = Promise.resolve();

  run<T>(task: () => Promise<T>): Promise<T> {
    const result = this.#tail.then(task, task);
    this.#tail = result.catch(() => undefined);
    return result;
  }
}
