// storageClassMap: which classes the agent serves, and the rules between
// classes. A class is ours only if it has an `fscrypt:` block; any other is
// left alone with a warning (the upstream provisioner may serve it from its
// own ConfigMap), so a Block class of upstream's is no error here. Between
// classes, upstream's rule that a hostDir belongs to one class only, and
// ours that a mountDir does too: two classes over one directory would
// publish every volume twice (upstream PR #246).
import { posix } from 'node:path';
import { applySchema, problem, warn, type FileContext } from './file-context.js';
import { dnsSubdomainProblem } from './k8s-names.js';
import { classSchema, quote, type ParsedClass } from './schema.js';
import type { ClassConfig } from './types.js';

const isMapping = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value);

/** The class's own key that matches `name` as upstream's decoder would (case-insensitively). */
function keyLike(entry: Record<string, unknown>, name: string): string | undefined {
  if (name in entry) return name;
  return Object.keys(entry).find((k) => k.toLowerCase() === name.toLowerCase());
}

function toClassConfig(className: string, parsed: ParsedClass): ClassConfig {
  const config: ClassConfig = {
    className,
    hostDir: parsed.hostDir,
    mountDir: parsed.mountDir ?? parsed.hostDir,
    namePatterns: parsed.namePattern,
    volumeMode: 'Filesystem',
    accessMode: parsed.accessMode,
    selector: parsed.selector ?? [],
    fscrypt: parsed.fscrypt,
  };
  if (parsed.fsType !== undefined && parsed.fsType !== '') config.fsType = parsed.fsType;
  return config;
}

// What a class is accepted with but should be told.
function noteClass(ctx: FileContext, className: string, entry: Record<string, unknown>, config: ClassConfig): void {
  const cleaner = keyLike(entry, 'blockCleanerCommand');
  if (cleaner !== undefined) {
    warn(ctx, [className, cleaner], 'unused: a block-only key (fscrypt-local serves no block volumes; it crypto-erases instead of running a cleaner)');
  }
  config.namePatterns.forEach((piece) => {
    if (piece !== piece.trim()) {
      warn(ctx, [className, keyLike(entry, 'namePattern') ?? 'namePattern'], `the pattern ${quote(piece)} has spaces at an end: it matches only names with those spaces (upstream does not trim them either)`);
    }
  });
  if (config.selector.length > 0) {
    warn(
      ctx,
      [className, keyLike(entry, 'selector') ?? 'selector'],
      "widens the PVs' node affinity: its terms are ORed with this node's hostname (upstream's rule, meant for shared disks), so a pod may be scheduled on a node that does not hold the volume",
    );
  }
}

/** The classes with an fscrypt: block, sorted by name; everything wrong goes to ctx.problems. */
export function readStorageClasses(value: unknown, ctx: FileContext): ClassConfig[] {
  if (value === null || value === undefined) return [];
  if (!isMapping(value)) {
    problem(ctx, [], 'must be a mapping from storage class name to its settings (hostDir, mountDir, fscrypt, ...)');
    return [];
  }
  const classes: ClassConfig[] = [];
  /** hostDirs of the classes left to upstream, cleaned, with their class. */
  const foreign = new Map<string, string>();
  for (const className of Object.keys(value).sort()) {
    const entry = value[className];
    if (entry === null) {
      warn(ctx, [className], 'empty: ignored');
      continue;
    }
    if (!isMapping(entry)) {
      problem(ctx, [className], 'must be a mapping of the class settings (hostDir, mountDir, fscrypt, ...)');
      continue;
    }
    const fscryptKey = keyLike(entry, 'fscrypt');
    if (fscryptKey === undefined) {
      warn(ctx, [className], 'has no fscrypt: block: ignored by fscrypt-local (the upstream provisioner can serve it from its own ConfigMap)');
      const hostDir = entry[keyLike(entry, 'hostDir') ?? 'hostDir'];
      if (typeof hostDir === 'string' && hostDir.startsWith('/')) foreign.set(posix.normalize(hostDir).replace(/\/+$/, ''), className);
      continue;
    }
    const nameWhy = dnsSubdomainProblem(className);
    if (nameWhy !== undefined) {
      problem(ctx, [className], `is not a valid StorageClass name: ${nameWhy}`);
      continue;
    }
    const parsed = applySchema(ctx, classSchema, entry, [className]);
    if (parsed === undefined) continue;
    const config = toClassConfig(className, parsed);
    noteClass(ctx, className, entry, config);
    classes.push(config);
  }
  checkOverlaps(ctx, classes, foreign, value);
  return classes;
}

function checkOverlaps(ctx: FileContext, classes: readonly ClassConfig[], foreign: ReadonlyMap<string, string>, value: Record<string, unknown>): void {
  const hostOwner = new Map<string, string>();
  const mountOwner = new Map<string, string>();
  const keyOf = (className: string, name: string): string => keyLike(value[className] as Record<string, unknown>, name) ?? name;
  for (const c of classes) {
    const otherHost = hostOwner.get(c.hostDir);
    if (otherHost !== undefined) {
      problem(ctx, [c.className, keyOf(c.className, 'hostDir')], `${quote(c.hostDir)} is also the hostDir of class ${quote(otherHost)}: each hostDir belongs to one class only`);
      continue; // its mountDir may well be the other's too: one problem is enough
    }
    hostOwner.set(c.hostDir, c.className);
    const upstream = foreign.get(c.hostDir);
    if (upstream !== undefined) {
      problem(
        ctx,
        [c.className, keyOf(c.className, 'hostDir')],
        `${quote(c.hostDir)} is also the hostDir of class ${quote(upstream)}, which has no fscrypt: block: each hostDir belongs to one class only (the upstream provisioner would publish the same volumes)`,
      );
    }
    const otherMount = mountOwner.get(c.mountDir);
    if (otherMount !== undefined) {
      problem(ctx, [c.className, keyOf(c.className, 'mountDir')], `${quote(c.mountDir)} is also the mountDir of class ${quote(otherMount)}: two classes cannot share a directory`);
    } else {
      mountOwner.set(c.mountDir, c.className);
    }
  }
}
