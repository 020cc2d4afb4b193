/**
 * The Live Migration role guards (Java: LiveMigrationApiEnableDisableHandler), shared by the
 * gateway and the plane. Unlike the Java Sidecar's guards, every failure carries a message.
 */
import { AgentError } from "../errors.js";
import type { InstanceContext } from "../instance/registry.js";

/** isSource: the instance's host is a key of migration_map, else 404. */
export function requireSource(instance: InstanceContext): void {
  if (instance.role !== "source") {
    throw new AgentError("NotFound", `Live migration: ${instance.config.host} is not a source in migration_map`);
  }
}

/** isDestination: the instance's host is a value of migration_map, else 404. */
export function requireDestination(instance: InstanceContext): void {
  if (instance.role !== "destination") {
    throw new AgentError("NotFound", `Live migration: ${instance.config.host} is not a destination in migration_map`);
  }
}

/** isSourceOrDestination: the host appears in migration_map, else 404. */
export function requireSourceOrDestination(instance: InstanceContext): void {
  if (instance.role === "none") {
    throw new AgentError("NotFound", `Live migration: ${instance.config.host} is not in migration_map`);
  }
}

/** neitherSourceNorDestination: the host is absent from migration_map, else 403. */
export function requireNeither(instance: InstanceContext): void {
  if (instance.role !== "none") {
    throw new AgentError(
      "PermissionDenied",
      `Live migration: ${instance.config.host} is still in migration_map; remove it and restart before clearing the status`,
    );
  }
}

/** allowIfMigrationNotComplete: the instance's record is not COMPLETED, else 400. */
export async function requireNotCompleted(instance: InstanceContext): Promise<void> {
  if (await instance.status.isCompleted()) {
    throw new AgentError("FailedPrecondition", `Live migration is already marked COMPLETED for ${instance.config.host}`);
  }
}
