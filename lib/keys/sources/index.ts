// A key source spec -> the provider that implements it.
import { checkKeySource, type KeySourceSpec } from '../key-source.js';
import { FileKeySource } from './file.js';
import { KmsKeySource } from './kms.js';
import { PassphraseKeySource } from './passphrase.js';
import type { KeySourceProvider } from './provider.js';

export type { KeySourceProvider, ProtectorRecord, ProtectorSource } from './provider.js';

export function providerFor(spec: KeySourceSpec): KeySourceProvider {
  const s = checkKeySource(spec);
  switch (s.kind) {
    case 'file':
      return new FileKeySource(s.path);
    case 'passphrase':
      return new PassphraseKeySource(s.path, s.costs);
    case 'kms':
      return new KmsKeySource(s.socket, s.timeoutMs);
  }
}
