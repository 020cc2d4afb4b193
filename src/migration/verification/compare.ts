/**
 * The metadata half of a files verification (behaviour doc §4, step 2): the destination's own
 * listing against the source's, keyed by fileUrl. Pure; no I/O.
 *
 * - In both listings: a match if both are directories (directory size and mtime are ignored),
 *   or if size, fileType and lastModifiedTime (ms) are all equal; a mismatch otherwise, which
 *   covers size, mtime and FILE/DIRECTORY differences.
 * - Only in the local listing: not found at the source. Only in the source's: not found at the
 *   destination. Directories count in both, like files.
 *
 * Both sides walk their trees in the same order (fs/list.ts), so the listings of an exact copy
 * hold the same URLs at the same positions: ListingComparison pairs them as they arrive, and
 * each pair is judged, handed on and forgotten while the walks go on (the caller keeps either
 * walk from running far ahead: localAhead, sourceAhead). Only what does not pair
 * up that way (from the first URL that differs on) waits for both listings to end, and is then
 * compared by URL. Besides the map of tens of thousands of URLs (~70 ms of the destination's
 * main thread for the small benchmark tree, after both listings), this saves keeping both
 * listings whole: entries that outlive V8's young generation cost a collection each.
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

export interface MetadataComparison {
  readonly metadataMatched: number;
  readonly metadataMismatches: number;
  readonly filesNotFoundAtSource: number;
  readonly filesNotFoundAtDestination: number;
  /** Every failed entry: local-listing order first, then source-only entries in source order. */
  readonly problems: readonly MetadataProblem[];
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
 * The comparison of two listings fed batch by batch, in listing order, as they arrive. Each
 * metadata-matched file goes to `onMatchedFile` once (in local-listing order); the counters and
 * problems come from finish(). The same result as a comparison keyed by URL whenever no URL
 * repeats (a walk of one filesystem never lists one twice; a source that did would have its
 * repeat counted as not found at the destination once the first one was paired).
 */
export class ListingComparison<L extends FileEntry> {
  private metadataMatched = 0;
  private metadataMismatches = 0;
  private readonly problems: MetadataProblem[] = [];
  /** Entries not paired yet; arrays are replaced rather than shifted, so paired ones are let go. */
  private local: L[] = [];
  private source: FileEntry[] = [];
  /** False from the first position where the URLs differ: everything after waits for finish(). */
  private aligned = true;
  private finished = false;

  constructor(private readonly onMatchedFile: (file: MatchedFile<L>) => void) {}

  addLocal(entries: readonly L[]): void {
    for (const entry of entries) this.local.push(entry);
    this.pairAligned();
  }

  addSource(entries: readonly FileEntry[]): void {
    for (const entry of entries) this.source.push(entry);
    this.pairAligned();
  }

  /**
   * Entries of the local (source) listing that wait for the other listing's entry at their
   * position, while the listings still pair up position by position; 0 once they no longer do
   * (everything then waits for finish() anyway). A walk this far ahead of the other may pause.
   */
  get localAhead(): number {
    return this.aligned ? this.local.length : 0;
  }

  get sourceAhead(): number {
    return this.aligned ? this.source.length : 0;
  }

  /** Compares what did not pair up by position, once both listings are complete; call once. */
  finish(): MetadataComparison {
    if (this.finished) throw new Error("ListingComparison.finish called twice");
    this.finished = true;
    const rest = this.compareByUrl(this.local, this.source);
    this.local = [];
    this.source = [];
    return {
      metadataMatched: this.metadataMatched,
      metadataMismatches: this.metadataMismatches,
      filesNotFoundAtSource: rest.filesNotFoundAtSource,
      filesNotFoundAtDestination: rest.filesNotFoundAtDestination,
      problems: this.problems,
    };
  }

  private pairAligned(): void {
    if (!this.aligned) return;
    const { local, source } = this;
    const pairs = Math.min(local.length, source.length);
    let i = 0;
    for (; i < pairs; i++) {
      if (local[i]!.fileUrl !== source[i]!.fileUrl) {
        this.aligned = false;
        break;
      }
      this.judge(local[i]!, source[i]!);
    }
    if (i > 0) {
      this.local = local.slice(i);
      this.source = source.slice(i);
    }
  }

  private judge(entry: L, other: FileEntry): void {
    if (metadataMatches(entry, other)) {
      this.metadataMatched++;
      if (entry.fileType !== "DIRECTORY") this.onMatchedFile({ local: entry, source: other });
    } else {
      this.metadataMismatches++;
      this.problems.push({
        fileUrl: entry.fileUrl,
        kind: "METADATA_MISMATCH",
        detail: `destination has ${describe(entry)}, source has ${describe(other)}`,
      });
    }
  }

  /** Compares the entries that did not pair up by position, keyed by URL. */
  private compareByUrl(local: readonly L[], source: readonly FileEntry[]): { filesNotFoundAtSource: number; filesNotFoundAtDestination: number } {
    const bySourceUrl = new Map<string, FileEntry>();
    for (const entry of source) bySourceUrl.set(entry.fileUrl, entry);
    const seenLocally = new Set<string>();
    let filesNotFoundAtSource = 0;
    let filesNotFoundAtDestination = 0;
    for (const entry of local) {
      seenLocally.add(entry.fileUrl);
      const other = bySourceUrl.get(entry.fileUrl);
      if (other !== undefined) {
        this.judge(entry, other);
        continue;
      }
      filesNotFoundAtSource++;
      this.problems.push({ fileUrl: entry.fileUrl, kind: "NOT_FOUND_AT_SOURCE", detail: `${describe(entry)} exists only at the destination` });
    }
    for (const entry of source) {
      if (seenLocally.has(entry.fileUrl)) continue;
      seenLocally.add(entry.fileUrl); // a duplicated source entry counts once
      filesNotFoundAtDestination++;
      this.problems.push({ fileUrl: entry.fileUrl, kind: "NOT_FOUND_AT_DESTINATION", detail: `${describe(entry)} exists only at the source` });
    }
    return { filesNotFoundAtSource, filesNotFoundAtDestination };
  }
}
