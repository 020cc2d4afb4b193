/**
 * The instances an agent fronts, and how a request's Host header (gRPC: :authority) picks one
 * (behaviour doc §2): strip the port (IPv6 brackets handled), match a configured
 * `cassandra_instances[].host` exactly, else resolve the name and match its addresses.
 * Roles come from where the instance's configured host appears in migration_map.
 */
import { lookup } from "node:dns/promises";
import { isIP } from "node:net";
import type { Config, InstanceConfig } from "../config/schema.js";
import { AgentError } from "../errors.js";
import { Exclusions } from "../fs/exclude.js";
import type { DataCopyTasks, VerificationTasks } from "../migration/task-api.js";
import { TaskSlot } from "../migration/task-slot.js";
import { StatusStore } from "../migration/status-store.js";
import { migrationRoots, type MigrationRoot } from "./directories.js";

export type Role = "source" | "destination" | "none";

/** Everything the agent knows about one fronted instance. */
export interface InstanceContext {
  readonly config: InstanceConfig;
  readonly roots: readonly MigrationRoot[];
  readonly exclusions: Exclusions;
  readonly role: Role;
  /** The source host (as in migration_map) when this instance is a destination. */
  readonly sourceHost: string | undefined;
  /** The destination host when this instance is a source. */
  readonly destinationHost: string | undefined;
  readonly status: StatusStore;
  readonly slot: TaskSlot;
  /** Set by the agent for destination instances; undefined elsewhere. */
  dataCopy: DataCopyTasks | undefined;
  verification: VerificationTasks | undefined;
}

/** Derives an instance's role from migration_map. */
export function roleOf(host: string, migrationMap: ReadonlyMap<string, string>): Role {
  if (migrationMap.has(host)) return "source";
  for (const destination of migrationMap.values()) if (destination === host) return "destination";
  return "none";
}

/** The host part of a Host header or :authority ("[::1]:9043" -> "::1", "a:9043" -> "a", "::1" -> "::1"). */
export function hostOfHeader(header: string): string {
  const h = header.trim();
  if (h.startsWith("[")) {
    const end = h.indexOf("]");
    return end > 0 ? h.slice(1, end) : h;
  }
  if (isIP(h) === 6) return h; // bare IPv6 without brackets is kept whole
  const colon = h.lastIndexOf(":");
  return colon >= 0 ? h.slice(0, colon) : h;
}

/** Host header values whose DNS answer is remembered at most (the cache starts over beyond). */
const RESOLVED_HOSTS_KEPT = 1024;

export class InstanceRegistry {
  private readonly byHost = new Map<string, InstanceContext>();
  private readonly resolved = new Map<string, InstanceContext | undefined>();

  constructor(config: Config) {
    const map = config.liveMigration.migrationMap;
    for (const instance of config.instances) {
      const roots = migrationRoots(instance);
      const role = roleOf(instance.host, map);
      let sourceHost: string | undefined;
      for (const [source, destination] of map) if (destination === instance.host) sourceHost = source;
      this.byHost.set(instance.host, {
        config: instance,
        roots,
        exclusions: Exclusions.compile(roots, config.liveMigration.filesToExclude, config.liveMigration.dirsToExclude),
        role,
        sourceHost,
        destinationHost: map.get(instance.host),
        status: new StatusStore(instance.stagingDir),
        slot: new TaskSlot(),
        dataCopy: undefined,
        verification: undefined,
      });
    }
  }

  all(): InstanceContext[] {
    return [...this.byHost.values()];
  }

  /**
   * The instance a Host header names.
   * @throws AgentError NotFound when the header is missing or names no configured instance.
   */
  async resolve(hostHeader: string | undefined): Promise<InstanceContext> {
    if (!hostHeader) throw new AgentError("NotFound", "Request has no Host header naming a Cassandra instance");
    const host = hostOfHeader(hostHeader);
    const exact = this.byHost.get(host);
    if (exact) return exact;
    if (!this.resolved.has(host)) {
      // Any client can send any Host: the answers are kept, but not without bound.
      if (this.resolved.size >= RESOLVED_HOSTS_KEPT) this.resolved.clear();
      this.resolved.set(host, await this.resolveByAddress(host));
    }
    const byAddress = this.resolved.get(host);
    if (byAddress) return byAddress;
    throw new AgentError("NotFound", `No Cassandra instance is configured for host ${host}`);
  }

  private async resolveByAddress(host: string): Promise<InstanceContext | undefined> {
    let addresses: string[];
    try {
      addresses = (await lookup(host, { all: true })).map((a) => a.address);
    } catch {
      return undefined;
    }
    for (const address of addresses) {
      const hit = this.byHost.get(address);
      if (hit) return hit;
    }
    return undefined;
  }
}
