import { describe, expect, it } from "vitest";
import type { FileEntry } from "../../../src/migration/types.js";
import { ListingComparison, type MatchedFile, metadataMatches } from "../../../src/migration/verification/compare.js";

const P = "/api/v1/live-migration/files/data/0/";
const file = (name: string, size = 10, lastModifiedTime = 1000): FileEntry => ({ fileUrl: P + name, size, fileType: "FILE", lastModifiedTime });
const dir = (name: string, lastModifiedTime = 1000): FileEntry => ({ fileUrl: P + name, size: -1, fileType: "DIRECTORY", lastModifiedTime });

describe("metadataMatches", () => {
  it("matches files on size, type and mtime, directories on type alone", () => {
    expect(metadataMatches(file("a"), file("a"))).toBe(true);
    expect(metadataMatches(file("a", 10), file("a", 11))).toBe(false);
    expect(metadataMatches(file("a", 10, 1000), file("a", 10, 1001))).toBe(false);
    expect(metadataMatches(dir("d", 1), { ...dir("d", 2), size: 4096 })).toBe(true);
    expect(metadataMatches(file("a"), dir("a"))).toBe(false);
  });
});

/** Both listings whole, the local one first: ListingComparison's result and its matched files. */
function compareListings(local: readonly FileEntry[], source: readonly FileEntry[]) {
  const matchedFiles: MatchedFile<FileEntry>[] = [];
  const comparison = new ListingComparison<FileEntry>((file) => matchedFiles.push(file));
  comparison.addLocal(local);
  comparison.addSource(source);
  return { ...comparison.finish(), matchedFiles };
}

