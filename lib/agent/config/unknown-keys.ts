// Keys the schemas do not know, found by walking a value along its schema.
// Upstream's decoder (encoding/json under sigs.k8s.io/yaml) ignores an
// unknown key and matches a known one case-insensitively (`HostDir` sets
// hostDir); we do the same, but say so: a misspelt key is a warning with
// its path instead of a setting that silently does nothing.
import { z } from 'zod';

export interface KeyNote {
  /** Path to the key as written, its last segment the key itself. */
  path: (string | number)[];
  message: string;
}

// The schema that describes the value's structure: wrappers and pipes peeled off.
function structural(schema: z.ZodType): z.ZodType {
  let current: z.ZodType = schema;
  for (;;) {
    if (current instanceof z.ZodOptional || current instanceof z.ZodNullable || current instanceof z.ZodDefault) {
      current = current.unwrap() as z.ZodType;
    } else if (current instanceof z.ZodPipe) {
      // z.preprocess is transform → schema; schema.transform() is schema → transform.
      current = (current.in instanceof z.ZodTransform ? current.out : current.in) as z.ZodType;
    } else {
      return current;
    }
  }
}

const isMapping = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value);

/**
 * `value` with each key respelt as its schema spells it and unknown keys
 * dropped; `notes` gets one entry per key respelt, dropped or shadowed.
 */
export function reconcileKeys(schema: z.ZodType, value: unknown, notes: KeyNote[], path: (string | number)[] = []): unknown {
  const shape = structural(schema);
  if (shape instanceof z.ZodArray && Array.isArray(value)) {
    return value.map((item, index) => reconcileKeys(shape.element as z.ZodType, item, notes, [...path, index]));
  }
  if (shape instanceof z.ZodRecord && isMapping(value)) {
    const out: Record<string, unknown> = {};
    for (const [key, item] of Object.entries(value)) out[key] = reconcileKeys(shape.valueType as z.ZodType, item, notes, [...path, key]);
    return out;
  }
  if (shape instanceof z.ZodObject && isMapping(value)) {
    const known = shape.shape as Record<string, z.ZodType>;
    const out: Record<string, unknown> = {};
    for (const [key, item] of Object.entries(value)) {
      const canonical = key in known ? key : Object.keys(known).find((k) => k.toLowerCase() === key.toLowerCase());
      if (canonical === undefined) {
        notes.push({ path: [...path, key], message: 'unknown key: ignored (neither an upstream provisioner key nor one of fscrypt-local)' });
        continue;
      }
      if (canonical !== key) {
        if (canonical in value) {
          notes.push({ path: [...path, key], message: `ignored: ${canonical} is also given, spelt as it should be` });
          continue;
        }
        notes.push({ path: [...path, key], message: `read as ${canonical} (upstream matches keys regardless of case): spell it ${canonical}` });
      }
      out[canonical] = reconcileKeys(known[canonical]!, item, notes, [...path, key]);
    }
    return out;
  }
  return value;
}
