/**
 * The typed, validated configuration of one agent, read from a Cassandra-Sidecar-style
 * sidecar.yaml by config/load.ts. Every field is resolved (defaults applied, paths absolute);
 * modules receive the narrow part they need, never the whole Config.
 */

/** One Cassandra instance fronted by this agent (`cassandra_instances[]`). */
export interface InstanceConfig {
  readonly id: number;
  /** Host name as operators write it; the Host header and migration_map must match it exactly. */
  readonly host: string;
  /** CQL native transport port (default 9042). */
  readonly port: number;
  readonly jmxHost: string;
  /** JMX port (default 7199). */
  readonly jmxPort: number;
  readonly storageDir: string | undefined;
  /** Absolute data directories, in order; index i is `data/<i>` in file URLs. */
  readonly dataDirs: readonly string[];
  /** Holds live_migration_status.json and task state; never migrated. */
  readonly stagingDir: string;
  readonly commitlogDir: string | undefined;
  readonly hintsDir: string | undefined;
  readonly savedCachesDir: string | undefined;
  readonly cdcDir: string | undefined;
  readonly localSystemDataFileDir: string | undefined;
}

export interface SidecarServerConfig {
  /** Address both listeners bind to (default 0.0.0.0). */
  readonly host: string;
  /** Gateway port: REST + Connect over HTTP/1.1 (default 9043). */
  readonly port: number;
  /** Peer plane port: gRPC over HTTP/2 (default 9044). A destination dials the source on its own peer_port. */
  readonly peerPort: number;
}

export interface LiveMigrationConfig {
  /** source host -> destination host, spelled like `cassandra_instances[].host`. */
  readonly migrationMap: ReadonlyMap<string, string>;
  /** `glob:` or `regex:` patterns with path placeholders, matched against absolute file paths. */
  readonly filesToExclude: readonly string[];
  /** `glob:` or `regex:` patterns with path placeholders, matched against absolute directory paths. */
  readonly dirsToExclude: readonly string[];
  /** Cap on file reads and digests the source serves at once, over REST and the plane (default 20). */
  readonly maxConcurrentFileRequests: number;
  /** Optional shell command run before every data-copy iteration; non-zero exit fails the iteration. */
  readonly preCheckCommand: string | undefined;
}

/** Retry policy of the destination's calls to its source (`sidecar_client`). */
export interface SidecarClientConfig {
  /** Retries after the first attempt (default 5). */
  readonly maxRetries: number;
  /** First backoff delay in ms (default 500). */
  readonly retryDelayMs: number;
  /** Backoff ceiling in ms (default 10000). */
  readonly maxRetryDelayMs: number;
}

export interface Config {
  readonly sidecar: SidecarServerConfig;
  readonly instances: readonly InstanceConfig[];
  readonly liveMigration: LiveMigrationConfig;
  readonly sidecarClient: SidecarClientConfig;
}

export const DEFAULTS = {
  sidecarHost: "0.0.0.0",
  sidecarPort: 9043,
  peerPort: 9044,
  nativePort: 9042,
  jmxPort: 7199,
  maxConcurrentFileRequests: 20,
  dirsToExclude: ["glob:${DATA_FILE_DIR}/*/*/snapshots"] as readonly string[],
  maxRetries: 5,
  retryDelayMs: 500,
  maxRetryDelayMs: 10_000,
} as const;