describe("ListingComparison", () => {
  it("counts matches, directories included, and keeps the files to digest in local order", () => {
    const local = [dir("ks"), file("ks/b"), file("ks/a"), file("ks/empty", 0)];
    const source = [file("ks/a"), dir("ks", 5), file("ks/empty", 0), file("ks/b")];
    const c = compareListings(local, source);
    expect(c).toMatchObject({ metadataMatched: 4, metadataMismatches: 0, filesNotFoundAtSource: 0, filesNotFoundAtDestination: 0 });
    expect(c.problems).toEqual([]);
    expect(c.matchedFiles.map((f) => f.local.fileUrl)).toEqual([P + "ks/b", P + "ks/a", P + "ks/empty"]);
  });

  it("counts entries found on one side only, directories too", () => {
    const c = compareListings([dir("ks"), file("ks/extra")], [dir("ks"), file("ks/missing"), dir("ks2")]);
    expect(c).toMatchObject({ metadataMatched: 1, filesNotFoundAtSource: 1, filesNotFoundAtDestination: 2, metadataMismatches: 0 });
    expect(c.problems.map((p) => [p.kind, p.fileUrl])).toEqual([
      ["NOT_FOUND_AT_SOURCE", P + "ks/extra"],
      ["NOT_FOUND_AT_DESTINATION", P + "ks/missing"],
      ["NOT_FOUND_AT_DESTINATION", P + "ks2"],
    ]);
  });

  it("counts a FILE/DIRECTORY swap of two entries as 2 mismatches", () => {
    const c = compareListings([dir("a"), file("b")], [file("a"), dir("b")]);
    expect(c).toMatchObject({ metadataMatched: 0, metadataMismatches: 2 });
    expect(c.matchedFiles).toEqual([]);
  });

  it("counts size and mtime differences as mismatches and leaves those files out of the digest work", () => {
    const c = compareListings([file("a", 10), file("b", 10, 1), file("c")], [file("a", 11), file("b", 10, 2), file("c")]);
    expect(c).toMatchObject({ metadataMatched: 1, metadataMismatches: 2 });
    expect(c.problems[0]!.detail).toBe("destination has FILE size=10 lastModifiedTime=1000, source has FILE size=11 lastModifiedTime=1000");
    expect(c.matchedFiles.map((f) => f.local.fileUrl)).toEqual([P + "c"]);
  });

  it("pairs listings in the same order without a map, with the same result as in any other order", () => {
    const local = [dir("ks"), file("ks/a"), file("ks/b", 10, 1000), dir("ks/t"), file("ks/t/c", 7), file("ks/t/d")];
    const source = [dir("ks", 3), file("ks/a"), file("ks/b", 10, 1001), file("ks/t", 4), file("ks/t/c", 7), file("ks/t/d")];
    const aligned = compareListings(local, source);
    expect(aligned).toMatchObject({ metadataMatched: 4, metadataMismatches: 2, filesNotFoundAtSource: 0, filesNotFoundAtDestination: 0 });
    expect(aligned.problems.map((p) => p.fileUrl)).toEqual([P + "ks/b", P + "ks/t"]);
    expect(aligned.matchedFiles).toEqual([
      { local: local[1], source: source[1] },
      { local: local[4], source: source[4] },
      { local: local[5], source: source[5] },
    ]);
    expect(aligned.matchedFiles[0]!.source).toBe(source[1]);
    expect(compareListings(local, [...source].reverse())).toEqual(aligned);
    expect(compareListings(local, [source[1]!, source[0]!, ...source.slice(2)])).toEqual(aligned);
  });

  it("says how far each listing is ahead of the other while they pair up, and nothing once they no longer do", () => {
    const comparison = new ListingComparison<FileEntry>(() => undefined);
    comparison.addLocal([dir("ks"), file("ks/a"), file("ks/b")]);
    expect([comparison.localAhead, comparison.sourceAhead]).toEqual([3, 0]);
    comparison.addSource([dir("ks"), file("ks/a")]);
    expect([comparison.localAhead, comparison.sourceAhead]).toEqual([1, 0]);
    comparison.addSource([file("ks/b"), file("ks/c"), file("ks/d")]);
    expect([comparison.localAhead, comparison.sourceAhead]).toEqual([0, 2]);
    // A different URL at the same position: the rest waits for finish(), and neither walk need pause.
    comparison.addLocal([file("ks/x")]);
    expect([comparison.localAhead, comparison.sourceAhead]).toEqual([0, 0]);
    expect(comparison.finish()).toMatchObject({ metadataMatched: 3, filesNotFoundAtSource: 1, filesNotFoundAtDestination: 2 });
  });

  it("fed batch by batch, in any order of arrival, gives the same result as both listings whole", () => {
    // Aligned for 3 entries, then the source lists a file the destination lacks, which breaks the alignment.
    const local = [dir("ks"), file("ks/a"), file("ks/b", 10, 1), file("ks/c"), file("ks/d"), file("ks/e", 5)];
    const source = [dir("ks"), file("ks/a"), file("ks/b", 10, 2), file("ks/bb"), file("ks/c"), file("ks/e", 5), file("ks/f")];
    const whole = compareListings(local, source);
    expect(whole).toMatchObject({ metadataMatched: 4, metadataMismatches: 1, filesNotFoundAtSource: 1, filesNotFoundAtDestination: 2 });
    expect(whole.problems.map((p) => [p.kind, p.fileUrl])).toEqual([
      ["METADATA_MISMATCH", P + "ks/b"],
      ["NOT_FOUND_AT_SOURCE", P + "ks/d"],
      ["NOT_FOUND_AT_DESTINATION", P + "ks/bb"],
      ["NOT_FOUND_AT_DESTINATION", P + "ks/f"],
    ]);
    for (const [localBatch, sourceBatch, sourceFirst] of [[1, 1, false], [2, 3, true], [4, 1, false], [1, 7, true]] as const) {
      const matchedFiles: MatchedFile<FileEntry>[] = [];
      const comparison = new ListingComparison<FileEntry>((f) => matchedFiles.push(f));
      for (let i = 0, j = 0; i < local.length || j < source.length; i += localBatch, j += sourceBatch) {
        const feedLocal = () => comparison.addLocal(local.slice(i, i + localBatch));
        const feedSource = () => comparison.addSource(source.slice(j, j + sourceBatch));
        if (sourceFirst) [feedSource, feedLocal].forEach((f) => f());
        else [feedLocal, feedSource].forEach((f) => f());
      }
      expect({ ...comparison.finish(), matchedFiles }, `batches ${localBatch}/${sourceBatch}`).toEqual(whole);
    }
  });
});
