/**
 * sidecar.yaml → validated, frozen Config. Reads the Java Cassandra Sidecar's keys so that
 * operators can reuse their file; every problem names its YAML path and rule
 * (`live_migration.max_concurrent_file_requests: must be >= 1, got 0`), all problems are
 * reported at once, and keys lm-sidecar does not use produce one warning, never a failure.
 */
import { readFile } from "node:fs/promises";
import path from "node:path";
import { parse as parseYaml } from "yaml";
import { AgentError } from "../errors.js";
import { checkExclusionSpec } from "../fs/exclude.js";
import { migrationRoots } from "../instance/directories.js";
import { DEFAULTS, type Config, type InstanceConfig } from "./schema.js";

export interface LoadedConfig {
  readonly config: Config;
  /** Human-readable warnings (at most one line per kind). */
  readonly warnings: string[];
}

/** The keys lm-sidecar reads; anything else is reported once as ignored. */
const KNOWN_KEYS: Record<string, readonly string[]> = {
  "": ["cassandra_instances", "sidecar", "live_migration", "sidecar_client"],
  "cassandra_instances[]": [
    "id",
    "host",
    "port",
    "jmx_host",
    "jmx_port",
    "storage_dir",
    "data_dirs",
    "staging_dir",
    "commitlog_dir",
    "hints_dir",
    "saved_caches_dir",
    "cdc_dir",
    "local_system_data_file_dir",
  ],
  sidecar: ["host", "port", "peer_port"],
  live_migration: ["migration_map", "files_to_exclude", "dirs_to_exclude", "max_concurrent_file_requests", "pre_check_command"],
  sidecar_client: ["max_retries", "retry_delay", "max_retry_delay"],
};

/** Reads and validates a config file. @throws AgentError InvalidArgument listing every problem. */
export async function loadConfigFile(file: string): Promise<LoadedConfig> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    throw new AgentError("InvalidArgument", `cannot read config ${file}: ${(err as Error).message}`, { cause: err });
  }
  return parseConfig(text, file);
}

/** Parses YAML text. `origin` names the source in messages. */
export function parseConfig(text: string, origin = "sidecar.yaml"): LoadedConfig {
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (err) {
    throw new AgentError("InvalidArgument", `${origin}: invalid YAML: ${(err as Error).message}`, { cause: err });
  }
  return buildConfig(raw ?? {}, origin);
}

class Problems {
  readonly list: string[] = [];
  add(at: string, rule: string): void {
    this.list.push(`${at}: ${rule}`);
  }
}

type Raw = Record<string, unknown>;

function isRecord(v: unknown): v is Raw {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function show(v: unknown): string {
  return typeof v === "string" ? JSON.stringify(v) : String(v);
}

function integer(p: Problems, at: string, v: unknown, def: number | undefined, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (v === undefined || v === null) {
    if (def === undefined) p.add(at, "is required");
    return def ?? min;
  }
  if (typeof v !== "number" || !Number.isInteger(v)) {
    p.add(at, `must be an integer, got ${show(v)}`);
    return def ?? min;
  }
  if (v < min) p.add(at, `must be >= ${min}, got ${v}`);
  else if (v > max) p.add(at, `must be <= ${max}, got ${v}`);
  return v;
}

function text(p: Problems, at: string, v: unknown, required: boolean): string | undefined {
  if (v === undefined || v === null) {
    if (required) p.add(at, "is required");
    return undefined;
  }
  if (typeof v !== "string" || v.trim() === "") {
    p.add(at, `must be a non-empty string, got ${show(v)}`);
    return undefined;
  }
  return v;
}

function dir(p: Problems, at: string, v: unknown): string | undefined {
  const s = text(p, at, v, false);
  return s === undefined ? undefined : path.resolve(s);
}

function stringList(p: Problems, at: string, v: unknown, def: readonly string[]): string[] {
  if (v === undefined || v === null) return [...def];
  if (!Array.isArray(v)) {
    p.add(at, `must be a list, got ${show(v)}`);
    return [...def];
  }
  return v.flatMap((item, i) => {
    if (typeof item !== "string") {
      p.add(`${at}[${i}]`, `must be a string, got ${show(item)}`);
      return [];
    }
    return [item];
  });
}

/** Durations as the Java Sidecar writes them: 500ms, 10s, 1m, 1h, or a number of ms. */
function durationMs(p: Problems, at: string, v: unknown, def: number): number {
  if (v === undefined || v === null) return def;
  if (typeof v === "number" && Number.isFinite(v) && v >= 0) return v;
  const m = typeof v === "string" ? /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/i.exec(v) : null;
  if (!m) {
    p.add(at, `must be a duration like 500ms or 10s, got ${show(v)}`);
    return def;
  }
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? "ms").toLowerCase() as "ms" | "s" | "m" | "h"];
  return Math.round(Number(m[1]) * unit);
}

