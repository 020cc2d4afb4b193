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
  /** Non-directory entries whose metadata matched, in local-listing order: the digest work. */
  readonly matchedFiles: readonly MatchedFile<L>[];
}

/** A file whose metadata matched: the destination's entry and the source's. */
export interface MatchedFile<L extends FileEntry> {
  readonly local: L;
  readonly source: FileEntry;
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

/**
 * Compares the destination's listing with the source's. Both sides walk their trees in the same
 * order (fs/list.ts), so the listings of an exact copy hold the same URLs at the same positions:
 * that case is judged pair by pair, without hashing 2 × tens of thousands of URLs into a map
 * (~70 ms of the destination's main thread for the small benchmark tree, after both listings).
 */
export function compareListings<L extends FileEntry>(local: readonly L[], source: readonly FileEntry[]): MetadataComparison<L> {
  return compareAligned(local, source) ?? compareByUrl(local, source);
}

/**
 * compareByUrl's result when the two listings name the same URLs in the same order; undefined
 * otherwise. (The same result whenever no URL repeats, and a walk of one filesystem never lists
 * one twice.)
 */
function compareAligned<L extends FileEntry>(local: readonly L[], source: readonly FileEntry[]): MetadataComparison<L> | undefined {
  if (local.length !== source.length) return undefined;
  for (let i = 0; i < local.length; i++) if (local[i]!.fileUrl !== source[i]!.fileUrl) return undefined;
  const problems: MetadataProblem[] = [];
  const matchedFiles: MatchedFile<L>[] = [];
  let metadataMatched = 0;
  for (let i = 0; i < local.length; i++) {
    const entry = local[i]!;
    const other = source[i]!;
    if (metadataMatches(entry, other)) {
      metadataMatched++;
      if (entry.fileType !== "DIRECTORY") matchedFiles.push({ local: entry, source: other });
    } else {
      problems.push(mismatch(entry, other));
    }
  }
  const metadataMismatches = problems.length;
  return { metadataMatched, metadataMismatches, filesNotFoundAtSource: 0, filesNotFoundAtDestination: 0, problems, matchedFiles };
}

function mismatch(entry: FileEntry, other: FileEntry): MetadataProblem {
  return {
    fileUrl: entry.fileUrl,
    kind: "METADATA_MISMATCH",
    detail: `destination has ${describe(entry)}, source has ${describe(other)}`,
  };
}

function compareByUrl<L extends FileEntry>(local: readonly L[], source: readonly FileEntry[]): MetadataComparison<L> {
  const bySourceUrl = new Map<string, FileEntry>();
  for (const entry of source) bySourceUrl.set(entry.fileUrl, entry);
  const seenLocally = new Set<string>();
  const problems: MetadataProblem[] = [];
  const matchedFiles: MatchedFile<L>[] = [];
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
      if (entry.fileType !== "DIRECTORY") matchedFiles.push({ local: entry, source: other });
    } else {
      metadataMismatches++;
      problems.push(mismatch(entry, other));
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
