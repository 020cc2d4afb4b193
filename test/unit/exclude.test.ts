import { describe, expect, it } from "vitest";
import { Exclusions } from "../../src/fs/exclude.js";
import { migrationRoots } from "../../src/instance/directories.js";
import type { InstanceConfig } from "../../src/config/schema.js";

const instance: InstanceConfig = {
  id: 1,
  host: "h",
  port: 9042,
  jmxHost: "h",
  jmxPort: 7199,
  storageDir: undefined,
  dataDirs: ["/c/data0", "/c/data1"],
  stagingDir: "/c-staging",
  commitlogDir: "/c/commitlog",
  hintsDir: "/c/hints",
  savedCachesDir: "/c/saved_caches",
  cdcDir: undefined,
  localSystemDataFileDir: undefined,
};
const roots = migrationRoots(instance);
const root = (dirType: string, dirIndex = 0) => roots.find((r) => r.dirType === dirType && r.dirIndex === dirIndex)!;

describe("exclusions", () => {
  it("lists roots in the Java Sidecar's order", () => {
    expect(roots.map((r) => `${r.dirType}/${r.dirIndex}`)).toEqual(["hints/0", "commitlog/0", "saved_caches/0", "data/0", "data/1"]);
  });

  it("excludes <data>/<ks>/<table>/snapshots in every data dir, and nothing else", () => {
    const ex = Exclusions.compile(roots, [], ["glob:${DATA_FILE_DIR}/*/*/snapshots"]);
    expect(ex.isDirExcluded(root("data", 0), "/c/data0/ks/t-1/snapshots")).toBe(true);
    expect(ex.isDirExcluded(root("data", 1), "/c/data1/ks/t-1/snapshots")).toBe(true);
    // a top-level snapshots dir and a file named like it are kept (LiveMigrationListInstanceFilesHandlerTest)
    expect(ex.isDirExcluded(root("data", 0), "/c/data0/snapshots")).toBe(false);
    expect(ex.isFileExcluded(root("data", 0), "/c/data0/ks/t-1/snapshots-magic.txt")).toBe(false);
    expect(ex.isDirExcluded(root("data", 0), "/c/data0/ks/t-1/snapshots/backup")).toBe(false);
    expect(ex.isPathExcluded(root("data", 0), "/c/data0/ks/t-1/snapshots/backup/nb-1-big-Data.db", false)).toBe(true);
    // the placeholder belongs to data dirs only
    expect(ex.isDirExcluded(root("hints"), "/c/hints/a/b/snapshots")).toBe(false);
  });

  it("applies ${DATA_FILE_DIR_1} to the second data dir only, with ** across directories", () => {
    const ex = Exclusions.compile(roots, ["glob:${DATA_FILE_DIR_1}/ks/**"], []);
    expect(ex.isFileExcluded(root("data", 1), "/c/data1/ks/t-1/nb-1-big-Data.db")).toBe(true);
    expect(ex.isFileExcluded(root("data", 0), "/c/data0/ks/t-1/nb-1-big-Data.db")).toBe(false);
    expect(ex.isFileExcluded(root("data", 1), "/c/data1/other/t-1/nb-1-big-Data.db")).toBe(false);
  });

  it("excludes files below an excluded parent directory", () => {
    const ex = Exclusions.compile(roots, [], ["glob:${DATA_FILE_DIR}/system_traces"]);
    expect(ex.isPathExcluded(root("data", 0), "/c/data0/system_traces/events-1/nb-1-big-Data.db", false)).toBe(true);
    expect(ex.isPathExcluded(root("data", 0), "/c/data0/system/local-1/nb-1-big-Data.db", false)).toBe(false);
  });

  it("judges each directory once and answers the same for every file below it, in any order", () => {
    const ex = Exclusions.compile(roots, [], ["glob:${DATA_FILE_DIR}/ks/*/snapshots"]);
    const data0 = root("data", 0);
    const judged = [
      ["/c/data0/ks/t-1/snapshots/s1/nb-1-big-Data.db", true],
      ["/c/data0/ks/t-1/nb-1-big-Data.db", false],
      ["/c/data0/ks/t-1/snapshots/s1/nb-2-big-Data.db", true],
      ["/c/data0/ks/t-1/snapshots/nb-1-big-Data.db", true],
      ["/c/data0/ks/t-2/nb-1-big-Data.db", false],
      ["/c/data0/other/t-1/snapshots/nb-1-big-Data.db", false],
    ] as const;
    for (let round = 0; round < 2; round++) {
      for (const [file, excluded] of judged) expect(ex.isPathExcluded(data0, file, false), file).toBe(excluded);
    }
    // The same directory under another root is judged by that root's own patterns.
    expect(ex.isPathExcluded(root("hints"), "/c/hints/ks/t-1/snapshots/x", false)).toBe(false);
  });

  it("supports regex: and every single-dir placeholder", () => {
    const ex = Exclusions.compile(
      roots,
      ["regex:${COMMITLOG_DIR}/CommitLog-7-\\d+\\.log", "glob:${HINTS_DIR}/*.crc32", "glob:${SAVED_CACHES_DIR}/Counter*"],
      [],
    );
    expect(ex.isFileExcluded(root("commitlog"), "/c/commitlog/CommitLog-7-123.log")).toBe(true);
    expect(ex.isFileExcluded(root("commitlog"), "/c/commitlog/CommitLog-7-123.log.tmp")).toBe(false);
    expect(ex.isFileExcluded(root("hints"), "/c/hints/x.crc32")).toBe(true);
    expect(ex.isFileExcluded(root("hints"), "/c/hints/x.hints")).toBe(false);
    expect(ex.isFileExcluded(root("saved_caches"), "/c/saved_caches/CounterCache-g.db")).toBe(true);
  });

  it("applies a placeholder-free pattern to every root as written", () => {
    const ex = Exclusions.compile(roots, ["glob:**/*.tmp"], []);
    expect(ex.isFileExcluded(root("data", 1), "/c/data1/ks/t/x.tmp")).toBe(true);
    expect(ex.isFileExcluded(root("commitlog"), "/c/commitlog/y.tmp")).toBe(true);
  });

  it("escapes glob metacharacters in the substituted root", () => {
    const odd = migrationRoots({ ...instance, dataDirs: ["/c/data[0]"] });
    const ex = Exclusions.compile(odd, [], ["glob:${DATA_FILE_DIR}/*/*/snapshots"]);
    expect(ex.isDirExcluded(odd.find((r) => r.dirType === "data")!, "/c/data[0]/ks/t/snapshots")).toBe(true);
  });
});
