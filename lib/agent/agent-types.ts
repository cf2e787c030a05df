// The shapes the controller half works with, stated structurally so each
// piece (config, events, metrics) can be built and tested on its own: the
// config module's ClassConfig and AgentConfig, the EventRecorder and the
// AgentMetrics satisfy these.
import type { KeySourceSpec } from '../keys/key-source.js';
import type { EventReason } from './events.js';
import type { NodeSelectorTerm } from './pv/pv-spec.js';

export interface AgentClass {
  className: string;
  hostDir: string;
  mountDir: string;
  namePatterns: readonly string[];
  accessMode: 'ReadWriteOnce' | 'ReadWriteOncePod';
  fsType?: string | undefined;
  selector: readonly NodeSelectorTerm[];
  fscrypt: { keySource: KeySourceSpec; keySourceText: string };
}

export interface AgentSettings {
  classes: readonly AgentClass[];
  nodeLabelsForPV: readonly string[];
  labelsForPV: Readonly<Record<string, string>>;
  setPVOwnerRef: boolean;
  minResyncPeriodMs: number;
  removeNodeNotReadyTaint: boolean;
  notReadyTaintKey: string;
}

export interface ObjectRef {
  kind: 'PersistentVolume' | 'Node';
  name: string;
  uid?: string;
}

/** Where lifecycle steps and failures are told to operators (core/v1 Events). */
export interface Reporter {
  record(object: ObjectRef, type: 'Normal' | 'Warning', reason: EventReason, message: string): void;
}

/** The production signals the controller feeds (prom-client gauges and counters). */
export interface AgentSignals {
  observeHook(hook: string, seconds: number, outcome: 'ok' | 'error'): void;
  countError(operation: string, code: string): void;
  setVolumeStates(counts: Record<string, number>): void;
  setOrphanKeys(n: number): void;
  setSlotProblems(n: number): void;
  lockRetry(): void;
  setInformerAge(seconds: number): void;
}

export interface AgentLogger {
  info(fields: Record<string, unknown>, message: string): void;
  warn(fields: Record<string, unknown>, message: string): void;
  error(fields: Record<string, unknown>, message: string): void;
  debug?(fields: Record<string, unknown>, message: string): void;
}
