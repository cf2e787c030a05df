// A key source spec -> the provider that implements it.
import { checkKeySource, type KeySourceSpec } from '../key-source.js';
import { FileKeySource } from './file.js';
import { KmsKeySource } from './kms.js';
import { PassphraseKeySource } from './passphrase.js';
import type { KeySourceProvider } from './provider.js';
import type { KeysWarningHandler } from '../warnings.js';

export type { KeySourceProvider, ProtectorRecord, ProtectorSource } from './provider.js';

/** `warn` receives what the source finds wrong but usable (a KEK file others can read). */
export function providerFor(spec: KeySourceSpec, warn?: KeysWarningHandler): KeySourceProvider {
  const s = checkKeySource(spec);
  switch (s.kind) {
    case 'file':
      return new FileKeySource(s.path, warn);
    case 'passphrase':
      return new PassphraseKeySource(s.path, s.costs, warn);
    case 'kms':
      return new KmsKeySource(s.socket, s.timeoutMs);
  }
}