function unknownKeys(raw: Raw, known: readonly string[] | undefined, prefix: string, out: string[]): void {
  if (!known) return;
  for (const key of Object.keys(raw)) if (!known.includes(key)) out.push(prefix ? `${prefix}.${key}` : key);
}

function buildConfig(raw: unknown, origin: string): LoadedConfig {
  const p = new Problems();
  const ignored: string[] = [];
  if (!isRecord(raw)) throw new AgentError("InvalidArgument", `${origin}: must be a YAML mapping`);
  unknownKeys(raw, KNOWN_KEYS[""], "", ignored);

  // sidecar
  const sidecarRaw = raw["sidecar"] ?? {};
  if (!isRecord(sidecarRaw)) p.add("sidecar", "must be a mapping");
  const s = isRecord(sidecarRaw) ? sidecarRaw : {};
  unknownKeys(s, KNOWN_KEYS["sidecar"], "sidecar", ignored);
  const sidecar = {
    host: text(p, "sidecar.host", s["host"], false) ?? DEFAULTS.sidecarHost,
    port: integer(p, "sidecar.port", s["port"], DEFAULTS.sidecarPort, 0, 65535),
    peerPort: integer(p, "sidecar.peer_port", s["peer_port"], DEFAULTS.peerPort, 0, 65535),
  };
  if (sidecar.port !== 0 && sidecar.port === sidecar.peerPort) {
    p.add("sidecar.peer_port", `must differ from sidecar.port, both are ${sidecar.port}`);
  }

  // cassandra_instances
  const instances: InstanceConfig[] = [];
  const list = raw["cassandra_instances"];
  if (!Array.isArray(list) || list.length === 0) {
    p.add("cassandra_instances", "must be a non-empty list of instances");
  } else {
    list.forEach((item, i) => {
      const at = `cassandra_instances[${i}]`;
      if (!isRecord(item)) return p.add(at, "must be a mapping");
      unknownKeys(item, KNOWN_KEYS["cassandra_instances[]"], at, ignored);
      const host = text(p, `${at}.host`, item["host"], true) ?? "";
      const storageDir = dir(p, `${at}.storage_dir`, item["storage_dir"]);
      const under = (name: string) => (storageDir === undefined ? undefined : path.join(storageDir, name));
      let dataDirs = stringList(p, `${at}.data_dirs`, item["data_dirs"], []).map((d) => path.resolve(d));
      if (dataDirs.length === 0) {
        if (storageDir !== undefined) dataDirs = [path.join(storageDir, "data")];
        else p.add(`${at}.data_dirs`, "is required when storage_dir is not set");
      }
      const stagingDir = dir(p, `${at}.staging_dir`, item["staging_dir"]) ?? under("sstable-staging");
      if (stagingDir === undefined) p.add(`${at}.staging_dir`, "is required when storage_dir is not set");
      const instance: InstanceConfig = {
        id: integer(p, `${at}.id`, item["id"], i + 1, 0),
        host,
        port: integer(p, `${at}.port`, item["port"], DEFAULTS.nativePort, 1, 65535),
        jmxHost: text(p, `${at}.jmx_host`, item["jmx_host"], false) ?? (host || "127.0.0.1"),
        jmxPort: integer(p, `${at}.jmx_port`, item["jmx_port"], DEFAULTS.jmxPort, 1, 65535),
        storageDir,
        dataDirs,
        stagingDir: stagingDir ?? "",
        commitlogDir: dir(p, `${at}.commitlog_dir`, item["commitlog_dir"]) ?? under("commitlog"),
        hintsDir: dir(p, `${at}.hints_dir`, item["hints_dir"]) ?? under("hints"),
        savedCachesDir: dir(p, `${at}.saved_caches_dir`, item["saved_caches_dir"]) ?? under("saved_caches"),
        cdcDir: dir(p, `${at}.cdc_dir`, item["cdc_dir"]) ?? under("cdc_raw"),
        localSystemDataFileDir: dir(p, `${at}.local_system_data_file_dir`, item["local_system_data_file_dir"]),
      };
      if (stagingDir !== undefined) {
        for (const root of migrationRoots(instance)) {
          if (stagingDir === root.path || stagingDir.startsWith(root.path + path.sep)) {
            p.add(`${at}.staging_dir`, `must not be inside the migrated ${root.dirType} directory ${root.path}`);
          }
        }
      }
      instances.push(instance);
    });
    const seenHosts = new Set<string>();
    const seenIds = new Set<number>();
    instances.forEach((inst, i) => {
      if (inst.host && seenHosts.has(inst.host)) p.add(`cassandra_instances[${i}].host`, `duplicates host ${inst.host}`);
      if (seenIds.has(inst.id)) p.add(`cassandra_instances[${i}].id`, `duplicates id ${inst.id}`);
      seenHosts.add(inst.host);
      seenIds.add(inst.id);
    });
  }

  // live_migration
  const lmRaw = raw["live_migration"] ?? {};
  if (!isRecord(lmRaw)) p.add("live_migration", "must be a mapping");
  const lm = isRecord(lmRaw) ? lmRaw : {};
  unknownKeys(lm, KNOWN_KEYS["live_migration"], "live_migration", ignored);
  const migrationMap = new Map<string, string>();
  const mapRaw = lm["migration_map"] ?? {};
  if (!isRecord(mapRaw)) p.add("live_migration.migration_map", "must be a mapping of source host to destination host");
  else {
    for (const [source, destination] of Object.entries(mapRaw)) {
      if (typeof destination !== "string" || destination.trim() === "") {
        p.add(`live_migration.migration_map.${source}`, `must be a destination host name, got ${show(destination)}`);
      } else migrationMap.set(source, destination);
    }
    const destinations = [...migrationMap.values()];
    const duplicates = [...new Set(destinations.filter((d, i) => destinations.indexOf(d) !== i))];
    if (duplicates.length > 0) {
      p.add(
        "live_migration.migration_map",
        `Invalid migration_map: a node cannot be the destination of multiple sources. Duplicate destinations: [${duplicates.join(", ")}]`,
      );
    }
    const conflicting = [...migrationMap.keys()].filter((k) => destinations.includes(k));
    if (conflicting.length > 0) {
      p.add(
        "live_migration.migration_map",
        `Invalid migration_map: a node cannot be both source and destination. Conflicting nodes: [${conflicting.join(", ")}]`,
      );
    }
  }
  const filesToExclude = stringList(p, "live_migration.files_to_exclude", lm["files_to_exclude"], []);
  const dirsToExclude = stringList(p, "live_migration.dirs_to_exclude", lm["dirs_to_exclude"], DEFAULTS.dirsToExclude);
  for (const [key, specs] of [["files_to_exclude", filesToExclude], ["dirs_to_exclude", dirsToExclude]] as const) {
    specs.forEach((spec, i) => {
      const problem = checkExclusionSpec(spec);
      if (problem) p.add(`live_migration.${key}[${i}]`, problem);
    });
  }
  const liveMigration = {
    migrationMap,
    filesToExclude,
    dirsToExclude,
    maxConcurrentFileRequests: integer(
      p,
      "live_migration.max_concurrent_file_requests",
      lm["max_concurrent_file_requests"],
      DEFAULTS.maxConcurrentFileRequests,
      1,
    ),
    preCheckCommand: text(p, "live_migration.pre_check_command", lm["pre_check_command"], false),
  };

  // sidecar_client
  const scRaw = raw["sidecar_client"] ?? {};
  if (!isRecord(scRaw)) p.add("sidecar_client", "must be a mapping");
  const sc = isRecord(scRaw) ? scRaw : {};
  unknownKeys(sc, KNOWN_KEYS["sidecar_client"], "sidecar_client", ignored);
  const sidecarClient = {
    maxRetries: integer(p, "sidecar_client.max_retries", sc["max_retries"], DEFAULTS.maxRetries, 0),
    retryDelayMs: durationMs(p, "sidecar_client.retry_delay", sc["retry_delay"], DEFAULTS.retryDelayMs),
    maxRetryDelayMs: durationMs(p, "sidecar_client.max_retry_delay", sc["max_retry_delay"], DEFAULTS.maxRetryDelayMs),
  };
  if (sidecarClient.maxRetryDelayMs < sidecarClient.retryDelayMs) {
    p.add("sidecar_client.max_retry_delay", `must be >= sidecar_client.retry_delay (${sidecarClient.retryDelayMs}ms), got ${sidecarClient.maxRetryDelayMs}ms`);
  }

  if (p.list.length > 0) {
    throw new AgentError("InvalidArgument", `invalid config ${origin}:\n  ${p.list.join("\n  ")}`);
  }
  const warnings =
    ignored.length > 0 ? [`${origin}: ignoring keys lm-sidecar does not use: ${ignored.join(", ")}`] : [];
  const config: Config = deepFreeze({ sidecar, instances, liveMigration, sidecarClient });
  return { config, warnings };
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === "object" && !(value instanceof Map)) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}
