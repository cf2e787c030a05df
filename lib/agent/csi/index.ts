// lib/agent/csi: the kubelet-facing half of the node agent (CSI Identity and
// Node over a unix socket). The controller half starts a CsiServer with the
// node's slots and formats the volume handles of the PVs it creates.
export { CsiServer, DEFAULT_DRIVER_NAME, DEFAULT_KUBELET_DIR, socketPath, type CsiServerOptions } from './server.js';
export { formatVolumeHandle, parseVolumeHandle, nodeTag, MAX_HANDLE_BYTES, type VolumeHandle } from './volume-handle.js';
export { GRPC_FOR_CODE, GRPC_FOR_ERRNO, grpcCodeFor, type GrpcCodeName } from './errors.js';
export type { SlotEntry, SlotTable } from './volumes.js';
export type { PendingLock } from './busy-locks.js';
export type { Readiness } from './identity.js';
export { jsonLinesLog, type CsiLog, type LogFields } from './log.js';
export { BIND_MOUNT_OPTIONS } from './publish-request.js';
