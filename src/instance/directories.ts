/**
 * The directories of a Cassandra instance that Live Migration copies, and the file URLs that
 * name files inside them: /api/v1/live-migration/files/<dirType>/<dirIndex>/<relative path>.
 */
import { resolve } from "node:path";
import type { InstanceConfig } from "../config/schema.js";

export const FILES_ROUTE_PREFIX = "/api/v1/live-migration/files/";

export const DIR_TYPES = ["hints", "commitlog", "saved_caches", "cdc_raw", "local_system_data", "data"] as const;
export type DirType = (typeof DIR_TYPES)[number];

/** One migrated root directory of an instance. */
export interface MigrationRoot {
  readonly dirType: DirType;
  readonly dirIndex: number;
  /** Absolute and normalized (path.resolve), not symlink-resolved: callers use it as it is. */
  readonly path: string;
  /** Placeholder names that expand to this root, e.g. ["DATA_FILE_DIR", "DATA_FILE_DIR_1"]. */
  readonly placeholders: readonly string[];
}

/**
 * The migrated roots of an instance in the Java Sidecar's order: hints, commitlog,
 * saved_caches, cdc_raw, local_system_data, then data dirs. Unconfigured ones are absent;
 * configured ones that do not exist on disk are kept here and skipped by the walker.
 */
export function migrationRoots(instance: InstanceConfig): MigrationRoot[] {
  const roots: MigrationRoot[] = [];
  const single = (dirType: DirType, path: string | undefined, placeholder: string) => {
    if (path !== undefined) roots.push({ dirType, dirIndex: 0, path: resolve(path), placeholders: [placeholder] });
  };
  single("hints", instance.hintsDir, "HINTS_DIR");
  single("commitlog", instance.commitlogDir, "COMMITLOG_DIR");
  single("saved_caches", instance.savedCachesDir, "SAVED_CACHES_DIR");
  single("cdc_raw", instance.cdcDir, "CDC_RAW_DIR");
  single("local_system_data", instance.localSystemDataFileDir, "LOCAL_SYSTEM_DATA_FILE_DIR");
  instance.dataDirs.forEach((path, i) =>
    roots.push({ dirType: "data", dirIndex: i, path: resolve(path), placeholders: ["DATA_FILE_DIR", `DATA_FILE_DIR_${i}`] }),
  );
  return roots;
}

/** Segments that encodeSegment returns unchanged (RFC 3986 unreserved characters only). */
const UNRESERVED_SEGMENT = /^[A-Za-z0-9._~-]*$/;

/** Percent-encodes one path segment so that it survives a URL (RFC 3986 pchar, minus ':' '@' for safety). */
export function encodeSegment(segment: string): string {
  if (UNRESERVED_SEGMENT.test(segment)) return segment; // Cassandra's own names, without the encoding's cost
  return encodeURIComponent(segment).replace(/[!'()*]/g, (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase());
}

/** The file URL of `relPath` (POSIX, relative, no leading slash) under `root`. */
export function fileUrlOf(root: Pick<MigrationRoot, "dirType" | "dirIndex">, relPath: string): string {
  return `${rootFileUrl(root)}/${relPath.split("/").map(encodeSegment).join("/")}`;
}

/** The prefix of every file URL under `root`: fileUrlOf(root, p) is `${rootFileUrl(root)}/` + p's encoded segments. */
export function rootFileUrl(root: Pick<MigrationRoot, "dirType" | "dirIndex">): string {
  return `${FILES_ROUTE_PREFIX}${root.dirType}/${root.dirIndex}`;
}

/**
 * The file URL of `name` inside the directory whose file URL (or rootFileUrl) is `dirUrl`: the
 * same string as fileUrlOf, one segment at a time, for walks that know the parent's URL
 * (encoding every segment of every path cost 20-65 ms per small-tree listing, this 2-7 ms).
 */
export function childFileUrl(dirUrl: string, name: string): string {
  return `${dirUrl}/${encodeSegment(name)}`;
}
