import { describe, expect, it } from "vitest";
import { parseConfig } from "../../src/config/load.js";

const BASE = `
cassandra_instances:
  - id: 1
    host: src.example
    data_dirs: [/var/lib/cassandra/data0, /var/lib/cassandra/data1]
    staging_dir: /var/lib/cassandra-staging
sidecar:
  port: 9043
live_migration:
  migration_map:
    src.example: dst.example
`;

function errorOf(yaml: string): string {
  try {
    parseConfig(yaml);
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error("config was accepted");
}

describe("config", () => {
  it("applies the Java Sidecar's defaults", () => {
    const { config, warnings } = parseConfig(BASE);
    expect(warnings).toEqual([]);
    expect(config.sidecar).toEqual({ host: "0.0.0.0", port: 9043, peerPort: 9044 });
    expect(config.liveMigration.maxConcurrentFileRequests).toBe(20);
    expect(config.liveMigration.dirsToExclude).toEqual(["glob:${DATA_FILE_DIR}/*/*/snapshots"]);
    expect(config.liveMigration.filesToExclude).toEqual([]);
    expect(config.sidecarClient).toEqual({ maxRetries: 5, retryDelayMs: 500, maxRetryDelayMs: 10_000 });
    const instance = config.instances[0]!;
    expect(instance.port).toBe(9042);
    expect(instance.jmxPort).toBe(7199);
    expect(instance.jmxHost).toBe("src.example");
    expect(instance.commitlogDir).toBeUndefined();
  });

  it("defaults unset directories under storage_dir", () => {
    const { config } = parseConfig(`
cassandra_instances:
  - id: 7
    host: a
    storage_dir: /srv/c
`);
    const i = config.instances[0]!;
    expect(i.dataDirs).toEqual(["/srv/c/data"]);
    expect(i.commitlogDir).toBe("/srv/c/commitlog");
    expect(i.hintsDir).toBe("/srv/c/hints");
    expect(i.savedCachesDir).toBe("/srv/c/saved_caches");
    expect(i.cdcDir).toBe("/srv/c/cdc_raw");
    expect(i.stagingDir).toBe("/srv/c/sstable-staging");
    expect(i.localSystemDataFileDir).toBeUndefined();
  });

  it("parses sidecar_client durations", () => {
    const { config } = parseConfig(BASE + `sidecar_client:\n  max_retries: 2\n  retry_delay: 250ms\n  max_retry_delay: 3s\n`);
    expect(config.sidecarClient).toEqual({ maxRetries: 2, retryDelayMs: 250, maxRetryDelayMs: 3000 });
  });

  it("warns once about keys it does not use, and never fails on them", () => {
    const { warnings } = parseConfig(
      BASE + `  files_to_exclude: []\nhealthcheck:\n  execute_interval: 30s\naccess_control:\n  enabled: false\n`,
    );
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain("healthcheck, access_control");
  });

  const table: [string, string, string][] = [
    ["max_concurrent_file_requests 0", BASE + "  max_concurrent_file_requests: 0\n", "live_migration.max_concurrent_file_requests: must be >= 1, got 0"],
    ["max_concurrent_file_requests not an integer", BASE + "  max_concurrent_file_requests: many\n", 'live_migration.max_concurrent_file_requests: must be an integer, got "many"'],
    [
      "duplicate destinations",
      BASE + "    other.example: dst.example\n",
      "live_migration.migration_map: Invalid migration_map: a node cannot be the destination of multiple sources. Duplicate destinations: [dst.example]",
    ],
    [
      "host in both roles",
      BASE + "    dst.example: third.example\n",
      "live_migration.migration_map: Invalid migration_map: a node cannot be both source and destination. Conflicting nodes: [dst.example]",
    ],
    ["bad exclusion prefix", BASE + "  dirs_to_exclude: ['/data/*/snapshots']\n", 'live_migration.dirs_to_exclude[0]: must start with "glob:" or "regex:"'],
    ["unknown placeholder", BASE + "  files_to_exclude: ['glob:${NOPE}/x']\n", "live_migration.files_to_exclude[0]: unknown placeholder ${NOPE}"],
    ["bad regex", BASE + "  files_to_exclude: ['regex:(']\n", "live_migration.files_to_exclude[0]: invalid regex"],
    ["no instances", "sidecar:\n  port: 9043\n", "cassandra_instances: must be a non-empty list of instances"],
    ["instance without host", "cassandra_instances:\n  - id: 1\n    storage_dir: /x\n", "cassandra_instances[0].host: is required"],
    ["no data dirs", "cassandra_instances:\n  - id: 1\n    host: a\n    staging_dir: /s\n", "cassandra_instances[0].data_dirs: is required when storage_dir is not set"],
    ["staging inside a data dir", "cassandra_instances:\n  - id: 1\n    host: a\n    data_dirs: [/d]\n    staging_dir: /d/staging\n", "cassandra_instances[0].staging_dir: must not be inside the migrated data directory /d"],
    ["same gateway and peer port", BASE.replace("  port: 9043", "  port: 9050\n  peer_port: 9050"), "sidecar.peer_port: must differ from sidecar.port, both are 9050"],
    ["negative retries", BASE + "sidecar_client:\n  max_retries: -1\n", "sidecar_client.max_retries: must be >= 0, got -1"],
    ["bad duration", BASE + "sidecar_client:\n  retry_delay: soon\n", 'sidecar_client.retry_delay: must be a duration like 500ms or 10s, got "soon"'],
    ["invalid YAML", "cassandra_instances: [\n", "invalid YAML"],
  ];
  for (const [name, yaml, message] of table) {
    it(`rejects ${name}`, () => {
      expect(errorOf(yaml)).toContain(message);
    });
  }

  it("reports every problem at once", () => {
    const message = errorOf(BASE + "  max_concurrent_file_requests: 0\n  dirs_to_exclude: [nope]\n");
    expect(message).toContain("max_concurrent_file_requests: must be >= 1, got 0");
    expect(message).toContain("dirs_to_exclude[0]");
  });
});
