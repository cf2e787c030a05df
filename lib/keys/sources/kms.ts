// The `kms` key source: the slot's protector key is wrapped by a Kubernetes
// KMS v2 plugin (any plugin a cluster already runs: AWS, Azure, GCP, Vault
// ...), which keeps the KEK. What the plugin returns (ciphertext, key_id,
// annotations) is stored verbatim in our own record beside .fscrypt.
import { FscryptError } from '../../kernel/index.js';
import { wipe } from '../secret.js';
import { PROTECTOR_KEY_SIZE } from '../wrap.js';
import { KmsClient, KmsRefusal } from './kms-client.js';
import type { KeySourceProvider, ProtectorRecord } from './provider.js';

export class KmsKeySource implements KeySourceProvider {
  readonly kind = 'kms';
  readonly source = 'kms';
  readonly description: string;
  private readonly client: KmsClient;

  constructor(socket: string, timeoutMs?: number) {
    this.client = new KmsClient(socket, timeoutMs);
    this.description = `the KMS plugin at '${socket}'`;
  }

  async seal(protectorKey: Buffer, meta: { descriptor: string; name: string }): Promise<ProtectorRecord> {
    const sealed = await this.client.encrypt(protectorKey);
    return { storage: 'kms', data: { descriptor: meta.descriptor, name: meta.name, ...sealed } };
  }

  async unseal(record: ProtectorRecord): Promise<Buffer | null> {
    if (record.storage !== 'kms') return null;
    let plaintext: Buffer;
    try {
      plaintext = await this.client.decrypt(record.data);
    } catch (error) {
      if (error instanceof KmsRefusal) return null;
      throw error;
    }
    if (plaintext.length !== PROTECTOR_KEY_SIZE) {
      const size = plaintext.length;
      wipe(plaintext);
      throw new FscryptError(`the KMS plugin at '${this.client.socket}' decrypted a protector key to ${size} bytes, not ${PROTECTOR_KEY_SIZE}`, {
        code: 'ERR_KEY_SOURCE',
        path: this.client.socket,
      });
    }
    return plaintext;
  }

  close(): void {
    this.client.close();
  }
}
