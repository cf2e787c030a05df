// What the rest of the agent codes against: the validated configuration, with
// every default applied, and what came with it (warnings, a digest to tell a
// change). Nothing here knows YAML or the directory layout.
import type { KeySourceSpec } from '../../keys/key-source.js';

/** One requirement of a node selector term, as in core/v1 NodeSelectorRequirement. */
export interface NodeSelectorRequirement {
  key: string;
  /** In, NotIn, Exists, DoesNotExist, Gt or Lt (matchFields: In or NotIn). */
  operator: string;
  values?: string[];
}

/** core/v1 NodeSelectorTerm: its requirements are ANDed; terms are ORed. */
export interface NodeSelectorTerm {
  matchExpressions?: NodeSelectorRequirement[];
  matchFields?: NodeSelectorRequirement[];
}

/** One storage class the agent serves: a `storageClassMap` entry with an `fscrypt:` block. */
export interface ClassConfig {
  className: string;
  /** The directory on the host; the PV path is `<hostDir>/<entry>`. Absolute, cleaned. */
  hostDir: string;
  /** Where the agent sees hostDir (its container's mount of it). Absolute, cleaned; defaults to hostDir. */
  mountDir: string;
  /** Go filepath.Match globs; an entry is a slot if any matches (see matchesNamePattern). */
  namePatterns: string[];
  volumeMode: 'Filesystem';
  fsType?: string;
  accessMode: 'ReadWriteOnce' | 'ReadWriteOncePod';
  /** Extra node affinity terms, ORed with this node's hostname term (upstream's rule). */
  selector: NodeSelectorTerm[];
  fscrypt: {
    keySource: KeySourceSpec;
    /** The text form, as written (`file:/etc/...`): for logs and status; it holds no secret. */
    keySourceText: string;
  };
}

export interface AgentConfig {
  /** Sorted by className. */
  classes: ClassConfig[];
  /** Node label keys copied onto each PV. */
  nodeLabelsForPV: string[];
  /** Labels put on each PV. */
  labelsForPV: Record<string, string>;
  useNodeNameOnly: boolean;
  setPVOwnerRef: boolean;
  /** Informer resync: random between this and twice this; 0 means no periodic resync. */
  minResyncPeriodMs: number;
  removeNodeNotReadyTaint: boolean;
  /** The startup taint removed once ready (meaningful only with removeNodeNotReadyTaint). */
  notReadyTaintKey: string;
}

/**
 * Something the agent accepted but an operator should know: an unknown key,
 * a key it does not use, a class it leaves to the upstream provisioner.
 * `file` is the ConfigMap key (the file's name), undefined when the warning
 * is about a key that is absent; `key` is the path inside that file.
 */
export interface ConfigWarning {
  file: string | undefined;
  key: string;
  message: string;
  /** 1-based line in the file, when the YAML parser knows it. */
  line?: number;
}

export interface LoadedConfig {
  config: AgentConfig;
  warnings: ConfigWarning[];
  /** sha256 (hex) of the file names and contents read: equal digests, same config. */
  digest: string;
}
