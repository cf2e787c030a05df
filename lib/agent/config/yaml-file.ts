// One ConfigMap key's text, read as upstream reads it. Upstream nests each
// file under its name and decodes the lot with sigs.k8s.io/yaml, which is
// go-yaml v2: YAML 1.1 scalars (`yes`, `on`, `y` are true; `010` is 8),
// `<<` merge keys, a repeated key silently taking the last value, and keys
// that are not strings turned into their text (`on:` becomes "true").
// Timestamps and sexagesimal numbers stay strings, as go-yaml v2 leaves
// them when decoding into JSON. Each file is parsed on its own so that every
// problem names its file and line.
import { isAlias, isMap, isScalar, isSeq, LineCounter, parseDocument, type Document, type Node, type Tags } from 'yaml';
import { formatKeyPath, type ConfigProblem } from './config-error.js';
import type { ConfigWarning } from './types.js';

/** go-yaml v2 turns aliases into copies too; past this many, the text is an attack, not a config. */
const MAX_ALIAS_EXPANSIONS = 100;

export type KeyPath = readonly (string | number)[];

export interface ParsedFile {
  /** The file's value as upstream's decoder sees it; null for an empty file. */
  value: unknown;
  /** The line of the deepest part of `path` that the text has (a key, an item). */
  lineOf(path: KeyPath): number | undefined;
}

export interface FileParse {
  parsed?: ParsedFile;
  problems: ConfigProblem[];
  warnings: ConfigWarning[];
}

// go-yaml v2 keeps `2001-12-14` and `10:30` as strings when the target is
// not a time: drop the YAML 1.1 tags that would turn them into dates and numbers.
function goYamlTags(tags: Tags): Tags {
  return tags.filter((tag) =>
    typeof tag === 'string' ? !['timestamp', 'intTime', 'floatTime'].includes(tag) : !(tag.tag === 'tag:yaml.org,2002:timestamp' || ('format' in tag && tag.format === 'TIME')),
  );
}

function keyText(key: unknown): string {
  if (isScalar(key)) return String(key.value);
  return String(key);
}

function resolve(doc: Document, node: unknown): unknown {
  return isAlias(node) ? node.resolve(doc) : node;
}

export function parseConfigFile(file: string, text: string): FileParse {
  const lines = new LineCounter();
  const doc = parseDocument(text, {
    version: '1.1',
    merge: true,
    uniqueKeys: false,
    prettyErrors: false, // a pretty error quotes the line, which may hold anything
    lineCounter: lines,
    customTags: goYamlTags,
  });
  const lineAt = (offset: number): number => lines.linePos(offset).line;
  const warnings: ConfigWarning[] = doc.warnings.map((w) => ({ file, key: '', message: `YAML: ${w.message}`, line: lineAt(w.pos[0]) }));
  if (doc.errors.length > 0) {
    return {
      problems: doc.errors.map((e) => ({ file, key: '', why: `not valid YAML: ${e.message}`, line: lineAt(e.pos[0]) })),
      warnings,
    };
  }

  // What the decoder does silently, said out loud: repeated keys, keys YAML 1.1 reads as something else.
  const walk = (node: unknown, path: (string | number)[], seen: Set<unknown>): void => {
    if (seen.has(node)) return;
    seen.add(node);
    if (isMap(node)) {
      const keys = new Set<string>();
      for (const pair of node.items) {
        const key = pair.key;
        if (isScalar(key) && key.source === '<<') continue;
        const name = keyText(key);
        const line = isScalar(key) && key.range ? lineAt(key.range[0]) : undefined;
        const where = { file, key: formatKeyPath([...path, name]), ...(line === undefined ? {} : { line }) };
        if (keys.has(name)) warnings.push({ ...where, message: 'this key is given more than once: the last one is used (as upstream does)' });
        keys.add(name);
        if (isScalar(key) && typeof key.value !== 'string' && key.source !== undefined && key.source !== name) {
          warnings.push({ ...where, message: `the key ${JSON.stringify(key.source)} reads as ${JSON.stringify(name)} in YAML 1.1 (as upstream reads it): quote it to keep it` });
        }
        walk(pair.value, [...path, name], seen);
      }
    } else if (isSeq(node)) {
      node.items.forEach((item, index) => walk(item, [...path, index], seen));
    }
  };
  walk(doc.contents, [], new Set());

  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: MAX_ALIAS_EXPANSIONS });
  } catch (error) {
    return { problems: [{ file, key: '', why: `not usable YAML: ${(error as Error).message}` }], warnings };
  }

  const lineOf = (path: KeyPath): number | undefined => {
    let node: unknown = resolve(doc, doc.contents);
    let line = (node as Node | null)?.range ? lineAt((node as Node).range![0]) : undefined;
    for (const segment of path) {
      if (isMap(node)) {
        const pair =
          node.items.find((p) => keyText(p.key) === String(segment)) ??
          node.items.find((p) => keyText(p.key).toLowerCase() === String(segment).toLowerCase());
        if (pair === undefined) break;
        const key = pair.key as Node | null;
        if (key?.range) line = lineAt(key.range[0]);
        node = resolve(doc, pair.value);
      } else if (isSeq(node) && typeof segment === 'number') {
        const item = node.items[segment] as Node | undefined;
        if (item === undefined || item === null) break;
        if (item.range) line = lineAt(item.range[0]);
        node = resolve(doc, item);
      } else {
        break;
      }
    }
    return line;
  };
  return { parsed: { value, lineOf }, problems: [], warnings };
}
