// The bytes of the Kubernetes KMS v2 plugin API (proto/kms_v2.proto):
// requests encoded and replies decoded by hand. Replies are checked as the
// apiserver checks them (kmsv2/envelope.go limits). Unknown fields in a reply
// are skipped, as proto3 requires: a newer plugin may add fields. Known
// fields with the wrong wire type, repeated, or malformed are refused.
import { BinaryReader, BinaryWriter, WireType } from '@bufbuild/protobuf/wire';
import { checkKmsLimits, decodeAnnotations, FormatError, writeAnnotations } from '../metadata-format.js';
import { allocSecret, copySecret, wipe } from '../secret.js';

export const KMS_SERVICE = 'v2.KeyManagementService';
export const KMS_METHODS = {
  status: `/${KMS_SERVICE}/Status`,
  encrypt: `/${KMS_SERVICE}/Encrypt`,
  decrypt: `/${KMS_SERVICE}/Decrypt`,
} as const;

export interface StatusResponse {
  version: string;
  healthz: string;
  keyId: string;
}

export interface EncryptResponse {
  ciphertext: Uint8Array;
  keyId: string;
  annotations: Map<string, Uint8Array>;
}

export interface DecryptRequest extends EncryptResponse {
  uid: string;
}

type Value = bigint | Uint8Array;

/** Reads a reply's fields: expected ones once each with the right wire type; others skipped. */
function readReply(bytes: Uint8Array, message: string, expected: Readonly<Record<number, { name: string; repeated?: boolean }>>): Map<number, Value[]> {
  const fields = new Map<number, Value[]>();
  const reader = new BinaryReader(bytes);
  try {
    while (reader.pos < reader.len) {
      const [no, wire] = reader.tag();
      const rule = expected[no];
      if (rule === undefined) {
        reader.skip(wire, no, 8);
        continue;
      }
      if (wire !== WireType.LengthDelimited) throw new FormatError(`${message}.${rule.name} has wire type ${wire}, expected 2`);
      const list = fields.get(no);
      const value = reader.bytes();
      if (list === undefined) fields.set(no, [value]);
      else if (rule.repeated) list.push(value);
      else throw new FormatError(`${message}.${rule.name} appears more than once`);
    }
  } catch (error) {
    if (error instanceof FormatError) throw error;
    throw new FormatError(`${message} is not a valid protobuf message (${error instanceof Error ? error.message : String(error)})`);
  }
  return fields;
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function text(fields: Map<number, Value[]>, no: number, label: string): string {
  const v = fields.get(no)?.[0];
  if (!(v instanceof Uint8Array)) return '';
  try {
    return strictUtf8.decode(v);
  } catch {
    throw new FormatError(`${label} is not valid UTF-8`);
  }
}

function bytes(fields: Map<number, Value[]>, no: number): Uint8Array {
  const v = fields.get(no)?.[0];
  return v instanceof Uint8Array ? v : new Uint8Array(0);
}

export function encodeStatusRequest(): Uint8Array {
  return new Uint8Array(0);
}

export function decodeStatusResponse(data: Uint8Array): StatusResponse {
  const f = readReply(data, 'StatusResponse', { 1: { name: 'version' }, 2: { name: 'healthz' }, 3: { name: 'key_id' } });
  return { version: text(f, 1, 'StatusResponse.version'), healthz: text(f, 2, 'StatusResponse.healthz'), keyId: text(f, 3, 'StatusResponse.key_id') };
}

/**
 * EncryptRequest{plaintext, uid}, built in a secret Buffer the caller wipes
 * once the call is over: field 1 carries the protector key.
 */
export function encodeEncryptRequest(plaintext: Uint8Array, uid: string): Buffer {
  if (plaintext.length > 127) throw new RangeError('a KMS plaintext here is a 32-byte key');
  const tail = new BinaryWriter().tag(2, WireType.LengthDelimited).string(uid).finish();
  const out = allocSecret(2 + plaintext.length + tail.length);
  out[0] = (1 << 3) | WireType.LengthDelimited;
  out[1] = plaintext.length; // a one-byte varint
  out.set(plaintext, 2);
  out.set(tail, 2 + plaintext.length);
  return out;
}

export function decodeEncryptResponse(data: Uint8Array): EncryptResponse {
  const f = readReply(data, 'EncryptResponse', { 1: { name: 'ciphertext' }, 2: { name: 'key_id' }, 3: { name: 'annotations', repeated: true } });
  const ciphertext = Buffer.from(bytes(f, 1));
  const keyId = text(f, 2, 'EncryptResponse.key_id');
  checkKmsLimits(ciphertext, keyId, 'EncryptResponse');
  const annotations = decodeAnnotations((f.get(3) ?? []) as Uint8Array[], 'EncryptResponse.annotations');
  return { ciphertext, keyId, annotations: new Map([...annotations].map(([k, v]) => [k, Buffer.from(v)])) };
}

export function encodeDecryptRequest(request: DecryptRequest): Uint8Array {
  const w = new BinaryWriter();
  w.tag(1, WireType.LengthDelimited).bytes(request.ciphertext);
  w.tag(2, WireType.LengthDelimited).string(request.uid);
  w.tag(3, WireType.LengthDelimited).string(request.keyId);
  writeAnnotations(w, 4, request.annotations);
  return w.finish();
}

/**
 * DecryptResponse{plaintext}: the protector key, copied into a secret
 * Buffer. The reply buffer itself is wiped here.
 */
export function decodeDecryptResponse(data: Uint8Array): Buffer {
  try {
    const f = readReply(data, 'DecryptResponse', { 1: { name: 'plaintext' } });
    return copySecret(bytes(f, 1));
  } finally {
    wipe(data);
  }
}
