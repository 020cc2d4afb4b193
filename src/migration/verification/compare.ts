/**
 * The metadata half of a files verification (behaviour doc §4, step 2): the destination's own
 * listing against the source's, keyed by fileUrl. Pure; no I/O.
 *
 * - In both listings: a match if both are directories (directory size and mtime are ignored),
 *   or if size, fileType and lastModifiedTime (ms) are all equal; a mismatch otherwise, which
 *   covers size, mtime and FILE/DIRECTORY differences.
 * - Only in the local listing: not found at the source. Only in the source's: not found at the
 *   destination. Directories count in both, like files.
 */
import type { FileEntry } from "../types.js";

export type MetadataProblemKind = "NOT_FOUND_AT_SOURCE" | "NOT_FOUND_AT_DESTINATION" | "METADATA_MISMATCH";

/** One entry that failed the metadata comparison. */
export interface MetadataProblem {
  readonly fileUrl: string;
  readonly kind: MetadataProblemKind;
  /** Human-readable difference, for the ERROR log line. */
  readonly detail: string;
}

export interface MetadataComparison<L extends FileEntry> {
  readonly metadataMatched: number;
  readonly metadataMismatches: number;
  readonly filesNotFoundAtSource: number;
  readonly filesNotFoundAtDestination: number;
  /** Every failed entry: local-listing order first, then source-only entries in source order. */
  readonly problems: readonly MetadataProblem[];
  /** Local non-directory entries whose metadata matched, in local-listing order: the digest work. */
  readonly matchedFiles: readonly L[];
}

/** True when the two entries of one fileUrl agree on metadata. */
export function metadataMatches(local: FileEntry, source: FileEntry): boolean {
  if (local.fileType === "DIRECTORY" && source.fileType === "DIRECTORY") return true;
  return (
    local.fileType === source.fileType && local.size === source.size && local.lastModifiedTime === source.lastModifiedTime
  );
}

function describe(e: FileEntry): string {
  return e.fileType === "DIRECTORY" ? "DIRECTORY" : `FILE size=${e.size} lastModifiedTime=${e.lastModifiedTime}`;
}

/** Compares the destination's listing with the source's. */
export function compareListings<L extends FileEntry>(local: readonly L[], source: readonly FileEntry[]): MetadataComparison<L> {
  const bySourceUrl = new Map<string, FileEntry>();
  for (const entry of source) bySourceUrl.set(entry.fileUrl, entry);
  const seenLocally = new Set<string>();
  const problems: MetadataProblem[] = [];
  const matchedFiles: L[] = [];
  let metadataMatched = 0;
  let metadataMismatches = 0;
  let filesNotFoundAtSource = 0;
  let filesNotFoundAtDestination = 0;

  for (const entry of local) {
    seenLocally.add(entry.fileUrl);
    const other = bySourceUrl.get(entry.fileUrl);
    if (other === undefined) {
      filesNotFoundAtSource++;
      problems.push({ fileUrl: entry.fileUrl, kind: "NOT_FOUND_AT_SOURCE", detail: `${describe(entry)} exists only at the destination` });
    } else if (metadataMatches(entry, other)) {
      metadataMatched++;
      if (entry.fileType !== "DIRECTORY") matchedFiles.push(entry);
    } else {
      metadataMismatches++;
      problems.push({
        fileUrl: entry.fileUrl,
        kind: "METADATA_MISMATCH",
        detail: `destination has ${describe(entry)}, source has ${describe(other)}`,
      });
    }
  }
  for (const entry of source) {
    if (seenLocally.has(entry.fileUrl)) continue;
    seenLocally.add(entry.fileUrl); // a duplicated source entry counts once
    filesNotFoundAtDestination++;
    problems.push({ fileUrl: entry.fileUrl, kind: "NOT_FOUND_AT_DESTINATION", detail: `${describe(entry)} exists only at the source` });
  }
  return { metadataMatched, metadataMismatches, filesNotFoundAtSource, filesNotFoundAtDestination, problems, matchedFiles };
}
