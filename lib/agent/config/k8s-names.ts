// The API server's syntax rules for the names the config puts into objects
// (apimachinery's validation: IsQualifiedName, IsValidLabelValue,
// IsDNS1123Subdomain). Checked when the config is loaded, so a bad label
// is refused with its file and key instead of failing every PV create.
// Each returns why the text breaks the rule, or undefined.

const NAME = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** A DNS-1123 subdomain: a StorageClass name, a label key's prefix. */
export function dnsSubdomainProblem(text: string): string | undefined {
  if (text.length === 0) return 'it is empty';
  if (text.length > 253) return 'it is longer than 253 characters';
  if (!DNS1123_SUBDOMAIN.test(text)) return "it must be lower case letters, digits, '-' and '.', starting and ending with a letter or digit";
  return undefined;
}

/** A qualified name: a label key, a taint key (`[prefix/]name`). */
export function labelKeyProblem(text: string): string | undefined {
  const parts = text.split('/');
  if (parts.length > 2) return "a label key has at most one '/' (prefix/name)";
  const name = parts.length === 2 ? parts[1]! : parts[0]!;
  if (parts.length === 2) {
    const prefix = dnsSubdomainProblem(parts[0]!);
    if (prefix !== undefined) return `its prefix (before '/') is not a DNS subdomain: ${prefix}`;
  }
  if (name.length === 0) return 'its name part is empty';
  if (name.length > 63) return 'its name part is longer than 63 characters';
  if (!NAME.test(name)) return "its name part must be letters, digits, '-', '_' and '.', starting and ending with a letter or digit";
  return undefined;
}

/** A label value: empty, or a name of at most 63 characters. */
export function labelValueProblem(text: string): string | undefined {
  if (text.length === 0) return undefined;
  if (text.length > 63) return 'a label value is at most 63 characters';
  if (!NAME.test(text)) return "a label value must be letters, digits, '-', '_' and '.', starting and ending with a letter or digit";
  return undefined;
}
