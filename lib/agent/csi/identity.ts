// The CSI Identity service: the driver's name and version (what
// node-driver-registrar registers with kubelet), its plugin capabilities
// (none: a node-only driver has no controller service and no topology to
// advertise), and Probe, which says ready only once the agent says so.
import { CsiError } from './errors.js';
import type { GetPluginCapabilitiesResponse, GetPluginInfoResponse, ProbeResponse } from './proto.js';

export type Readiness = { ready: true } | { ready: false; reason: string };

export interface IdentityOptions {
  driverName: string;
  vendorVersion: string;
  /**
   * Whether the agent is ready: start-up reconcile finished and every
   * configured slot's protector open. Not ready → Probe answers
   * FAILED_PRECONDITION with the reason.
   */
  readiness: () => Readiness | Promise<Readiness>;
}

// The spec: at most 63 characters, alphanumeric at both ends, '-', '.' and
// alphanumerics between; csi-sanity wants a letter at both ends.
const DRIVER_NAME = /^[A-Za-z](?:[A-Za-z0-9.-]{0,61}[A-Za-z])?$/;

export function checkDriverName(name: string): string {
  if (typeof name !== 'string' || !DRIVER_NAME.test(name)) {
    throw new TypeError(`a CSI driver name is 1-63 characters, letters at both ends, letters, digits, '.' and '-' between; got ${JSON.stringify(name)}`);
  }
  return name;
}

export function identityService(options: IdentityOptions) {
  return {
    async getPluginInfo(): Promise<GetPluginInfoResponse> {
      return { name: options.driverName, vendor_version: options.vendorVersion, manifest: {} };
    },
    async getPluginCapabilities(): Promise<GetPluginCapabilitiesResponse> {
      return { capabilities: [] };
    },
    async probe(): Promise<ProbeResponse> {
      const readiness = await options.readiness();
      if (!readiness.ready) throw new CsiError('FAILED_PRECONDITION', `the fscrypt-local node service is not ready: ${readiness.reason}`);
      return { ready: { value: true } };
    },
  };
}
