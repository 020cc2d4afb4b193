/** What the agent hands to a destination instance's task managers. */
import type { SidecarClientConfig } from "../config/schema.js";
import type { InstanceContext } from "../instance/registry.js";
import type { Logger } from "../log.js";
import type { SourcePeer } from "./peer.js";

export interface TaskDeps {
  /** The destination instance (role "destination", sourceHost set). */
  readonly instance: InstanceContext;
  /** Opens a plane client to `<instance.sourceHost>:<peer_port>`, logging to the task's `logger`; the caller closes it. */
  readonly connectSource: (logger?: Logger) => SourcePeer;
  readonly logger: Logger;
  /** Backoff policy for transient faults (sidecar_client). */
  readonly retry: SidecarClientConfig;
  /** This agent's gateway port, reported as `port` in task responses. */
  readonly gatewayPort: number;
  /** live_migration.max_concurrent_file_requests; maxConcurrency above it is a 400. */
  readonly maxConcurrentFileRequests: number;
}

/** Context given to a data-copy pre-check before every iteration (Java: PreCheckContext). */
export interface PreCheckContext {
  readonly sourceHost: string;
  readonly instance: InstanceContext;
  readonly gatewayPort: number;
  readonly taskId: string;
  readonly iteration: number;
  readonly request: { readonly maxIterations: number; readonly successThreshold: number; readonly maxConcurrency: number };
  readonly signal: AbortSignal;
}

/**
 * A deployment's own safety check, run before every data-copy iteration. Resolve to let the
 * iteration run; reject (any error; its message becomes the failure reason) to fail it.
 */
export interface PreCheck {
  check(context: PreCheckContext): Promise<void>;
}

export const NO_PRE_CHECK: PreCheck = { check: async () => {} };
