// The CSI v1 subset (csi.proto, beside this file in lib/ and copied beside
// it into dist/ by the build) loaded with @grpc/proto-loader, and the shapes
// its messages take in JS with the loader options used here: field names as
// in the spec (keepCase), enums as their names, int64 as decimal strings (no
// rounding above 2^53), every field present with its default, and each
// oneof's chosen member named by the oneof's own field.
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as loader from '@grpc/proto-loader';

export const PROTO_FILE = fileURLToPath(new URL('./csi.proto', import.meta.url));

export const LOADER_OPTIONS = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true } as const satisfies loader.Options;

interface CsiPackage {
  Identity: grpc.ServiceClientConstructor;
  Node: grpc.ServiceClientConstructor;
}

let loaded: CsiPackage | undefined;

/** The csi.v1 package: its services' definitions (for a server) and client constructors (for tests and tools). */
export function csiPackage(): CsiPackage {
  if (loaded === undefined) {
    const grpcObject = grpc.loadPackageDefinition(loader.loadSync(PROTO_FILE, LOADER_OPTIONS));
    const v1 = (grpcObject.csi as grpc.GrpcObject).v1 as grpc.GrpcObject;
    loaded = { Identity: v1.Identity as grpc.ServiceClientConstructor, Node: v1.Node as grpc.ServiceClientConstructor };
  }
  return loaded;
}

// ---- messages, as the server receives requests and sends responses

export type AccessModeName =
  | 'UNKNOWN'
  | 'SINGLE_NODE_WRITER'
  | 'SINGLE_NODE_READER_ONLY'
  | 'MULTI_NODE_READER_ONLY'
  | 'MULTI_NODE_SINGLE_WRITER'
  | 'MULTI_NODE_MULTI_WRITER'
  | 'SINGLE_NODE_SINGLE_WRITER'
  | 'SINGLE_NODE_MULTI_WRITER';

export interface VolumeCapability {
  block?: Record<string, never> | null;
  mount?: { fs_type: string; mount_flags: string[]; volume_mount_group: string } | null;
  access_mode: { mode: AccessModeName | number } | null;
  /** Which member of the oneof is set (loader option oneofs). */
  access_type?: 'block' | 'mount';
}

export interface NodePublishVolumeRequest {
  volume_id: string;
  publish_context: Record<string, string>;
  staging_target_path: string;
  target_path: string;
  volume_capability: VolumeCapability | null;
  readonly: boolean;
  /** Never logged, never read: this driver needs no secret from kubelet. */
  secrets: Record<string, string>;
  volume_context: Record<string, string>;
}

export interface NodeUnpublishVolumeRequest {
  volume_id: string;
  target_path: string;
}

export interface NodeGetVolumeStatsRequest {
  volume_id: string;
  volume_path: string;
  staging_target_path: string;
}

export interface VolumeUsage {
  available: string;
  total: string;
  used: string;
  unit: 'BYTES' | 'INODES';
}

export interface NodeGetVolumeStatsResponse {
  usage: VolumeUsage[];
  volume_condition?: { abnormal: boolean; message: string };
}

export type NodeRpcName = 'GET_VOLUME_STATS' | 'VOLUME_CONDITION';

export interface NodeGetCapabilitiesResponse {
  capabilities: { rpc: { type: NodeRpcName } }[];
}

export interface NodeGetInfoResponse {
  node_id: string;
  max_volumes_per_node: string;
}

export interface GetPluginInfoResponse {
  name: string;
  vendor_version: string;
  manifest: Record<string, string>;
}

export interface GetPluginCapabilitiesResponse {
  capabilities: never[];
}

export interface ProbeResponse {
  ready: { value: boolean };
}
