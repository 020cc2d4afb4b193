import path from "node:path";
import { describe, expect, it } from "vitest";
import { ParentCache } from "../../src/fs/parent-dir.js";

describe("ParentCache", () => {
  it("answers path.dirname for normalized absolute paths, in any order", () => {
    const paths = ["/a/b/c", "/a/b/d", "/a/bb/c", "/a/b", "/a", "/x", "/a/b/c/d", "/a/b/e", "/ab/c"];
    const parents = new ParentCache();
    expect(paths.map((p) => parents.of(p))).toEqual(paths.map((p) => path.dirname(p)));
  });

  it("follows paths from one directory to the next", () => {
    const parents = new ParentCache();
    const first = parents.of("/data/ks/t1/nb-1-big-Data.db");
    expect(parents.of("/data/ks/t1/nb-1-big-Index.db")).toBe(first);
    expect(parents.of("/data/ks/t10/nb-1-big-Data.db")).toBe("/data/ks/t10");
  });
});
