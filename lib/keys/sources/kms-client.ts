// A client for one Kubernetes KMS v2 plugin over its unix socket, dialled as
// the apiserver dials it (insecure credentials on a local socket, authority
// "localhost", wait-for-ready, a deadline on every call). Requests and replies
// go through our own codec (kms-protocol.ts), so the strict checks apply to
// whatever the plugin sends back.
import { randomUUID } from 'node:crypto';
import { stat } from 'node:fs/promises';
import * as grpc from '@grpc/grpc-js';
import { FscryptError } from '../../kernel/index.js';
import { FormatError } from '../metadata-format.js';
import { wipe } from '../secret.js';
import {
  decodeDecryptResponse,
  decodeEncryptResponse,
  decodeStatusResponse,
  encodeDecryptRequest,
  encodeEncryptRequest,
  encodeStatusRequest,
  KMS_METHODS,
  type EncryptResponse,
  type StatusResponse,
} from './kms-protocol.js';

export const DEFAULT_KMS_TIMEOUT_MS = 3000; // the apiserver's default per-call timeout
const SUPPORTED_VERSIONS = new Set(['v2', 'v2beta1']);

/** gRPC codes that mean "this plugin will not decrypt that", not "the plugin is broken". */
const REFUSAL_CODES = new Set<number>([grpc.status.INVALID_ARGUMENT, grpc.status.NOT_FOUND, grpc.status.FAILED_PRECONDITION, grpc.status.DATA_LOSS]);

export class KmsRefusal extends Error {}

const identity = (b: Buffer): Buffer => b;

export class KmsClient {
  private readonly client: grpc.Client;
  readonly timeoutMs: number;

  constructor(
    readonly socket: string,
    timeoutMs?: number,
  ) {
    this.timeoutMs = timeoutMs ?? DEFAULT_KMS_TIMEOUT_MS;
    // 'unix:///@name' in Kubernetes means a Linux abstract socket.
    const target = socket.startsWith('/@') ? `unix:\0${socket.slice(2)}` : `unix://${socket}`;
    this.client = new grpc.Client(target, grpc.credentials.createInsecure(), {
      'grpc.max_receive_message_length': 64 * 1024,
      'grpc.max_send_message_length': 64 * 1024,
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.enable_retries': 0,
    });
  }

  private fail(what: string, detail: string, cause?: unknown): FscryptError {
    return new FscryptError(`the KMS plugin at '${this.socket}' ${what}: ${detail}`, { code: 'ERR_KEY_SOURCE', path: this.socket, cause });
  }

  private async call(method: string, request: Uint8Array): Promise<Buffer> {
    const response = await new Promise<Buffer>((resolve, reject) => {
      this.client.makeUnaryRequest<Buffer, Buffer>(
        method,
        identity,
        identity,
        Buffer.from(request.buffer, request.byteOffset, request.byteLength),
        new grpc.Metadata({ waitForReady: true }),
        { deadline: Date.now() + this.timeoutMs },
        (error, value) => (error ? reject(error) : resolve(value ?? Buffer.alloc(0))),
      );
    }).catch(async (error: grpc.ServiceError) => {
      const rpc = method.slice(method.lastIndexOf('/') + 1);
      if (rpc === 'Decrypt' && REFUSAL_CODES.has(error.code)) throw new KmsRefusal(`${grpc.status[error.code]}`);
      let hint = '';
      if (error.code === grpc.status.DEADLINE_EXCEEDED || error.code === grpc.status.UNAVAILABLE) {
        const exists = await stat(this.socket).then(
          () => true,
          () => false,
        );
        hint = exists ? '. Is the plugin running and healthy?' : '. The socket does not exist: is the plugin running, and is the path right?';
      }
      // The plugin's own message (details) is not echoed: it is outside our
      // control and may quote what it was given.
      throw this.fail(`failed ${rpc}`, `${grpc.status[error.code] ?? error.code}${error.code === grpc.status.DEADLINE_EXCEEDED ? ` after ${this.timeoutMs} ms` : ''}${hint}`, error);
    });
    return response;
  }

  private decode<T>(rpc: string, bytes: Uint8Array, decode: (b: Uint8Array) => T): T {
    try {
      return decode(bytes);
    } catch (error) {
      if (error instanceof FormatError) throw this.fail(`sent an invalid ${rpc} reply`, error.message);
      throw error;
    }
  }

  /** Status, checked: a healthy v2 plugin with a key_id. */
  async status(): Promise<StatusResponse> {
    const reply = this.decode('Status', await this.call(KMS_METHODS.status, encodeStatusRequest()), decodeStatusResponse);
    if (!SUPPORTED_VERSIONS.has(reply.version)) {
      throw this.fail('speaks an unsupported API version', `${JSON.stringify(reply.version.slice(0, 32))} (v2 or v2beta1 is needed)`);
    }
    if (reply.healthz !== 'ok') {
      throw this.fail('is unhealthy', `healthz is ${JSON.stringify(reply.healthz.slice(0, 200))}, not "ok"`);
    }
    if (reply.keyId.length === 0 || Buffer.byteLength(reply.keyId) > 1024) {
      throw this.fail('sent an invalid Status reply', 'key_id must be 1 to 1024 bytes');
    }
    return reply;
  }

  /**
   * Encrypt, checked as the apiserver does: the key_id must be the one
   * Status reports (otherwise the plugin is mid-rotation or broken).
   */
  async encrypt(plaintext: Uint8Array): Promise<EncryptResponse> {
    const status = await this.status();
    const request = encodeEncryptRequest(plaintext, randomUUID());
    let reply;
    try {
      reply = this.decode('Encrypt', await this.call(KMS_METHODS.encrypt, request), decodeEncryptResponse);
    } finally {
      wipe(request);
    }
    if (reply.keyId !== status.keyId) {
      throw this.fail('is inconsistent', `Encrypt returned key_id ${JSON.stringify(reply.keyId.slice(0, 128))} but Status reports ${JSON.stringify(status.keyId.slice(0, 128))}; retry after the plugin settles`);
    }
    return reply;
  }

  /** Decrypt; throws KmsRefusal when the plugin refuses this ciphertext. */
  async decrypt(sealed: EncryptResponse): Promise<Buffer> {
    await this.status();
    const request = encodeDecryptRequest({ ...sealed, uid: randomUUID() });
    const reply = await this.call(KMS_METHODS.decrypt, request);
    return this.decode('Decrypt', reply, decodeDecryptResponse);
  }

  close(): void {
    this.client.close();
  }
}
